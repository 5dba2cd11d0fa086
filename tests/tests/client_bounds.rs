//! ftget against servers that lie to drive the terminal or to grow the
//! client: whatever a server says is printed with its control characters
//! escaped, and what ftget asks for and holds is bounded by the local files
//! and by its caps, not by what the server claims.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;

use ft_tests::{
    escape_names, ftget_with_cap, sha256_hex, MisbehavingServer, Misbehaviour, Run, Server,
    TestEnv, ESCAPES,
};

const MIB: u64 = 1024 * 1024;

/// How [`ESCAPES`] reads once ftget has made it printable.
const SHOWN: &str = r"\x1b]0;TITLE\x07\x1b[2J\x9b31m\u{202e}";

/// Characters that drive a terminal when printed raw: C0 controls but the
/// newline and the tab, DEL, C1 controls, and the bidi overrides and
/// isolates (which reorder what the reader sees).
fn drives_a_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Asserts that nothing ftget printed can drive a terminal, and that what
/// the server sent shows, escaped, on stderr (where `escaped_on_stderr`).
fn assert_printable(what: &str, run: &Run, escaped_on_stderr: bool) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let raw: Vec<char> = text.chars().filter(|&c| drives_a_terminal(c)).collect();
        assert!(raw.is_empty(), "{what}: {stream} has {raw:?} raw: {text:?}");
    }
    if escaped_on_stderr {
        assert!(
            run.stderr.contains(SHOWN),
            "{what}: the server's text is not shown escaped: {}",
            run.stderr
        );
    }
}

/// Runs `ftget SERVER ARGS...` in `env`'s work folder, killed once its
/// peak passes `cap_mib` (then its run has no exit code).
fn against_capped(
    env: &TestEnv,
    server: &MisbehavingServer,
    args: &[&str],
    cap_mib: u64,
) -> (Run, u64) {
    let target = server.target();
    let mut all = vec![target.as_str(), "--retries", "0"];
    all.extend_from_slice(args);
    ftget_with_cap(&env.work, &all, cap_mib * 1024)
}

/// [`against_capped`] at 1 GiB, far above what any of these runs needs.
fn against(env: &TestEnv, server: &MisbehavingServer, args: &[&str]) -> (Run, u64) {
    against_capped(env, server, args, 1024)
}

#[test]
fn terminal_escapes_from_a_server_are_printed_escaped() {
    let env = TestEnv::new();
    let refusing =
        MisbehavingServer::start(Vec::new(), Misbehaviour::EscapeMessages { at_hello: true });
    let (handshake, _) = against(&env, &refusing, &["f.bin"]);
    assert_eq!(handshake.code, Some(1), "{handshake:?}");
    assert_printable("handshake", &handshake, true);

    let server =
        MisbehavingServer::start(Vec::new(), Misbehaviour::EscapeMessages { at_hello: false });
    let (stat, _) = against(&env, &server, &["f.bin"]);
    assert_eq!(stat.code, Some(3), "{stat:?}");
    assert_printable("stat", &stat, true);

    let (list_error, _) = against(&env, &server, &["--list", "missing"]);
    assert_eq!(list_error.code, Some(3), "{list_error:?}");
    assert_printable("--list error", &list_error, true);

    let (listing, _) = against(&env, &server, &["--list"]);
    assert_eq!(listing.code, Some(0), "{listing:?}");
    assert_printable("--list", &listing, false);
    assert!(
        listing.stdout.contains("\u{e9}\u{65e5}\u{672c}.txt") && listing.stdout.contains(SHOWN),
        "names readable, escapes shown: {}",
        listing.stdout
    );

    let (json, _) = against(&env, &server, &["--list", "--json"]);
    assert_eq!(json.code, Some(0), "{json:?}");
    assert_printable("--list --json", &json, false);
    let names: Vec<String> = json
        .json_lines()
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, escape_names(), "JSON keeps every name exactly");

    let (tree, _) = against(&env, &server, &["-r", "dir", "-o", "out", "--json"]);
    assert_eq!(tree.code, Some(3), "{tree:?}");
    assert_printable("-r", &tree, true);
    assert!(
        tree.stderr.contains("partial-download name") && tree.stderr.contains("forged line"),
        "{}",
        tree.stderr
    );
    assert!(
        !tree
            .stderr
            .lines()
            .any(|line| line.starts_with("ftget: forged")),
        "a name cannot forge a line: {}",
        tree.stderr
    );
    let summary = tree.json();
    let failures = summary["failures"].as_array().expect("failures");
    assert!(
        failures
            .iter()
            .any(|f| f["error"].as_str().is_some_and(|e| e.contains(ESCAPES))),
        "JSON keeps the server's text exactly: {summary}"
    );
}

/// A sidecar that says `NAME.part` holds the first bytes of the 2^50-byte
/// file an [`Misbehaviour::EndlessCheckpoints`] server announces.
fn endless_sidecar(remote: &str) -> String {
    let sha256 = "07".repeat(32);
    format!(
        "{{\"format\":1,\"remote\":\"{remote}\",\"size\":{},\"mtime_secs\":1700000000,\"mtime_nanos\":0,\"sha256\":\"{sha256}\"}}\n",
        1u64 << 50
    )
}

#[test]
fn endless_checkpoints_are_bounded_by_the_local_file() {
    let env = TestEnv::new();
    let server = MisbehavingServer::start(vec![7u8; 10], Misbehaviour::EndlessCheckpoints);
    let local = vec![5u8; (8 * MIB) as usize];
    fs::create_dir_all(env.work.join("out/dir")).unwrap();
    for file in ["out/f.bin", "out/dir/f.bin", "single.bin.part"] {
        fs::write(env.work.join(file), &local).unwrap();
    }
    fs::write(
        env.work.join("single.bin.part.json"),
        endless_sidecar("f.bin"),
    )
    .unwrap();
    let cases: [(&str, &[&str]); 3] = [
        (
            "a file present, asked on its own",
            &["f.bin", "g.bin", "-o", "out"],
        ),
        ("a file present, listed", &["-r", "dir", "-o", "out"]),
        ("a partial present", &["f.bin", "-o", "single.bin"]),
    ];
    for (case, args) in cases {
        let (run, peak) = against_capped(&env, &server, args, 256);
        eprintln!(
            "figures: endless checkpoints, {case}: exit {:?}, client peak {peak} KiB",
            run.code
        );
        assert_eq!(run.code, Some(1), "{case}: {run:?}");
        assert!(peak < 64 * 1024, "{case}: peak {peak} KiB");
    }
    let untouched = sha256_hex(&local);
    for file in ["out/f.bin", "out/dir/f.bin"] {
        assert_eq!(
            sha256_hex(&fs::read(env.work.join(file)).unwrap()),
            untouched,
            "{file}"
        );
    }
}

/// Runs `ftget -r dir` against a [`Misbehaviour::HugeListing`] server of
/// `entries` paths of `path_len` bytes (`absolute` ones, if so), which
/// refuses every file with a message of `message_len` bytes; ftget killed
/// past `cap_mib`.
fn against_huge(
    (entries, path_len, message_len, absolute): (usize, usize, usize, bool),
    cap_mib: u64,
) -> (Run, u64) {
    let env = TestEnv::new();
    let huge = Misbehaviour::HugeListing {
        entries,
        path_len,
        message_len,
        absolute,
    };
    let server = MisbehavingServer::start(Vec::new(), huge);
    let args = ["-r", "dir", "-o", "out", "-q", "--connections", "1"];
    against_capped(&env, &server, &args, cap_mib)
}

#[test]
fn a_huge_listing_or_huge_refusals_keep_the_client_bounded() {
    let (run, peak) = against_huge((40_000, 4000, 0, false), 1024);
    let last = run.stderr.lines().last().unwrap_or_default();
    eprintln!(
        "figures: a listing of 40,000 paths of 4,000 bytes: exit {:?}, client peak {peak} KiB",
        run.code
    );
    assert_eq!(run.code, Some(1), "{last}");
    assert!(
        last.contains("has more than 64 MiB of paths; download its folders one by one"),
        "{last}"
    );
    assert!(peak < 256 * 1024, "peak {peak} KiB");

    let (run, peak) = against_huge((20_000, 16, 64 * 1024, false), 2048);
    let last = run.stderr.lines().last().unwrap_or_default();
    eprintln!(
        "figures: 20,000 files refused with 64 KiB messages: exit {:?}, stderr {} bytes, client peak {peak} KiB",
        run.code,
        run.stderr.len()
    );
    assert_eq!(run.code, Some(3), "{last}");
    assert!(last.contains("no such file: dir/"), "{last}");
    assert!(last.len() < 1024, "the message is kept to a line: {last}");
    assert!(peak < 64 * 1024, "peak {peak} KiB");
}

/// The client's worst case, for the README: a server that lists the most
/// ftget takes (a million entries of 67 bytes, or 64 MiB of paths of 4,000
/// bytes), then refuses every file with a message longer than ftget keeps;
/// or whose million paths are all unsafe (refused whole past 1,000). Slow
/// (about a minute a case): `cargo test --release -p ft-tests --test
/// client_bounds -- --ignored --nocapture`.
#[test]
#[ignore]
fn the_client_peak_has_a_ceiling_whatever_the_server_sends() {
    let cases = [
        (1_000_000, 67, 0, false),
        (1_000_000, 67, 4096, false),
        (1_000_000, 67, 0, true),
        (16_777, 4000, 4096, false),
    ];
    for case in cases {
        let (run, peak) = against_huge(case, 2048);
        eprintln!(
            "figures: {case:?} (entries, path bytes, message bytes, absolute): exit {:?}, {} lines on stderr, client peak {peak} KiB",
            run.code,
            run.stderr.lines().count()
        );
        assert_eq!(run.code, Some(if case.3 { 1 } else { 3 }), "{case:?}");
        assert!(peak < 512 * 1024, "{case:?}: peak {peak} KiB");
    }
}

#[test]
fn small_files_in_flight_are_bounded_per_connection() {
    let env = TestEnv::new();
    for i in 0..128 {
        env.random_file(&format!("tree/f{i:03}"), MIB as usize, i);
    }
    let server = Server::start(&env.root, &[]);
    let target = server.target();
    let args = [
        &target,
        "-r",
        "tree",
        "-o",
        "out",
        "-q",
        "--connections",
        "4",
    ];
    let (run, peak) = ftget_with_cap(&env.work, &args, 1024 * 1024);
    eprintln!(
        "figures: 128 files of 1 MiB over 4 connections: exit {:?}, client peak {peak} KiB",
        run.code
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        fs::read_dir(env.work.join("out/tree")).unwrap().count(),
        128
    );
    assert!(peak < 80 * 1024, "peak {peak} KiB");
}
