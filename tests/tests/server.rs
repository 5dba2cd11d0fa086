//! The server under misbehaving clients: garbage, oversized frames, idling,
//! crowding, and shutdown.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::time::{Duration, Instant};

use ft_protocol::{ErrorCode, Response};
use ft_tests::{ftget, Raw, Server, TestEnv};

fn download_works(env: &TestEnv, server: &Server) {
    let run = ftget(
        &env.work,
        &[&server.target(), "info.txt", "-o", "check.txt"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        fs::read(env.work.join("check.txt")).expect("written"),
        b"hello from ft\n"
    );
}

fn env_with_info() -> TestEnv {
    let env = TestEnv::new();
    fs::write(env.root.join("info.txt"), b"hello from ft\n").expect("write");
    env
}

#[test]
fn garbage_and_oversized_frames_do_not_stop_the_server() {
    let env = env_with_info();
    let mut server = Server::start(&env.root, &[]);

    // A length prefix near 4 GiB: refused before any allocation.
    let mut raw = Raw::connect(server.addr);
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xf0]);
    assert_eq!(raw.error_code(), ErrorCode::BadRequest);
    assert!(raw.closes());

    // Random bytes with a plausible length.
    let mut raw = Raw::connect(server.addr);
    let mut junk = vec![0u8, 0, 0, 64];
    junk.extend((0..64).map(|i| (i * 37 + 11) as u8));
    raw.send_bytes(&junk);
    assert_eq!(raw.error_code(), ErrorCode::BadRequest);
    assert!(raw.closes());

    // The same after a good handshake.
    let mut raw = Raw::greeted(server.addr);
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    assert_eq!(raw.error_code(), ErrorCode::BadRequest);
    assert!(raw.closes());

    // A response type sent as a request.
    let mut raw = Raw::greeted(server.addr);
    raw.send_bytes(
        &ft_protocol::codec::encode(&Response::Welcome { version: 1 }).expect("encodes"),
    );
    assert!(raw.closes());

    assert!(server.is_running());
    download_works(&env, &server);
}

#[test]
fn clients_past_the_limit_hear_busy() {
    let env = env_with_info();
    let server = Server::start(&env.root, &["--max-connections", "1"]);
    let holder = Raw::greeted(server.addr);

    let started = Instant::now();
    let run = ftget(&env.work, &[&server.target(), "info.txt", "--retries", "0"]);
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(run.stderr.contains("busy"), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "told at once, not left hanging"
    );

    drop(holder);
    // Once the slot frees, clients are served again.
    let mut served = false;
    for _ in 0..50 {
        let run = ftget(
            &env.work,
            &[
                &server.target(),
                "info.txt",
                "-o",
                "after.txt",
                "--retries",
                "0",
            ],
        );
        if run.code == Some(0) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "the server never freed the slot");
}

#[test]
fn idle_connections_are_closed() {
    let env = env_with_info();
    let server = Server::start(&env.root, &["--idle-timeout", "1"]);
    let mut raw = Raw::greeted(server.addr);
    let started = Instant::now();
    assert!(raw.closes(), "the idle connection was not closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
    download_works(&env, &server);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let env = env_with_info();
    let mut server = Server::start(&env.root, &[]);
    download_works(&env, &server);
    let _idle = Raw::greeted(server.addr);
    let status = server
        .terminate(Duration::from_secs(15))
        .expect("exits in time");
    assert_eq!(status.code(), Some(0));
    assert!(
        server.logs().contains("shutdown requested"),
        "{}",
        server.logs()
    );
}
