//! The server's resources against clients that leave or never read: work
//! stops and slots come back when a client goes, one cold file is hashed
//! once however many ask, and what a connection holds stays small whatever
//! its client does. Figures come from /proc: CPU time, bytes read (`rchar`),
//! resident memory.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::time::Duration;

use ft_protocol::{ErrorCode, Request, Response, CHUNK_SIZE};
use ft_tests::{bytes_read, peak_rss_kib, rss_kib, wait_until, Raw, Server, TestEnv};

const GIB: u64 = 1 << 30;

/// How long the server may take to notice a client gone: its next two
/// keep-alives (the first write after the client's close still succeeds),
/// then the pass's current chunk, with room for a loaded machine.
const SETTLE: Duration = Duration::from_secs(2);
const MIB: u64 = 1 << 20;

/// A sparse file of `len` bytes (zeros, no disk), slow to hash, fast to make.
fn sparse(env: &TestEnv, name: &str, len: u64) {
    fs::File::create(env.root.join(name))
        .and_then(|file| file.set_len(len))
        .expect("sparse file");
}

/// Whether a new client is served: `Stat` of `path` answered with `Meta`.
fn served(server: &Server, path: &str) -> bool {
    let mut raw = Raw::connect(server.addr);
    raw.send(&ft_protocol::ClientHandshake::default().hello());
    if !matches!(raw.recv(), Some(Response::Welcome { .. })) {
        return false;
    }
    raw.send(&Request::Stat { path: path.into() });
    matches!(raw.recv(), Some(Response::Meta(_)))
}

/// Bytes the server reads over `span`, once `settle` has passed: what work
/// it still does.
fn reads_over(server: &Server, settle: Duration, span: Duration) -> u64 {
    std::thread::sleep(settle);
    let before = bytes_read(server.pid()).expect("server alive");
    std::thread::sleep(span);
    bytes_read(server.pid()).expect("server alive") - before
}

/// Sends `request` and waits until the server shows it is working on it (a
/// keep-alive, or any frame).
fn started(server: &Server, request: Request) -> Raw {
    let mut raw = Raw::greeted(server.addr);
    raw.send(&request);
    assert!(raw.recv().is_some(), "the server answers or keeps alive");
    raw
}

#[test]
fn clients_that_leave_a_cold_get_free_their_slots_and_stop_its_work() {
    let env = TestEnv::new();
    let size = 64 * GIB;
    sparse(&env, "huge.bin", size);
    fs::write(env.root.join("info.txt"), b"hello\n").expect("write");
    let server = Server::start(&env.root, &["--max-connections", "8"]);
    // Every slot asks for the last chunk, which a cold file reaches only by
    // hashing the 64 GiB before it; then they all leave.
    let clients: Vec<Raw> = (0..8)
        .map(|_| {
            let mut raw = Raw::greeted(server.addr);
            raw.send(&Request::Get {
                path: "huge.bin".into(),
                offset: size - CHUNK_SIZE,
            });
            assert!(matches!(raw.recv(), Some(Response::Meta(_))));
            raw
        })
        .collect();
    drop(clients);
    assert!(
        wait_until(Duration::from_secs(5), || served(&server, "info.txt")),
        "a new client is served soon after the others left"
    );
    let read = reads_over(&server, SETTLE, Duration::from_secs(2));
    assert!(
        read < 2 * CHUNK_SIZE + MIB,
        "the server read {read} bytes in 2 s after its clients left"
    );
}

#[test]
fn work_for_a_client_that_left_stops() {
    let env = TestEnv::new();
    sparse(&env, "cold.bin", 64 * GIB);
    fs::create_dir(env.root.join("set")).expect("mkdir");
    for i in 0..4 {
        fs::File::create(env.root.join(format!("set/{i}.bin")))
            .and_then(|file| file.set_len(16 * GIB))
            .expect("sparse file");
    }
    let server = Server::start(&env.root, &[]);
    let requests = [
        Request::Checkpoints {
            path: "cold.bin".into(),
            first: 1,
            count: 1,
        },
        Request::List {
            path: "set".into(),
            recursive: true,
            digests: true,
        },
    ];
    for request in requests {
        let what = format!("{request:?}");
        let raw = started(&server, request);
        drop(raw);
        let read = reads_over(&server, SETTLE, Duration::from_secs(2));
        assert!(
            read < 2 * CHUNK_SIZE + MIB,
            "{what}: the server read {read} bytes in 2 s after its client left"
        );
    }
}

#[test]
fn one_cold_file_is_hashed_once_for_all_who_ask_at_once() {
    let env = TestEnv::new();
    let size = 256 * MIB;
    env.random_file("data.bin", size as usize, 5);
    let server = Server::start(&env.root, &[]);
    let before = bytes_read(server.pid()).expect("alive");
    let clients: Vec<std::thread::JoinHandle<ft_protocol::Digest>> = (0..8)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut raw = Raw::greeted(addr);
                raw.send(&Request::Checkpoints {
                    path: "data.bin".into(),
                    first: 1,
                    count: 64,
                });
                raw.recv_until("checkpoints", |response| match response {
                    Response::Checkpoints { meta, states, .. } => {
                        assert_eq!(states.len(), 64);
                        meta.sha256
                    }
                    Response::Error(err) => panic!("{err:?}"),
                    _ => None,
                })
            })
        })
        .collect();
    let digests: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(digests.windows(2).all(|pair| pair[0] == pair[1]));
    let read = bytes_read(server.pid()).expect("alive") - before;
    assert!(
        read < size + size / 2,
        "8 clients made the server read {read} bytes of a {size}-byte file"
    );
}

#[test]
fn clients_that_never_read_cannot_grow_the_server() {
    let env = TestEnv::new();
    env.random_file("one.bin", MIB as usize, 1);
    fs::create_dir(env.root.join("many")).expect("mkdir");
    for i in 0..50_000 {
        fs::File::create(
            env.root
                .join(format!("many/entry-with-a-longish-name-{i:06}")),
        )
        .expect("create");
    }
    let server = Server::start(&env.root, &[]);
    let base = rss_kib(server.pid()).expect("alive");
    // Each pipelines 32 Gets of a 1 MiB file in one write, or lists 50,000
    // entries, and reads nothing.
    let mut idle = Vec::new();
    for i in 0..32 {
        let mut raw = Raw::greeted(server.addr);
        let requests: Vec<Request> = match i % 2 {
            0 => (0..32)
                .map(|_| Request::Get {
                    path: "one.bin".into(),
                    offset: 0,
                })
                .collect(),
            _ => vec![Request::List {
                path: "many".into(),
                recursive: true,
                digests: false,
            }],
        };
        let bytes: Vec<u8> = requests
            .iter()
            .flat_map(|request| ft_protocol::codec::encode(request).unwrap())
            .collect();
        raw.send_bytes(&bytes);
        idle.push(raw);
    }
    // A request frame far larger than any request is refused, not buffered.
    let mut big = Raw::greeted(server.addr);
    big.send_bytes(&(1u32 << 20).to_be_bytes());
    big.send_bytes(&[0; 1024]);
    assert_eq!(big.error_code(), ErrorCode::BadRequest);
    std::thread::sleep(Duration::from_secs(3));
    let peak = peak_rss_kib(server.pid()).expect("alive");
    assert!(
        peak < base + 64 * 1024,
        "32 clients that never read took the server from {base} KiB to a peak of {peak} KiB"
    );
    assert!(served(&server, "one.bin"), "and it still serves");
    drop(idle);
}
