//! The ftserve command line. (These tests also make `cargo test --workspace`
//! build the ftserve binary that the end-to-end tests run.)

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

fn ftserve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ftserve"))
        .args(args)
        .output()
        .expect("ftserve runs")
}

#[test]
fn version_names_the_protocol() {
    let out = ftserve(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("ft protocol 2"),
        "{text}"
    );
}

#[test]
fn help_lists_every_option() {
    let out = ftserve(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--max-connections", "--idle-timeout", "<ROOT>"] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_usage_exits_2_and_a_missing_root_exits_1() {
    assert_eq!(ftserve(&[]).status.code(), Some(2));
    assert_eq!(
        ftserve(&["--listen", "nowhere", "."]).status.code(),
        Some(2)
    );
    assert_eq!(
        ftserve(&["--max-connections", "0", "."]).status.code(),
        Some(2)
    );
    let out = ftserve(&["--listen", "127.0.0.1:0", "/no/such/folder"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/folder"), "names the folder: {err}");
}
