//! Refusals: missing files, folders, escapes, bad servers. Each gets its exit
//! code and a message naming what was wrong, and leaves nothing behind.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;

use ft_protocol::{ErrorCode, Request};
use ft_tests::{ftget, MisbehavingServer, Misbehaviour, Raw, Server, TestEnv};

#[test]
fn missing_file_exits_3_and_leaves_nothing() {
    let env = TestEnv::new();
    let server = Server::start(&env.root, &[]);
    let run = ftget(&env.work, &[&server.target(), "info.txt"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("info.txt"),
        "names the file: {}",
        run.stderr
    );
    assert!(run.stderr.contains("no such file"), "{}", run.stderr);
    assert!(
        env.work_listing().is_empty(),
        "left {:?}",
        env.work_listing()
    );
}

#[test]
fn folder_exits_3() {
    let env = TestEnv::new();
    fs::create_dir(env.root.join("sub")).expect("mkdir");
    let server = Server::start(&env.root, &[]);
    let run = ftget(&env.work, &[&server.target(), "sub", "-o", "out"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
    assert!(env.work_listing().is_empty());
}

#[test]
fn traversal_attempts_are_refused() {
    let env = TestEnv::new();
    let outside = env.root.parent().expect("parent").join("secret.txt");
    fs::write(&outside, b"do not serve").expect("write");
    symlink(&outside, env.root.join("link-out")).expect("symlink");
    fs::create_dir(env.root.join("sub")).expect("mkdir");
    symlink("../..", env.root.join("sub/up")).expect("symlink");
    let server = Server::start(&env.root, &[]);

    let attempts = [
        "../secret.txt",
        "sub/../../secret.txt",
        "/etc/passwd",
        "link-out",
        "sub/up/secret.txt",
        "..\\secret.txt",
    ];
    for path in attempts {
        let run = ftget(&env.work, &[&server.target(), path, "-o", "out.txt"]);
        assert_eq!(run.code, Some(3), "{path}: {run:?}");
        assert!(
            env.work_listing().is_empty(),
            "{path} left {:?}",
            env.work_listing()
        );
    }
    // The same, spoken directly: each is an InvalidPath error, and the
    // connection stays usable after each.
    let mut raw = Raw::greeted(server.addr);
    for path in attempts.iter().copied().chain(["a\0b", &"x/".repeat(3000)]) {
        raw.send(&Request::Stat { path: path.into() });
        assert_eq!(raw.error_code(), ErrorCode::InvalidPath, "{path:?}");
    }
}

#[test]
fn unreachable_server_exits_5() {
    let env = TestEnv::new();
    // Bind a port, then free it: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let run = ftget(
        &env.work,
        &[&format!("127.0.0.1:{port}"), "x.bin", "--retries", "1"],
    );
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "names the address: {}",
        run.stderr
    );
    assert!(env.work_listing().is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let env = TestEnv::new();
    assert_eq!(ftget(&env.work, &["127.0.0.1:7878"]).code, Some(2));
    assert_eq!(ftget(&env.work, &["bad:server:name", "x"]).code, Some(2));
    let run = ftget(&env.work, &["127.0.0.1:7878", "dir/"]);
    assert_eq!(run.code, Some(2), "no file name to write to: {run:?}");
}

#[test]
fn handshake_errors_are_explicit() {
    let env = TestEnv::new();
    let server = Server::start(&env.root, &[]);

    let mut raw = Raw::connect(server.addr);
    match raw.hello(99) {
        Some(ft_protocol::Response::Error(err)) => {
            assert_eq!(err.code, ErrorCode::UnsupportedVersion);
            assert!(err.message.contains("99"), "{}", err.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(raw.closes());

    let mut raw = Raw::connect(server.addr);
    raw.send(&Request::Hello {
        magic: *b"HTTP",
        version: 1,
    });
    assert_eq!(raw.error_code(), ErrorCode::BadRequest);

    let mut raw = Raw::connect(server.addr);
    raw.send(&Request::Stat { path: "x".into() });
    assert_eq!(
        raw.error_code(),
        ErrorCode::BadRequest,
        "a request before the hello"
    );
    assert!(raw.closes());
}

#[test]
fn a_server_speaking_another_version_is_refused_by_the_client() {
    let env = TestEnv::new();
    let server = MisbehavingServer::start(vec![1; 10], Misbehaviour::Version(2));
    let run = ftget(&env.work, &[&server.target(), "f.bin"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("protocol version 2"), "{}", run.stderr);
    assert!(
        env.work_listing().is_empty(),
        "left {:?}",
        env.work_listing()
    );
}
