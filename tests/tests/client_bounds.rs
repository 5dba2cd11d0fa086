//! ftget against servers that lie to drive the terminal or to grow the
//! client: whatever a server says is printed with its control characters
//! escaped, and what ftget asks for and holds is bounded by the local files
//! and by its caps, not by what the server claims.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ft_tests::{
    escape_names, ftget_with_cap, MisbehavingServer, Misbehaviour, Run, TestEnv, ESCAPES,
};

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
fn run_capped(
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

/// [`run_capped`] at 1 GiB, far above what any of these runs needs.
fn run(env: &TestEnv, server: &MisbehavingServer, args: &[&str]) -> (Run, u64) {
    run_capped(env, server, args, 1024)
}

#[test]
fn terminal_escapes_from_a_server_are_printed_escaped() {
    let env = TestEnv::new();
    let refusing =
        MisbehavingServer::start(Vec::new(), Misbehaviour::EscapeMessages { at_hello: true });
    let (handshake, _) = run(&env, &refusing, &["f.bin"]);
    assert_eq!(handshake.code, Some(1), "{handshake:?}");
    assert_printable("handshake", &handshake, true);

    let server =
        MisbehavingServer::start(Vec::new(), Misbehaviour::EscapeMessages { at_hello: false });
    let (stat, _) = run(&env, &server, &["f.bin"]);
    assert_eq!(stat.code, Some(3), "{stat:?}");
    assert_printable("stat", &stat, true);

    let (list_error, _) = run(&env, &server, &["--list", "missing"]);
    assert_eq!(list_error.code, Some(3), "{list_error:?}");
    assert_printable("--list error", &list_error, true);

    let (listing, _) = run(&env, &server, &["--list"]);
    assert_eq!(listing.code, Some(0), "{listing:?}");
    assert_printable("--list", &listing, false);
    assert!(
        listing.stdout.contains("\u{e9}\u{65e5}\u{672c}.txt") && listing.stdout.contains(SHOWN),
        "names readable, escapes shown: {}",
        listing.stdout
    );

    let (json, _) = run(&env, &server, &["--list", "--json"]);
    assert_eq!(json.code, Some(0), "{json:?}");
    assert_printable("--list --json", &json, false);
    let names: Vec<String> = json
        .json_lines()
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, escape_names(), "JSON keeps every name exactly");

    let (tree, _) = run(&env, &server, &["-r", "dir", "-o", "out", "--json"]);
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
