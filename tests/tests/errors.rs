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
        token: None,
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
    // A version newer than ftget's, in a Welcome inside TLS.
    let newer = ft_protocol::VERSION + 1;
    let server = MisbehavingServer::start(vec![1; 10], Misbehaviour::Version(newer));
    let run = ftget(&env.work, &[&server.target(), "f.bin"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let says = format!("protocol version {newer}");
    assert!(run.stderr.contains(&says), "{}", run.stderr);
    assert!(
        env.work_listing().is_empty(),
        "left {:?}",
        env.work_listing()
    );
}

#[test]
fn unreadable_files_and_folders_are_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    // The server runs unprivileged (as nobody when the tests run as root);
    // it must reach the root, but not what is locked.
    let top = env.root.parent().expect("the test folder");
    for dir in [top, env.root.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(env.root.join("ok.txt"), b"readable\n").unwrap();
    fs::write(env.root.join("secret.txt"), b"unreadable\n").unwrap();
    fs::create_dir(env.root.join("locked")).unwrap();
    fs::write(env.root.join("locked/inner.txt"), b"unreachable\n").unwrap();
    for locked in ["secret.txt", "locked"] {
        fs::set_permissions(env.root.join(locked), fs::Permissions::from_mode(0o000)).unwrap();
    }
    let server = Server::start_unprivileged(&env.root, top);

    for name in ["secret.txt", "locked/inner.txt"] {
        let run = ftget(&env.work, &[&server.target(), name]);
        assert_eq!(run.code, Some(3), "{name}: {run:?}");
        assert!(
            run.stderr.contains(&format!("permission denied: {name}")),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        fs::read_dir(&env.work).unwrap().count(),
        0,
        "nothing written for a refused file"
    );

    // In a tree, the readable file arrives, the unreadable one is a failure
    // with its reason, and the locked folder's contents are left out.
    let run = ftget(
        &env.work,
        &["-r", &server.target(), ".", "-o", "m", "--json"],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(fs::read(env.work.join("m/ok.txt")).unwrap(), b"readable\n");
    assert!(!env.work.join("m/secret.txt").exists());
    assert!(!env.work.join("m/locked/inner.txt").exists());
    let summary = run.json_lines().pop().expect("a summary");
    assert_eq!(summary["downloaded"], 1, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(summary["skipped_by_server"], 1, "{summary}");
    assert_eq!(summary["failures"][0]["path"], "secret.txt", "{summary}");
    assert_eq!(summary["failures"][0]["exit"], 3, "{summary}");
    assert!(run.stderr.contains("left out 1 entry "), "{}", run.stderr);
    assert!(
        server.logs().contains("permission denied"),
        "{}",
        server.logs()
    );
}
