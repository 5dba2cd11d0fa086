//! The server under misbehaving clients: garbage, oversized frames, idling,
//! crowding, and shutdown.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::time::{Duration, Instant};

use ft_protocol::{ErrorCode, Response};
use ft_tests::{
    ftget, read_pipe, sha256_hex, signal, spawn_ftget, wait_bounded, wait_until, AfterBudget, Raw,
    Relay, Server, TestEnv,
};
use nix::sys::signal::Signal;

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
    // Greeted and then silent, or silent from the start (slowloris): once
    // its TLS handshake is done, or before it says anything at all.
    for start in ["greeted", "after TLS", "without TLS"] {
        let mut raw = match start {
            "greeted" => Raw::greeted(server.addr),
            "after TLS" => Raw::connect(server.addr),
            _ => Raw::plain(server.addr),
        };
        let started = Instant::now();
        assert!(raw.closes(), "{start}: the idle connection was not closed");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "{start}: closed too early: {waited:?}"
        );
    }
    download_works(&env, &server);
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let env = env_with_info();
        let mut server = Server::start(&env.root, &[]);
        download_works(&env, &server);
        let _idle = Raw::greeted(server.addr);
        let status = server
            .stop(sig, Duration::from_secs(15))
            .expect("exits in time");
        assert_eq!(status.code(), Some(0), "{sig}");
        assert!(
            server.logs().contains("shutdown requested"),
            "{}",
            server.logs()
        );
    }
}

#[test]
fn a_transfer_in_flight_finishes_during_shutdown() {
    let env = TestEnv::new();
    let data = env.random_file("mid.bin", 24 * 1024 * 1024, 21);
    let mut server = Server::start(&env.root, &[]);
    // The link hangs for 1.5 s after 8 MiB: SIGTERM lands while the transfer
    // is in flight, and the rest must still arrive within the 5 s grace.
    let relay = Relay::start(
        server.addr,
        8 * 1024 * 1024,
        AfterBudget::Pause(Duration::from_millis(1500)),
    );
    let mut child = spawn_ftget(
        &env.work,
        &[&relay.target(), "mid.bin", "--retries", "0", "-q"],
    );
    let partial = env.work.join("mid.bin.part");
    assert!(wait_until(Duration::from_secs(30), || {
        fs::metadata(&partial).is_ok_and(|m| m.len() >= 4 * 1024 * 1024)
    }));
    signal(server.pid(), Signal::SIGTERM);
    let client = wait_bounded(&mut child, Duration::from_secs(30)).expect("ftget finishes");
    let stderr = child.stderr.take().map(read_pipe).unwrap_or_default();
    assert_eq!(
        client.code(),
        Some(0),
        "the transfer in flight completed: {stderr}"
    );
    assert!(fs::read(env.work.join("mid.bin")).expect("output") == data);
    let status = server.stop(Signal::SIGTERM, Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(
        server.logs().contains("waiting up to 5 s for 1 connection"),
        "{}",
        server.logs()
    );
}

#[test]
fn ipv6_loopback_and_host_names_work() {
    let env = env_with_info();
    let server = Server::start_on("[::1]:0", &env.root, &[]);
    assert!(server.addr.is_ipv6());
    let run = ftget(
        &env.work,
        &[
            &format!("[::1]:{}", server.addr.port()),
            "info.txt",
            "-o",
            "v6.txt",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        fs::read(env.work.join("v6.txt")).expect("written"),
        b"hello from ft\n"
    );

    let server = Server::start(&env.root, &[]);
    let run = ftget(
        &env.work,
        &[
            &format!("localhost:{}", server.addr.port()),
            "info.txt",
            "-o",
            "name.txt",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    use ft_protocol::{Request, CHUNK_SIZE};
    let env = TestEnv::new();
    let small = env.random_file("small.txt", 3000, 1);
    let big = env.random_file("big.bin", CHUNK_SIZE as usize + 10, 2);
    let server = Server::start(&env.root, &[]);
    let mut raw = Raw::greeted(server.addr);

    // Five requests in one write: the server must answer each whole, in order,
    // the streamed file and a failure included.
    let get = |path: &str| Request::Get {
        path: path.into(),
        offset: 0,
    };
    let mut bytes = Vec::new();
    for request in [
        get("small.txt"),
        get("missing.txt"),
        get("big.bin"),
        Request::Stat {
            path: "small.txt".into(),
        },
        get("small.txt"),
    ] {
        bytes.extend(ft_protocol::codec::encode(&request).unwrap());
    }
    raw.send_bytes(&bytes);

    let file = |raw: &mut Raw| {
        let mut data = Vec::new();
        assert!(matches!(raw.recv(), Some(Response::Meta(_))));
        let sha256 = raw.recv_until("a download", |reply| match reply {
            Response::Data(piece) => {
                data.extend_from_slice(&piece);
                None
            }
            Response::Checkpoint { .. } => None,
            Response::End { sha256 } => Some(sha256),
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(ft_protocol::hash::to_hex(&sha256), sha256_hex(&data));
        data
    };
    assert_eq!(file(&mut raw), small);
    assert!(matches!(
        raw.recv(),
        Some(Response::Error(err)) if err.code == ErrorCode::NotFound
    ));
    assert_eq!(file(&mut raw), big);
    assert!(matches!(raw.recv(), Some(Response::Meta(meta)) if meta.size == 3000));
    assert_eq!(file(&mut raw), small);
}
