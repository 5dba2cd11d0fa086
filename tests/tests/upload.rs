//! Uploads, end to end, with the real `ftput` and `ftserve`: a file and a
//! tree stored verified; resumes after ftput or the server is killed; a
//! local file changed between runs; a byte flipped on the wire; who may
//! write where (no token, a read-only token, a token for another folder, a
//! server without --allow-upload); an existing name, with and without
//! --overwrite; two uploads racing for one name; a full disk; hostile
//! paths; a large file over several connections; partials out of sight
//! and removed after their TTL.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ft_protocol::{ClientHandshake, ErrorCode, Request, Response, Token};
use ft_tests::{
    add_write_token, ftget_env, ftput, sha256_hex, spawn_ftput, tree_contents, wait_bounded,
    wait_until, Raw, Relay, Run, Server, TestEnv, RUN_TIMEOUT,
};

const PARTIALS: &str = ".ftserve-partial";

fn utf8(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A served root that takes uploads, a work folder with the files to send,
/// and tokens: `writer` may write anywhere, `owner` may also replace,
/// `reader` may only read, `incoming` may write under `incoming/` only.
struct Uploads {
    env: TestEnv,
    tokens: tempfile::TempDir,
    writer: String,
    owner: String,
    reader: String,
    incoming: String,
    server: Server,
}

impl Uploads {
    fn start(extra: &[&str]) -> Self {
        let env = TestEnv::new();
        let tokens = tempfile::tempdir().expect("tempdir");
        let file = tokens.path().join("tokens");
        let writer = add_write_token(&file, "writer", None, &["--write"]);
        let owner = add_write_token(&file, "owner", None, &["--overwrite"]);
        let reader = add_write_token(&file, "reader", None, &[]);
        let incoming = add_write_token(&file, "incoming", Some("incoming"), &["--write"]);
        let server = Self::serve(&env.root, &file, extra);
        Self {
            env,
            tokens,
            writer,
            owner,
            reader,
            incoming,
            server,
        }
    }

    fn serve(root: &Path, tokens: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--allow-upload", "--token-file", utf8(tokens)];
        args.extend(extra);
        Server::start(root, &args)
    }

    fn token_file(&self) -> PathBuf {
        self.tokens.path().join("tokens")
    }

    /// Writes `len` pseudo-random bytes to `work/name`.
    fn local(&self, name: &str, len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        fastrand::Rng::with_seed(seed).fill(&mut data);
        let path = self.env.work.join(name);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(path, &data).expect("write");
        data
    }

    fn put(&self, token: &str, args: &[&str]) -> Run {
        let mut all = vec![self.server.target()];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        ftput(&self.env.work, Some(token), &all)
    }

    /// The names in the served root, the partials' folder left out.
    fn stored(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.env.root)
            .expect("ls root")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name != PARTIALS)
            .collect();
        names.sort();
        names
    }

    /// The size of the largest partial upload now.
    fn partial_bytes(&self) -> u64 {
        self.partials()
            .iter()
            .filter(|name| name.ends_with(".part"))
            .map(|name| {
                fs::metadata(self.env.root.join(PARTIALS).join(name)).map_or(0, |m| m.len())
            })
            .max()
            .unwrap_or(0)
    }

    /// Starts uploading `name` through a relay that passes 4 MiB/s, on one
    /// connection, and kills ftput (SIGKILL) once the server holds `at`
    /// bytes of it.
    fn kill_put_at(&self, name: &str, at: u64) {
        let relay = Relay::capped_up(self.server.addr, 4 << 20);
        let target = relay.target();
        let mut child = spawn_ftput(
            &self.env.work,
            Some(&self.writer),
            &[&target, name, "--connections", "1"],
        );
        let got_there = wait_until(RUN_TIMEOUT, || self.partial_bytes() >= at);
        child.kill().expect("SIGKILL ftput");
        wait_bounded(&mut child, RUN_TIMEOUT).expect("ftput ends");
        assert!(got_there, "the upload got {at} bytes in");
    }

    /// The files in the partials' folder.
    fn partials(&self) -> Vec<String> {
        match fs::read_dir(self.env.root.join(PARTIALS)) {
            Ok(entries) => entries
                .map(|entry| {
                    entry
                        .expect("entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn assert_ok(run: &Run) {
    assert_eq!(run.code, Some(0), "ftput failed: {}", run.stderr);
}

#[test]
fn a_file_and_a_tree_are_stored_verified_with_their_reports() {
    let up = Uploads::start(&[]);
    let data = up.local("data.bin", 9 * 1024 * 1024 + 7, 1);
    let run = up.put(&up.writer, &["data.bin", "--json"]);
    assert_ok(&run);
    let stored = fs::read(up.env.root.join("data.bin")).expect("stored");
    assert!(stored == data, "the stored file is the local one");
    let report = run.json();
    for key in [
        "path",
        "remote",
        "size",
        "sha256",
        "resumed_from",
        "bytes_sent",
        "seconds",
        "verified",
    ] {
        assert!(report.get(key).is_some(), "{key} in {report}");
    }
    assert_eq!(report["remote"], "data.bin");
    assert_eq!(report["sha256"], sha256_hex(&data));
    assert_eq!(report["verified"], true);
    assert_eq!(report["bytes_sent"], data.len() as u64);
    assert_eq!(report["resumed_from"], 0);
    // The modification time travels with the file.
    let mtime = |path: &Path| fs::metadata(path).expect("meta").modified().expect("mtime");
    assert_eq!(
        mtime(&up.env.work.join("data.bin")),
        mtime(&up.env.root.join("data.bin"))
    );

    // A small file alone goes in one write: Put, its chunk and Commit.
    let note = up.local("note.txt", 3000, 3);
    let run = up.put(&up.writer, &["note.txt", "--to", "notes", "--json"]);
    assert_ok(&run);
    assert_eq!(run.field("bytes_sent"), 3000);
    assert!(fs::read(up.env.root.join("notes/note.txt")).unwrap() == note);

    // A tree: small files pipelined, an empty one, a larger one, folders.
    for (k, name) in ["t/a.txt", "t/sub/b.txt", "t/sub/deeper/c.bin"]
        .iter()
        .enumerate()
    {
        up.local(name, 1000 * (k + 1), k as u64 + 10);
    }
    up.local("t/big.bin", 5 * 1024 * 1024, 20);
    fs::write(up.env.work.join("t/empty"), b"").expect("write");
    std::os::unix::fs::symlink("/etc/passwd", up.env.work.join("t/link")).expect("ln");
    let run = up.put(&up.writer, &["-r", "t", "--to", "into/here", "--json"]);
    assert_ok(&run);
    let lines = run.json_lines();
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["files"], 5, "{summary}");
    assert_eq!(summary["uploaded"], 5);
    assert_eq!(summary["skipped"], 1, "the link is left out");
    assert_eq!(lines.len(), 6, "one object per file, then the summary");
    let mut expected = tree_contents(&up.env.work.join("t"));
    expected.remove("link");
    assert_eq!(tree_contents(&up.env.root.join("into/here/t")), expected);
    assert!(up.partials().is_empty(), "{:?}", up.partials());

    // Run again (after an interruption, say): what the server holds, the
    // same size and SHA-256, is left alone, and nothing is sent.
    let again = up.put(&up.writer, &["-r", "t", "--to", "into/here", "--json"]);
    assert_ok(&again);
    let summary = again.json();
    assert_eq!(summary["up_to_date"], 5, "{summary}");
    assert_eq!(summary["uploaded"], 0);
    assert_eq!(summary["bytes_sent"], 0);
    let one = up.put(&up.writer, &["data.bin", "--json"]);
    assert_ok(&one);
    assert_eq!(one.field("bytes_sent"), 0);
    assert_eq!(one.field("resumed_from"), data.len() as u64);
    assert!(
        one.stderr.contains("already on the server"),
        "{}",
        one.stderr
    );
}

#[test]
fn a_congestion_control_the_kernel_refuses_is_a_usage_error() {
    let up = Uploads::start(&[]);
    up.local("f.txt", 10, 17);
    let run = up.put(&up.writer, &["f.txt", "--congestion", "no-such-algorithm"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("no-such-algorithm"), "{}", run.stderr);
    assert!(up.stored().is_empty());
    assert_ok(&up.put(&up.writer, &["f.txt", "--congestion", "system"]));
}

#[test]
fn a_killed_ftput_resumes_from_what_the_server_verified() {
    let up = Uploads::start(&[]);
    let data = up.local("big.bin", 24 * 1024 * 1024, 2);
    up.kill_put_at("big.bin", 10 << 20);
    assert!(up.stored().is_empty(), "nothing under its name yet");

    let run = up.put(&up.writer, &["big.bin", "--json"]);
    assert_ok(&run);
    let report = run.json();
    let resumed = report["resumed_from"].as_u64().unwrap();
    assert!(resumed >= 8 << 20, "resumed from {resumed}");
    assert_eq!(
        report["bytes_sent"].as_u64().unwrap(),
        data.len() as u64 - resumed
    );
    assert!(fs::read(up.env.root.join("big.bin")).unwrap() == data);
    assert!(up.partials().is_empty());
}

#[test]
fn a_server_killed_mid_upload_shows_no_partial_and_resumes_after_a_restart() {
    let mut up = Uploads::start(&[]);
    let data = up.local("big.bin", 24 * 1024 * 1024, 3);
    let relay = Relay::capped_up(up.server.addr, 4 << 20);
    let target = relay.target();
    let mut child = spawn_ftput(
        &up.env.work,
        Some(&up.writer),
        &[&target, "big.bin", "--connections", "1", "--retries", "0"],
    );
    assert!(
        wait_until(RUN_TIMEOUT, || up.partial_bytes() >= 10 << 20),
        "got going"
    );
    up.server
        .stop(nix::sys::signal::Signal::SIGKILL, RUN_TIMEOUT)
        .expect("the server dies");
    let status = wait_bounded(&mut child, RUN_TIMEOUT).expect("ftput ends");
    assert_eq!(
        status.code(),
        Some(5),
        "the connection was lost, no retries"
    );
    assert!(
        !up.env.root.join("big.bin").exists(),
        "never a partial under the name"
    );

    up.server = Uploads::serve(&up.env.root, &up.token_file(), &[]);
    let run = up.put(&up.writer, &["big.bin", "--json"]);
    assert_ok(&run);
    let resumed = run.json()["resumed_from"].as_u64().unwrap();
    assert!(resumed >= 8 << 20, "re-checked and kept: {resumed}");
    assert!(fs::read(up.env.root.join("big.bin")).unwrap() == data);
}

#[test]
fn a_local_file_changed_between_runs_starts_over_and_is_never_spliced() {
    let up = Uploads::start(&[]);
    up.local("f.bin", 24 * 1024 * 1024, 4);
    up.kill_put_at("f.bin", 8 << 20);
    // Same size, other bytes: another version.
    let changed = up.local("f.bin", 24 * 1024 * 1024, 5);
    let run = up.put(&up.writer, &["f.bin", "--json"]);
    assert_ok(&run);
    assert_eq!(run.json()["resumed_from"], 0, "nothing of the old version");
    assert!(fs::read(up.env.root.join("f.bin")).unwrap() == changed);
}

#[test]
fn a_byte_flipped_on_the_wire_costs_a_connection_and_the_chunk_is_sent_again() {
    let up = Uploads::start(&[]);
    let data = up.local("f.bin", 10 * 1024 * 1024, 6);
    // Well past the handshakes, inside the first chunk's bytes.
    let relay = Relay::flipping_up(up.server.addr, 1, 3 << 20);
    let target = relay.target();
    let run = ftput(
        &up.env.work,
        Some(&up.writer),
        &[&target, "f.bin", "--connections", "1", "--json"],
    );
    assert_ok(&run);
    assert!(fs::read(up.env.root.join("f.bin")).unwrap() == data);
    assert!(relay.connections() >= 2, "it connected again");
    assert!(
        run.json()["bytes_sent"].as_u64().unwrap() > data.len() as u64,
        "the chunk that was cut went again"
    );
}

#[test]
fn only_tokens_that_may_write_there_store_anything() {
    let up = Uploads::start(&[]);
    up.local("f.txt", 100, 7);
    let target = up.server.target();
    let none = ftput(&up.env.work, None, &[&target, "f.txt"]);
    assert_eq!(none.code, Some(7), "no token: {}", none.stderr);
    let read_only = up.put(&up.reader, &["f.txt"]);
    assert_eq!(read_only.code, Some(3), "{}", read_only.stderr);
    assert!(
        read_only.stderr.contains("may only read"),
        "{}",
        read_only.stderr
    );
    let elsewhere = up.put(&up.incoming, &["f.txt", "--to", "outgoing"]);
    assert_eq!(elsewhere.code, Some(3), "{}", elsewhere.stderr);
    assert!(
        elsewhere.stderr.contains("outgoing/f.txt"),
        "names the file: {}",
        elsewhere.stderr
    );
    // `incoming-x` is not inside `incoming`.
    let sibling = up.put(&up.incoming, &["f.txt", "--to", "incoming-x"]);
    assert_eq!(sibling.code, Some(3), "{}", sibling.stderr);
    assert!(up.stored().is_empty(), "nothing stored: {:?}", up.stored());
    assert!(
        up.partials().is_empty(),
        "no partial either: {:?}",
        up.partials()
    );

    let inside = up.put(&up.incoming, &["f.txt", "--to", "incoming/today"]);
    assert_ok(&inside);
    assert!(up.env.root.join("incoming/today/f.txt").is_file());

    // A server without --allow-upload takes nothing, from any token.
    let tokens = up.token_file();
    let read_only_server = Server::start(&up.env.root, &["--token-file", utf8(&tokens)]);
    let target = read_only_server.target();
    let refused = ftput(
        &up.env.work,
        Some(&up.owner),
        &[&target, "f.txt", "--to", "x"],
    );
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--allow-upload"),
        "{}",
        refused.stderr
    );
    assert!(!up.env.root.join("x").exists());
}

#[test]
fn an_existing_file_is_replaced_only_when_asked_and_allowed() {
    let up = Uploads::start(&[]);
    fs::write(up.env.root.join("f.txt"), b"old").expect("write");
    let new = up.local("f.txt", 5000, 8);
    let run = up.put(&up.writer, &["f.txt"]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains("f.txt already exists"),
        "{}",
        run.stderr
    );
    let run = up.put(&up.writer, &["f.txt", "--overwrite"]);
    assert_eq!(
        run.code,
        Some(3),
        "a write token may not replace: {}",
        run.stderr
    );
    assert_eq!(fs::read(up.env.root.join("f.txt")).unwrap(), b"old");
    let run = up.put(&up.owner, &["f.txt", "--overwrite"]);
    assert_ok(&run);
    assert!(fs::read(up.env.root.join("f.txt")).unwrap() == new);
    // A folder in the way is not a file to replace.
    fs::create_dir(up.env.root.join("dir.txt")).expect("mkdir");
    up.local("dir.txt", 10, 9);
    let run = up.put(&up.owner, &["dir.txt", "--overwrite"]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(up.env.root.join("dir.txt").is_dir());
}

#[test]
fn two_uploads_racing_for_one_name_one_wins_the_other_is_told() {
    let up = Uploads::start(&[]);
    let a = up.local("a/same.bin", 12 * 1024 * 1024, 10);
    let b = up.local("b/same.bin", 12 * 1024 * 1024, 11);
    let target = up.server.target();
    let spawn = |dir: &str| {
        spawn_ftput(
            &up.env.work.join(dir),
            Some(&up.writer),
            &[&target, "same.bin"],
        )
    };
    let (mut first, mut second) = (spawn("a"), spawn("b"));
    let codes = [
        wait_bounded(&mut first, RUN_TIMEOUT).expect("ends").code(),
        wait_bounded(&mut second, RUN_TIMEOUT).expect("ends").code(),
    ];
    let stored = fs::read(up.env.root.join("same.bin")).expect("one is stored");
    match codes {
        [Some(0), Some(3)] => assert!(stored == a, "the winner's bytes"),
        [Some(3), Some(0)] => assert!(stored == b, "the winner's bytes"),
        other => panic!("one must win and one be refused: {other:?}"),
    }
}

#[test]
fn a_full_disk_is_a_clean_refusal_that_keeps_the_verified_prefix() {
    let env_tokens = tempfile::tempdir().expect("tempdir");
    let file = env_tokens.path().join("tokens");
    let writer = add_write_token(&file, "writer", None, &["--write"]);
    let env = TestEnv::new();
    let mut data = vec![0u8; 20 * 1024 * 1024];
    fastrand::Rng::with_seed(12).fill(&mut data);
    fs::write(env.work.join("f.bin"), &data).expect("write");
    // No file of the server may grow past 10 MiB.
    let server = Server::start_wrapped(
        &["prlimit", "--fsize=10485760", "--"],
        &env.root,
        &["--allow-upload", "--token-file", utf8(&file)],
    );
    let target = server.target();
    let run = ftput(
        &env.work,
        Some(&writer),
        &[&target, "f.bin", "--connections", "1"],
    );
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains("f.bin") && run.stderr.contains("no room"),
        "{}",
        run.stderr
    );
    assert!(!env.root.join("f.bin").exists());
    drop(server);

    let server = Server::start(&env.root, &["--allow-upload", "--token-file", utf8(&file)]);
    let target = server.target();
    let run = ftput(&env.work, Some(&writer), &[&target, "f.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.field("resumed_from") >= 4 << 20,
        "the verified prefix was kept"
    );
    assert!(fs::read(env.root.join("f.bin")).unwrap() == data);
}

#[test]
fn uploads_too_large_or_past_the_free_space_are_refused_early() {
    let up = Uploads::start(&["--max-upload-size", "1M"]);
    up.local("big.bin", 2 << 20, 13);
    let run = up.put(&up.writer, &["big.bin"]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains("big.bin") && run.stderr.contains("limit"),
        "{}",
        run.stderr
    );
    assert!(up.stored().is_empty() && up.partials().is_empty());

    // Past what the file system can hold, said by hand (no file that big).
    let mut raw = Raw::connect(up.server.addr);
    raw.send(
        &ClientHandshake {
            token: Some(Token::new(up.writer.clone())),
        }
        .hello(),
    );
    assert!(matches!(raw.recv(), Some(Response::Welcome { .. })));
    raw.send(&Request::Put {
        path: "huge.bin".into(),
        size: 1 << 40,
        version: [0; 32],
        mtime_secs: 0,
        mtime_nanos: 0,
        overwrite: false,
    });
    // Over the 1 MiB limit first; with no limit it would be NoSpace.
    assert_eq!(raw.error_code(), ErrorCode::TooLarge);
}

#[test]
fn hostile_paths_write_nothing_outside_the_root_and_nothing_through_links() {
    let up = Uploads::start(&[]);
    let outside = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(outside.path(), up.env.root.join("out")).expect("ln");
    std::os::unix::fs::symlink("sub", up.env.root.join("inner")).expect("ln");
    fs::create_dir(up.env.root.join("sub")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path().join("x"), up.env.root.join("sub/dangling"))
        .expect("ln");
    let mut raw = Raw::connect(up.server.addr);
    raw.send(
        &ClientHandshake {
            token: Some(Token::new(up.owner.clone())),
        }
        .hello(),
    );
    assert!(matches!(raw.recv(), Some(Response::Welcome { .. })));
    let mut refusals = Vec::new();
    for path in ft_tests::HOSTILE_PATHS
        .iter()
        .filter(|path| **path != "good.txt")
        .chain(&[
            "out/x.txt",
            "out/new/x.txt",
            "inner/x.txt",
            ".ftserve-partial/x",
            "sub",
        ])
    {
        raw.send(&Request::Put {
            path: (*path).into(),
            size: 3,
            version: [0; 32],
            mtime_secs: 0,
            mtime_nanos: 0,
            overwrite: true,
        });
        match raw.recv() {
            Some(Response::Error(err)) => refusals.push((*path, err.code)),
            other => panic!("{path:?}: {other:?}"),
        }
    }
    for (path, code) in &refusals {
        assert!(
            matches!(code, ErrorCode::InvalidPath | ErrorCode::NotAFile),
            "{path:?}: {code:?}"
        );
    }
    // A link at the name itself is replaced as a name, never followed.
    raw.send(&Request::Put {
        path: "sub/dangling".into(),
        size: 0,
        version: [0; 32],
        mtime_secs: 0,
        mtime_nanos: 0,
        overwrite: false,
    });
    assert_eq!(
        raw.error_code(),
        ErrorCode::NotAFile,
        "a link is no file to replace"
    );
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing outside"
    );
    assert!(!Path::new("/tmp/ft-absolute-escape.txt").exists());

    // The partials' folder is no part of what is served.
    up.local("f.txt", 10, 14);
    assert_ok(&up.put(&up.writer, &["f.txt"]));
    let target = up.server.target();
    let reader = [("FTGET_TOKEN", up.reader.as_str())];
    let listed = ftget_env(&up.env.work, &[&target, "--list", "-r"], &reader);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(!listed.stdout.contains(PARTIALS), "{}", listed.stdout);
    assert!(listed.stdout.contains("f.txt"));
    let got = ftget_env(&up.env.work, &[&target, ".ftserve-partial/x"], &reader);
    assert_eq!(got.code, Some(3), "{}", got.stderr);
}

#[test]
fn a_large_file_goes_over_several_connections_when_one_is_slow() {
    let up = Uploads::start(&[]);
    let data = up.local("big.bin", 40 * 1024 * 1024, 15);
    // Each connection passes 3 MiB/s: one alone would take 13 s.
    let relay = Relay::capped_up(up.server.addr, 3 << 20);
    let target = relay.target();
    let run = ftput(
        &up.env.work,
        Some(&up.writer),
        &[&target, "big.bin", "--connections", "8"],
    );
    assert_ok(&run);
    assert!(fs::read(up.env.root.join("big.bin")).unwrap() == data);
    assert!(
        relay.peak_connections() >= 2,
        "peak {}",
        relay.peak_connections()
    );
    assert!(run.stderr.contains("connections"), "{}", run.stderr);
}

#[test]
fn partials_no_one_resumes_are_removed_after_their_ttl() {
    let up = Uploads::start(&["--upload-ttl", "2s"]);
    up.local("f.bin", 16 * 1024 * 1024, 16);
    let relay = Relay::capped_up(up.server.addr, 2 << 20);
    let target = relay.target();
    let mut child = spawn_ftput(
        &up.env.work,
        Some(&up.writer),
        &[&target, "f.bin", "--connections", "1"],
    );
    assert!(
        wait_until(RUN_TIMEOUT, || up.partials().len() == 2),
        "a partial and its state"
    );
    child.kill().expect("SIGKILL");
    wait_bounded(&mut child, RUN_TIMEOUT).expect("ends");
    let removed = wait_until(Duration::from_secs(10), || up.partials().is_empty());
    assert!(removed, "still there: {:?}", up.partials());
    // The log line follows the removal.
    let logged = wait_until(Duration::from_secs(5), || {
        up.server.logs().contains("removed partial uploads")
    });
    assert!(logged, "{}", up.server.logs());
}
