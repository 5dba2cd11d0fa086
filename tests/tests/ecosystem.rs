//! How ft fits a system: generated man pages and completions, configuration
//! from the environment, log formats, the banner, the service unit.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ft_tests::{
    bin, config_home, ftget, state_dir, wait_bounded, within, OutputWithin, Server, TestEnv,
    RUN_TIMEOUT, START_TIMEOUT,
};

/// Every long option `--help` shows, without its dashes.
fn long_flags(help: &str) -> BTreeSet<String> {
    help.split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| {
            flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .split(['=', '<', '['])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .filter(|flag| flag.len() > 1)
        .collect()
}

#[test]
fn man_pages_and_completions_are_generated_and_mention_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ftserve", "ftget"] {
        let help = Command::new(bin(name))
            .arg("--help")
            .output_within(RUN_TIMEOUT)
            .unwrap();
        let flags = long_flags(&String::from_utf8_lossy(&help.stdout));
        assert!(flags.len() >= 6, "{name}: {flags:?}");
        let out = Command::new(bin(name))
            .arg("--generate")
            .arg(dir.path())
            .output_within(RUN_TIMEOUT)
            .unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        let files = [
            format!("{name}.1"),
            format!("{name}.bash"),
            format!("_{name}"),
            format!("{name}.fish"),
        ];
        let listed = String::from_utf8_lossy(&out.stdout);
        for file in &files {
            assert!(listed.contains(file.as_str()), "{name} did not list {file}");
            // roff writes `-` as `\-`.
            let text = fs::read_to_string(dir.path().join(file))
                .unwrap()
                .replace("\\-", "-");
            for flag in &flags {
                assert!(text.contains(flag.as_str()), "{file} lacks --{flag}");
            }
        }
        let page = fs::read_to_string(dir.path().join(&files[0])).unwrap();
        assert!(
            page.contains(".TH") && page.contains("ft protocol 2"),
            "{page}"
        );
        let env_prefix = format!("{}_", name.to_uppercase());
        assert!(
            page.contains(&env_prefix),
            "the man page names the variables"
        );
    }
}

/// Starts `ftserve` with `args` and `env`, returns its first stdout line and
/// its stderr so far, then kills it.
fn banner(args: &[&str], env: &[(&str, &str)]) -> String {
    // The shared identity, not one made in the user's home.
    let mut child = Command::new(bin("ftserve"))
        .env("FTSERVE_STATE_DIR", state_dir())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The line comes at once, or the server exits and the read sees the end;
    // read on a thread all the same, so that a hung server fails the test.
    let stdout = child.stdout.take().unwrap();
    let read = within(START_TIMEOUT, move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let _ = child.kill();
    wait_bounded(&mut child, Duration::from_secs(10)).expect("ftserve exits");
    let Some(line) = read else {
        panic!("ftserve {args:?} printed no line within {START_TIMEOUT:?}");
    };
    line.unwrap()
}

#[test]
fn ftserve_takes_every_setting_from_the_environment_and_flags_win() {
    let env = TestEnv::new();
    let root = env.root.to_str().unwrap();
    let line = banner(
        &[],
        &[
            ("FTSERVE_ROOT", root),
            ("FTSERVE_LISTEN", "127.0.0.1:0"),
            ("FTSERVE_MAX_CONNECTIONS", "7"),
            ("FTSERVE_IDLE_TIMEOUT", "9"),
            ("FTSERVE_LOG_FORMAT", "json"),
        ],
    );
    assert!(
        line.starts_with(&format!("ftserve: serving {root} read-only")),
        "{line}"
    );
    assert!(
        line.contains("at most 7 connections, idle timeout 9 s"),
        "{line}"
    );
    assert!(line.contains("listening on 127.0.0.1:"), "{line}");

    let line = banner(
        &["--max-connections", "11", "--listen", "127.0.0.1:0"],
        &[
            ("FTSERVE_ROOT", root),
            ("FTSERVE_LISTEN", "not an address"),
            ("FTSERVE_MAX_CONNECTIONS", "7"),
        ],
    );
    assert!(line.contains("at most 11 connections"), "flag wins: {line}");

    let bad = Command::new(bin("ftserve"))
        .env("FTSERVE_STATE_DIR", state_dir())
        .env("FTSERVE_ROOT", root)
        .env("FTSERVE_IDLE_TIMEOUT", "forever")
        .output_within(RUN_TIMEOUT)
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("forever"));

    help_names(
        "ftserve",
        &[
            "FTSERVE_ROOT",
            "FTSERVE_LISTEN",
            "FTSERVE_MAX_CONNECTIONS",
            "FTSERVE_IDLE_TIMEOUT",
            "FTSERVE_LOG_FORMAT",
        ],
    );
}

/// Checks that `name --help` shows each variable beside its option.
fn help_names(name: &str, vars: &[&str]) {
    let help = Command::new(bin(name))
        .arg("--help")
        .output_within(RUN_TIMEOUT)
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in vars {
        assert!(
            help.contains(&format!("[env: {var}=")),
            "{name} --help lacks {var}"
        );
    }
}

#[test]
fn ftget_takes_its_connection_settings_from_the_environment_and_flags_win() {
    let env = TestEnv::new();
    let refused = |args: &[&str], vars: &[(&str, &str)]| {
        Command::new(bin("ftget"))
            .env("XDG_CONFIG_HOME", config_home())
            .args(args)
            .envs(vars.iter().copied())
            .current_dir(&env.work)
            .output_within(RUN_TIMEOUT)
            .unwrap()
    };
    // Port 1 on loopback refuses at once.
    let out = refused(&["127.0.0.1:1", "x"], &[("FTGET_RETRIES", "many")]);
    assert_eq!(out.status.code(), Some(2), "the variable is read");
    let out = refused(
        &["127.0.0.1:1", "x", "--retries", "0"],
        &[("FTGET_RETRIES", "many")],
    );
    assert_eq!(out.status.code(), Some(5), "the flag wins: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("gave up after"));
    let out = refused(&["127.0.0.1:1", "x"], &[("FTGET_RETRIES", "0")]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("gave up after"),
        "no retries with FTGET_RETRIES=0"
    );
    let out = refused(&["127.0.0.1:1", "x"], &[("FTGET_TIMEOUT", "0")]);
    assert_eq!(out.status.code(), Some(2), "FTGET_TIMEOUT is range-checked");
    let out = refused(&["127.0.0.1:1", "x"], &[("FTGET_CONNECTIONS", "65")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "FTGET_CONNECTIONS is range-checked"
    );

    help_names(
        "ftget",
        &[
            "FTGET_RETRIES",
            "FTGET_TIMEOUT",
            "FTGET_CONNECTIONS",
            "FTGET_NO_RESUME",
        ],
    );
}

#[test]
fn json_logs_are_one_object_per_line_and_filtered_by_rust_log() {
    let env = TestEnv::new();
    fs::write(env.root.join("a.txt"), b"a").unwrap();
    let mut server = Server::start(&env.root, &["--log-format", "json"]);
    ftget(&env.work, &[&server.target(), "a.txt", "-q"]);
    ftget(&env.work, &[&server.target(), "missing.txt", "-q"]);
    server.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let get = lines
        .iter()
        .find(|line| line["fields"]["op"] == "get" && line["fields"]["path"] == "a.txt")
        .unwrap_or_else(|| panic!("no get line in {logs}"));
    assert_eq!(get["level"], "INFO");
    assert!(lines
        .iter()
        .any(|line| line["fields"]["path"] == "missing.txt"));
    assert!(!logs.contains('\u{1b}'), "no colour in JSON");

    // RUST_LOG=warn leaves the per-request info lines out.
    let mut quiet = Server::start_with_env(&env.root, &[], &[("RUST_LOG", "warn")]);
    let run = ftget(&env.work, &[&quiet.target(), "a.txt", "-q", "-o", "b.txt"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    quiet.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    assert!(!quiet.logs().contains("a.txt"), "{}", quiet.logs());
}

#[test]
fn the_service_unit_is_sandboxed_for_a_read_only_server() {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/ftserve.service"),
    )
    .unwrap();
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "BindReadOnlyPaths=/srv/ft",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "Environment=FTSERVE_ROOT=/srv/ft",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive:?}");
    }
    assert!(!unit.contains("ReadWritePaths"), "nothing writable");
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = TestEnv::new();
    // `script` gives ftserve a terminal; `timeout -s INT` stops it after one
    // log line's worth of time ("shutdown requested").
    let on_terminal = |no_color: Option<&str>| {
        let command = format!(
            "timeout -s INT 1 {} --listen 127.0.0.1:0 {}",
            bin("ftserve").display(),
            env.root.display()
        );
        let mut script = Command::new("script");
        // ftserve inherits it: the shared identity, not one in the user's home.
        script.env("FTSERVE_STATE_DIR", state_dir());
        script.args(["-qec", &command, "/dev/null"]);
        match no_color {
            Some(value) => script.env("NO_COLOR", value),
            None => script.env_remove("NO_COLOR"),
        };
        let out = script
            .output_within(RUN_TIMEOUT)
            .expect("script (util-linux) runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("shutdown requested"), "{coloured}");
    assert!(
        coloured.contains("\u{1b}["),
        "colour on a terminal: {coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(plain.contains("shutdown requested"), "{plain}");
    assert!(!plain.contains("\u{1b}["), "NO_COLOR: {plain:?}");

    // Off a terminal (the harness's pipes), never.
    let mut server = Server::start(&env.root, &[]);
    server.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    assert!(server.logs().contains("shutdown requested"));
    assert!(!server.logs().contains('\u{1b}'));
}
