//! The ftget command line. (These tests also make `cargo test --workspace`
//! build the ftget binary that the end-to-end tests run.)

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

fn ftget(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ftget"))
        .args(args)
        .output()
        .expect("ftget runs")
}

#[test]
fn version_names_the_protocol() {
    let out = ftget(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("ft protocol 2"),
        "{text}"
    );
}

#[test]
fn help_lists_every_option() {
    let out = ftget(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--output",
        "--quiet",
        "--json",
        "--no-resume",
        "--retries",
        "--timeout",
        "--pin",
        "--strict",
        "--ca",
        "--token-file",
        "<SERVER>",
        "<PATH>",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(ftget(&[]).status.code(), Some(2));
    assert_eq!(ftget(&["host"]).status.code(), Some(2));
    assert_eq!(
        ftget(&["host", "x", "--retries", "many"]).status.code(),
        Some(2)
    );
    assert_eq!(
        ftget(&["host", "x", "--timeout", "0"]).status.code(),
        Some(2)
    );
}
