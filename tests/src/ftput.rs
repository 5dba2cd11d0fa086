//! Running the real `ftput`: started in a test's folder with the shared
//! client configuration and a token in its environment, waited for within
//! [`crate::RUN_TIMEOUT`], and what it printed kept as a [`Run`]; and the
//! write tokens it needs.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::bins::bin;
use crate::env::config_home;
use crate::ftget::{run_to_end, Run};

/// The settings ftput reads from the environment, cleared for every run.
const INHERITED: [&str; 8] = [
    "FTPUT_PIN",
    "FTPUT_STRICT",
    "FTPUT_CA",
    "FTPUT_TOKEN",
    "FTPUT_TOKEN_FILE",
    "FTPUT_CONNECTIONS",
    "FTPUT_RETRIES",
    "FTPUT_CONGESTION",
];

/// Starts `ftput ARGS...` in `dir`, with `FTPUT_TOKEN` set to `token` if
/// given, without waiting.
pub fn spawn_ftput(dir: &Path, token: Option<&str>, args: &[&str]) -> Child {
    let mut command = Command::new(bin("ftput"));
    for name in INHERITED {
        command.env_remove(name);
    }
    if let Some(token) = token {
        command.env("FTPUT_TOKEN", token);
    }
    command
        .env("XDG_CONFIG_HOME", config_home())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ftput starts")
}

/// Runs `ftput ARGS...` in `dir` to its end (bounded).
pub fn ftput(dir: &Path, token: Option<&str>, args: &[&str]) -> Run {
    run_to_end(spawn_ftput(dir, token, args), args, |_| {})
}

/// `ftserve token add NAME --token-file FILE [--path SCOPE] FLAG...`, with
/// `--write` or `--overwrite` among the flags for a token that may upload:
/// the token.
pub fn add_write_token(file: &Path, name: &str, scope: Option<&str>, flags: &[&str]) -> String {
    let file = file.to_str().expect("UTF-8 path");
    let mut args = vec!["token", "add", name, "--token-file", file];
    if let Some(scope) = scope {
        args.extend(["--path", scope]);
    }
    args.extend(flags);
    let out = crate::tls::ftserve_output(&args, &[]);
    assert!(out.status.success(), "token add: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout.lines().last().expect("a last line").to_owned()
}
