//! Access tokens, end to end: `ftserve token` and its file, a server that
//! wants a token (missing, wrong, right, given either way), a token limited
//! to a folder (what lies outside it looks missing), removal without a
//! restart, the limit on failed attempts, and the token never shown in any
//! output, log or process list.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use ft_server::tokens::{MAX_FAILURES, WINDOW};
use ft_tests::{
    add_token, finish_run, ftserve_output, sha256_hex, tree_contents, wait_until, ClientHome,
    OutputWithin, Recorder, Run, TestEnv, TlsServer, POLL, START_TIMEOUT,
};

const CONTENT: &[u8] = b"only for token holders\n";

fn utf8(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A test's folders with `a.txt` served, a token file beside them with a
/// token for alice, and a server that wants a token from it.
struct Guarded {
    env: TestEnv,
    tokens: tempfile::TempDir,
    alice: String,
    server: TlsServer,
    home: ClientHome,
}

impl Guarded {
    fn start() -> Self {
        let env = TestEnv::new();
        fs::write(env.root.join("a.txt"), CONTENT).expect("write");
        let tokens = tempfile::tempdir().expect("tempdir");
        let alice = add_token(&tokens.path().join("tokens"), "alice", None);
        let server = TlsServer::start(
            &env.root,
            "127.0.0.1:0",
            &["--token-file", utf8(&tokens.path().join("tokens"))],
            &[],
        );
        Self {
            env,
            tokens,
            alice,
            server,
            home: ClientHome::new(),
        }
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.tokens.path().join("tokens")
    }

    /// `ftget SERVER ARGS...` in the work folder with `env`.
    fn ftget(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let target = self.server.target();
        let mut all = vec![target.as_str()];
        all.extend_from_slice(args);
        self.home.ftget(&self.env.work, &all, env)
    }

    /// Asserts `run` was refused for its credentials: exit 7, nothing
    /// written.
    fn assert_credentials_refused(&self, run: &Run) {
        assert_eq!(run.code, Some(7), "{run:?}");
        assert!(
            self.env.work_listing().is_empty(),
            "nothing is written: {:?}",
            self.env.work_listing()
        );
    }
}

/// A token the server does not know, shaped like one it would.
fn stranger_token() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    add_token(&dir.path().join("elsewhere"), "mallory", None)
}

#[test]
fn token_add_prints_the_token_once_and_keeps_only_its_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tokens");
    let out = ftserve_output(&["token", "add", "alice", "--token-file", utf8(&file)], &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 2, "a line, then the token: {stdout:?}");
    let token = *lines.last().expect("a last line");
    assert!(token.starts_with("ftk_") && token.len() > 32, "{token:?}");
    assert_eq!(token.trim(), token, "the token alone on its line");
    assert!(
        !lines[..lines.len() - 1]
            .iter()
            .any(|line| line.contains(token)),
        "shown once: {stdout:?}"
    );
    let mode = fs::metadata(&file)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the token file is its owner's alone");
    let text = fs::read_to_string(&file).expect("read");
    assert!(!text.contains(token), "the file keeps no token: {text}");
    assert!(
        text.contains(&format!("alice sha256:{}", sha256_hex(token.as_bytes()))),
        "the file keeps its hash: {text}"
    );
    let listed = ftserve_output(&["token", "list", "--token-file", utf8(&file)], &[]);
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && listed_text.contains("alice"),
        "{listed:?}"
    );
    assert!(!listed_text.contains(token), "{listed_text}");
}

#[test]
fn no_token_and_a_wrong_token_are_refused_with_7() {
    let guarded = Guarded::start();
    let none = guarded.ftget(&["a.txt"], &[]);
    guarded.assert_credentials_refused(&none);
    assert!(
        none.stderr.contains("FTGET_TOKEN"),
        "says how to give one: {}",
        none.stderr
    );
    let wrong = stranger_token();
    let run = guarded.ftget(&["a.txt"], &[("FTGET_TOKEN", &wrong)]);
    guarded.assert_credentials_refused(&run);
    assert!(
        run.stderr.contains("does not know this token"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&wrong) && !run.stdout.contains(&wrong));
    // Refused before anything of the file was said: not even its name.
    assert!(
        !guarded.server.logs().contains("a.txt"),
        "{}",
        guarded.server.logs()
    );
}

#[test]
fn the_right_token_is_accepted_from_the_environment_and_from_a_file() {
    let guarded = Guarded::start();
    let run = guarded.ftget(&["a.txt"], &[("FTGET_TOKEN", &guarded.alice)]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(guarded.env.work.join("a.txt")).unwrap(), CONTENT);

    let held = tempfile::tempdir().expect("tempdir");
    let file = held.path().join("alice.token");
    fs::write(&file, format!("{}\n", guarded.alice)).expect("write");
    let run = guarded.ftget(&["--token-file", utf8(&file), "a.txt", "-o", "b.txt"], &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(guarded.env.work.join("b.txt")).unwrap(), CONTENT);
    // FTGET_TOKEN_FILE is the same.
    let run = guarded.ftget(
        &["a.txt", "-o", "c.txt"],
        &[("FTGET_TOKEN_FILE", utf8(&file))],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        guarded.server.logs().contains("token=\"alice\""),
        "the log names the token's holder: {}",
        guarded.server.logs()
    );
}

/// A served tree with a public folder, a secret one, and one whose name
/// starts like the public one; and a server with a token limited to `pub`.
struct Scoped {
    env: TestEnv,
    _tokens: tempfile::TempDir,
    bob: String,
    alice: String,
    server: TlsServer,
    home: ClientHome,
}

impl Scoped {
    fn start() -> Self {
        let env = TestEnv::new();
        for (path, text) in [
            ("pub/a.txt", "public\n"),
            ("pub/deeper/d.txt", "public too\n"),
            ("secret/b.txt", "secret\n"),
            ("pub-secret/c.txt", "secret as well\n"),
        ] {
            let path = env.root.join(path);
            fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
            fs::write(path, text).expect("write");
        }
        let tokens = tempfile::tempdir().expect("tempdir");
        let file = tokens.path().join("tokens");
        let bob = add_token(&file, "bob", Some("pub"));
        let alice = add_token(&file, "alice", None);
        let server = TlsServer::start(
            &env.root,
            "127.0.0.1:0",
            &["--token-file", utf8(&file)],
            &[],
        );
        Self {
            env,
            _tokens: tokens,
            bob,
            alice,
            server,
            home: ClientHome::new(),
        }
    }

    fn ftget(&self, token: &str, args: &[&str]) -> Run {
        let target = self.server.target();
        let mut all = vec![target.as_str()];
        all.extend_from_slice(args);
        self.home
            .ftget(&self.env.work, &all, &[("FTGET_TOKEN", token)])
    }
}

/// Asserts `run` (for `path`) was refused with exit 3 and just the words
/// `missing` (for `missing_path`) got, the path aside.
fn assert_looks_missing(run: &Run, path: &str, missing: &Run, missing_path: &str) {
    assert_eq!(run.code, Some(3), "{path}: {run:?}");
    assert_eq!(
        run.stderr,
        missing.stderr.replace(missing_path, path),
        "{path} is refused as {missing_path} is"
    );
    assert_eq!(run.stdout, missing.stdout.replace(missing_path, path));
}

#[test]
fn a_scoped_token_reads_its_folder_and_outside_it_meets_a_missing_file() {
    let scoped = Scoped::start();
    let run = scoped.ftget(&scoped.bob, &["pub/a.txt"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        fs::read(scoped.env.work.join("a.txt")).unwrap(),
        b"public\n"
    );
    fs::remove_file(scoped.env.work.join("a.txt")).expect("rm");

    let missing = scoped.ftget(&scoped.bob, &["pub/missing.txt"]);
    assert_eq!(missing.code, Some(3), "{missing:?}");
    assert!(
        missing.stderr.contains("no such file"),
        "{}",
        missing.stderr
    );
    for outside in ["secret/b.txt", "pub-secret/c.txt"] {
        let run = scoped.ftget(&scoped.bob, &[outside]);
        assert_looks_missing(&run, outside, &missing, "pub/missing.txt");
    }
    // A path that climbs out of the folder is refused as it is for anyone,
    // a token for everything too.
    let climbing = "pub/../secret/b.txt";
    let run = scoped.ftget(&scoped.bob, &[climbing]);
    assert_eq!(run.code, Some(3), "{run:?}");
    let anyone = scoped.ftget(&scoped.alice, &[climbing]);
    assert_eq!(anyone.code, Some(3), "{anyone:?}");
    assert_eq!(run.stderr, anyone.stderr);
    assert!(
        scoped.env.work_listing().is_empty(),
        "{:?}",
        scoped.env.work_listing()
    );
}

#[test]
fn a_scoped_token_lists_and_fetches_its_folder_only() {
    let scoped = Scoped::start();
    let listed = scoped.ftget(&scoped.bob, &["--list", "pub"]);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert!(listed.stdout.contains("a.txt"), "{}", listed.stdout);

    let missing = scoped.ftget(&scoped.bob, &["--list", "missing"]);
    assert_eq!(missing.code, Some(3), "{missing:?}");
    assert!(
        missing.stderr.contains("no such file"),
        "{}",
        missing.stderr
    );
    let secret = scoped.ftget(&scoped.bob, &["--list", "secret"]);
    assert_looks_missing(&secret, "secret", &missing, "missing");
    // The root, which ftget's messages call `.`.
    let root = scoped.ftget(&scoped.bob, &["--list"]);
    assert_looks_missing(&root, ".", &missing, "missing");

    let run = scoped.ftget(&scoped.bob, &["-r", "pub", "-o", "got"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let got: Vec<String> = tree_contents(&scoped.env.work).into_keys().collect();
    assert_eq!(
        got,
        [
            "got/",
            "got/pub/",
            "got/pub/a.txt",
            "got/pub/deeper/",
            "got/pub/deeper/d.txt"
        ],
        "pub and nothing else"
    );
    // The whole tree, asked for by a token for one folder: nothing.
    let all = scoped.ftget(&scoped.bob, &["-r", ".", "-o", "all"]);
    assert_eq!(all.code, Some(3), "{all:?}");
    assert!(!scoped.env.work.join("all/secret").exists());
    assert!(!scoped.env.work.join("all/pub-secret").exists());
}

#[test]
fn a_removed_token_is_refused_from_the_next_connection_without_a_restart() {
    let guarded = Guarded::start();
    let env = [("FTGET_TOKEN", guarded.alice.as_str())];
    let run = guarded.ftget(&["a.txt"], &env);
    assert_eq!(run.code, Some(0), "{run:?}");
    fs::remove_file(guarded.env.work.join("a.txt")).expect("rm");
    let out = ftserve_output(
        &[
            "token",
            "remove",
            "alice",
            "--token-file",
            utf8(&guarded.token_file()),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let pid = guarded.server.pid();
    let run = guarded.ftget(&["a.txt"], &env);
    guarded.assert_credentials_refused(&run);
    assert_eq!(guarded.server.pid(), pid, "the same server, not restarted");
}

#[test]
fn failed_attempts_are_limited_per_address() {
    let guarded = Guarded::start();
    let right = [("FTGET_TOKEN", guarded.alice.as_str())];
    let run = guarded.ftget(&["a.txt"], &right);
    assert_eq!(run.code, Some(0), "{run:?}");
    fs::remove_file(guarded.env.work.join("a.txt")).expect("rm");

    let wrong = stranger_token();
    let first_failure = Instant::now();
    for attempt in 0..MAX_FAILURES {
        let run = guarded.ftget(&["a.txt"], &[("FTGET_TOKEN", &wrong)]);
        guarded.assert_credentials_refused(&run);
        assert!(
            run.stderr.contains("does not know this token"),
            "attempt {attempt}: {}",
            run.stderr
        );
    }
    let run = guarded.ftget(&["a.txt"], &right);
    // The limit holds for WINDOW after the first failure; this test does
    // not wait it out, so it only holds us to what happens inside it.
    assert!(
        first_failure.elapsed() < WINDOW,
        "the attempts took longer than the window; the check below proves nothing"
    );
    guarded.assert_credentials_refused(&run);
    assert!(
        run.stderr.contains("too many failed attempts"),
        "even the right token, unchecked: {}",
        run.stderr
    );
}

/// Samples `ps -ww -eo args` (full width) until told to stop; every sample is kept.
struct PsSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PsSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2) = (Arc::clone(&stop), Arc::clone(&samples));
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + ft_tests::RUN_TIMEOUT;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let out = Command::new("ps")
                    .args(["-ww", "-eo", "args"])
                    .output_within(START_TIMEOUT)
                    .expect("ps runs");
                samples2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&out.stdout).into_owned());
                thread::sleep(POLL * 5);
            }
        });
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("sampler");
        }
        self.samples.lock().unwrap().clone()
    }
}

/// Runs ftget (spawned by `spawn`) while `ps` is sampled; returns the run
/// and the samples.
fn run_sampled(spawn: impl FnOnce() -> std::process::Child) -> (Run, Vec<String>, String) {
    let sampler = PsSampler::start();
    let child = spawn();
    // Read until the child is ftget: before its exec, it shows the test's
    // own command line, and right after, none yet.
    let read = || {
        fs::read(format!("/proc/{}/cmdline", child.id()))
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
            .unwrap_or_default()
    };
    let is_ftget = |line: &str| {
        line.split(' ')
            .next()
            .is_some_and(|arg| arg.ends_with("/ftget"))
    };
    wait_until(START_TIMEOUT, || is_ftget(&read()));
    let cmdline = read();
    let run = finish_run(child, &["(sampled)"]);
    (run, sampler.finish(), cmdline)
}

#[test]
fn no_token_appears_in_any_output_log_or_process_list() {
    let env = TestEnv::new();
    env.random_file("big.bin", 4 << 20, 7);
    fs::write(env.root.join("a.txt"), CONTENT).expect("write");
    let tokens = tempfile::tempdir().expect("tempdir");
    let token_file = tokens.path().join("tokens");
    let alice = add_token(&token_file, "alice", None);
    let wrong = stranger_token();
    let mut server = TlsServer::start(
        &env.root,
        "127.0.0.1:0",
        &["--token-file", utf8(&token_file)],
        &[("RUST_LOG", "trace")],
    );
    let home = ClientHome::new();
    let held = tokens.path().join("alice.token");
    fs::write(&held, format!("{alice}\n")).expect("write");
    let target = server.target();
    let mut outputs = Vec::new();
    let by_env = [("FTGET_TOKEN", alice.as_str())];

    let cases: [&[&str]; 5] = [
        &["a.txt"],
        &["-v", "a.txt"],
        &["--json", "a.txt"],
        &["--list", "-r", "--json"],
        &["-v", "--list"],
    ];
    for (case, args) in cases.iter().enumerate() {
        for by_file in [false, true] {
            let out = format!("{case}-{by_file}.txt");
            let mut all = vec![target.as_str()];
            all.extend_from_slice(args);
            if !args.contains(&"--list") {
                all.extend(["-o", &out]);
            }
            let run = if by_file {
                all.extend(["--token-file", utf8(&held)]);
                home.ftget(&env.work, &all, &[])
            } else {
                home.ftget(&env.work, &all, &by_env)
            };
            assert_eq!(run.code, Some(0), "{all:?}: {run:?}");
            outputs.push(run);
        }
    }
    // A refused token is not repeated back either.
    let run = home.ftget(
        &env.work,
        &["-v", &target, "a.txt", "-o", "4.txt"],
        &[("FTGET_TOKEN", &wrong)],
    );
    assert_eq!(run.code, Some(7), "{run:?}");
    outputs.push(run);

    // Slow downloads, over a link of 2 MiB/s (about two seconds each),
    // during which the process list is read again and again.
    let mut samples = Vec::new();
    for by_file in [false, true] {
        let relay = Recorder::throttled(server.addr, 2 << 20);
        let relay_target = relay.target();
        let out = if by_file {
            "slow-file.bin"
        } else {
            "slow-env.bin"
        };
        let (run, sampled, cmdline) = run_sampled(|| {
            if by_file {
                home.spawn(
                    &env.work,
                    &[
                        "--token-file",
                        utf8(&held),
                        &relay_target,
                        "big.bin",
                        "-o",
                        out,
                    ],
                    &[],
                )
            } else {
                home.spawn(&env.work, &[&relay_target, "big.bin", "-o", out], &by_env)
            }
        });
        assert_eq!(run.code, Some(0), "{run:?}");
        assert!(
            cmdline.contains(&relay_target),
            "read ftget's own command line: {cmdline}"
        );
        assert!(!cmdline.contains(&alice), "{cmdline}");
        assert!(
            sampled
                .iter()
                .filter(|ps| ps.contains(&relay_target))
                .count()
                >= 3,
            "ps saw the download while it ran ({} samples)",
            sampled.len()
        );
        samples.extend(sampled);
        outputs.push(run);
    }
    assert!(server.stop().is_some(), "the server stops");
    let logs = server.logs();
    assert!(logs.contains("token=\"alice\""), "the log names the holder");
    assert!(
        logs.lines().count() > 20,
        "a full log at trace level: {} lines",
        logs.lines().count()
    );

    for secret in [alice.as_str(), wrong.as_str()] {
        // The token's random part, in case a prefix were cut.
        let core = &secret["ftk_".len()..];
        for run in &outputs {
            assert!(
                !run.stdout.contains(core) && !run.stderr.contains(core),
                "ftget printed a token: {run:?}"
            );
        }
        assert!(!logs.contains(core), "the server logged a token");
        assert!(!server.banner().contains(core));
        for ps in &samples {
            assert!(!ps.contains(core), "ps shows a token");
        }
    }
}

#[test]
fn a_link_in_a_scoped_folder_does_not_lead_its_token_out() {
    let scoped = Scoped::start();
    std::os::unix::fs::symlink("../secret/b.txt", scoped.env.root.join("pub/out"))
        .expect("symlink");
    std::os::unix::fs::symlink("a.txt", scoped.env.root.join("pub/in")).expect("symlink");

    // A token for the whole folder follows a link that stays inside it.
    let whole = scoped.ftget(&scoped.alice, &["pub/out", "-o", "whole"]);
    assert_eq!(whole.code, Some(0), "{whole:?}");

    // The token for pub/ does not, by name or by a listing.
    let out = scoped.ftget(&scoped.bob, &["pub/out", "-o", "out"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(!scoped.env.work.join("out").exists());
    let inside = scoped.ftget(&scoped.bob, &["pub/in", "-o", "in"]);
    assert_eq!(inside.code, Some(0), "{inside:?}");
    let listed = scoped.ftget(&scoped.bob, &["--list", "-r", "pub"]);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert!(!listed.stdout.contains("out"), "{}", listed.stdout);
    let run = scoped.ftget(&scoped.bob, &["-r", "pub", "-o", "tree"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!scoped.env.work.join("tree/pub/out").exists());
    assert!(scoped.env.work.join("tree/pub/in").exists());
    assert_eq!(
        fs::read(scoped.env.work.join("whole")).expect("read"),
        b"secret\n",
        "the whole-folder token reads through the link"
    );
    let tree = tree_contents(&scoped.env.work.join("tree"));
    assert!(
        !tree.values().any(|sha| *sha == sha256_hex(b"secret\n")),
        "the pub/ token got no copy of the secret: {tree:?}"
    );
}
