//! Load: hundreds of downloads at once, thousands of idle connections. These
//! take a while and many file descriptors, so they run apart from CI:
//!
//!     cargo test --workspace --locked --release -- --ignored --nocapture
//!
//! Each prints a `figures:` line with what it measured (RELIABILITY.md).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ft_tests::{
    bin, config_home, ftget, peak_rss_kib, sha256_hex, wait_bounded, Raw, Server, TestEnv,
};

/// Raises this process's open-file limit to its hard limit; returns it.
fn raise_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// A folder on a tmpfs when there is one, so 500 outputs do not measure the disk.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

#[test]
#[ignore = "load: run with --ignored (see the file's doc)"]
fn five_hundred_concurrent_downloads_all_verify() {
    const CLIENTS: usize = 500;
    let env = TestEnv::new();
    let data = env.random_file("four.bin", 4 << 20, 1);
    let want = sha256_hex(&data);
    let server = Server::start(&env.root, &[]);
    let out = scratch();
    let idle_peak = peak_rss_kib(server.pid()).unwrap();

    let started = Instant::now();
    let mut children: Vec<_> = (0..CLIENTS)
        .map(|i| {
            Command::new(bin("ftget"))
                .env("XDG_CONFIG_HOME", config_home())
                .args([&server.target(), "four.bin", "-q", "--retries", "10"])
                .arg("-o")
                .arg(out.path().join(format!("{i}.bin")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut server_peak = 0;
    let mut failed = 0;
    for child in &mut children {
        server_peak = server_peak.max(peak_rss_kib(server.pid()).unwrap_or(0));
        let status = wait_bounded(child, Duration::from_secs(300)).expect("ftget ends");
        if !status.success() {
            failed += 1;
        }
    }
    let wall = started.elapsed();
    server_peak = server_peak.max(peak_rss_kib(server.pid()).unwrap_or(0));
    let verified = (0..CLIENTS)
        .filter(|i| {
            fs::read(out.path().join(format!("{i}.bin"))).is_ok_and(|got| sha256_hex(&got) == want)
        })
        .count();
    eprintln!(
        "figures: {CLIENTS} concurrent 4 MiB downloads: {verified} verified, {failed} failed, \
         wall {:.2} s, server peak RSS {idle_peak} KiB idle -> {server_peak} KiB",
        wall.as_secs_f64()
    );
    assert_eq!(failed, 0);
    assert_eq!(verified, CLIENTS);
}

#[test]
#[ignore = "load: run with --ignored (see the file's doc)"]
fn two_thousand_idle_connections_do_not_stop_a_real_client() {
    const IDLE: usize = 2000;
    let hard = raise_file_limit();
    assert!(
        hard as usize > IDLE + 200,
        "open-file hard limit {hard} is too low"
    );
    let env = TestEnv::new();
    let data = env.random_file("a.bin", 1 << 20, 2);
    let server = Server::start(&env.root, &["--max-connections", "2100"]);
    let before = peak_rss_kib(server.pid()).unwrap();

    // Slowloris: connect and say nothing, not even a TLS hello.
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let run = ftget(&env.work, &[&server.target(), "a.bin", "--json"]);
    let served_in = started.elapsed();
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(env.work.join("a.bin")).unwrap(), data);
    let with_idle = peak_rss_kib(server.pid()).unwrap();
    eprintln!(
        "figures: {IDLE} idle connections: a real download served in {:.3} s; \
         server peak RSS {before} -> {with_idle} KiB ({:.1} KiB per idle connection)",
        served_in.as_secs_f64(),
        (with_idle - before) as f64 / IDLE as f64
    );
    drop(idle);
}

#[test]
#[ignore = "load: run with --ignored (see the file's doc)"]
fn past_the_limit_clients_hear_busy_at_once_even_under_a_flood() {
    const IDLE: usize = 2000;
    raise_file_limit();
    let env = TestEnv::new();
    env.random_file("a.bin", 1000, 3);
    let server = Server::start(&env.root, &["--max-connections", "100"]);
    let before = peak_rss_kib(server.pid()).unwrap();
    let idle: Vec<TcpStream> = (0..IDLE)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let run = ftget(&env.work, &[&server.target(), "a.bin", "--retries", "0"]);
    let answered_in = started.elapsed();
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(
        run.stderr.contains("busy") || run.stderr.contains("connection lost"),
        "{}",
        run.stderr
    );
    assert!(answered_in < Duration::from_secs(3), "{answered_in:?}");
    let peak = peak_rss_kib(server.pid()).unwrap();
    eprintln!(
        "figures: {} connections against --max-connections 100: a new client refused in {:.3} s ({}); \
         server peak RSS {before} -> {peak} KiB",
        idle.len(),
        answered_in.as_secs_f64(),
        run.stderr.trim()
    );
    drop(idle);
    // Once the flood is gone (and its hellos time out), service resumes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = ftget(&env.work, &[&server.target(), "a.bin", "--retries", "0"]);
        if run.code == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {run:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The peak RSS README and RELIABILITY.md promise for the server with every
/// one of its default 512 connections doing the worst it can.
const WORST_PEAK_KIB: u64 = 512 * 1024;

#[test]
#[ignore = "load: run with --ignored (see the file's doc)"]
fn every_connection_doing_its_worst_keeps_the_server_under_its_stated_peak() {
    use ft_protocol::{codec::encode, ClientHandshake, Request, CHUNK_SIZE, MAX_REQUEST};
    use std::io::Write;
    const CONNECTIONS: usize = 512;
    raise_file_limit();
    let env = TestEnv::new();
    env.random_file("one.bin", 1 << 20, 3);
    let huge = 1u64 << 40;
    fs::File::create(env.root.join("huge.bin"))
        .and_then(|file| file.set_len(huge))
        .unwrap();
    // Cold files for downloads that start their own hashing pass, and ride it.
    fs::create_dir(env.root.join("cold")).unwrap();
    for i in 0..CONNECTIONS / 6 + 1 {
        fs::File::create(env.root.join(format!("cold/{i}.bin")))
            .and_then(|file| file.set_len(1 << 30))
            .unwrap();
    }
    fs::create_dir(env.root.join("many")).unwrap();
    for i in 0..200_000 {
        fs::File::create(env.root.join(format!("many/file-{i:07}"))).unwrap();
    }
    let server = Server::start(&env.root, &[]);
    let idle = peak_rss_kib(server.pid()).unwrap();
    // Six ways to make a server hold things, in turn; none of them reads.
    let worst = |i: usize| -> Vec<u8> {
        let hello = encode(&ClientHandshake::default().hello()).unwrap();
        let requests: Vec<Request> = match i % 6 {
            5 => vec![Request::Get {
                path: format!("cold/{}.bin", i / 6),
                offset: 0,
            }],
            0 => (0..32)
                .map(|_| Request::Get {
                    path: "one.bin".into(),
                    offset: 0,
                })
                .collect(),
            1 => vec![Request::List {
                path: "many".into(),
                recursive: true,
                digests: true,
            }],
            2 => vec![Request::Get {
                path: "huge.bin".into(),
                offset: huge - CHUNK_SIZE,
            }],
            3 => vec![Request::Checkpoints {
                path: "huge.bin".into(),
                first: 1,
                count: u32::MAX,
            }],
            _ => {
                // The largest request frame, all but its last byte.
                let mut partial = hello;
                partial.extend_from_slice(&(MAX_REQUEST as u32).to_be_bytes());
                partial.extend(std::iter::repeat_n(0u8, MAX_REQUEST - 1));
                return partial;
            }
        };
        let mut bytes = hello;
        for request in &requests {
            bytes.extend_from_slice(&encode(request).unwrap());
        }
        bytes
    };
    let started = Instant::now();
    // Each over TLS, as any client: the requests inside it.
    let held: Vec<Raw> = (0..CONNECTIONS)
        .map(|i| {
            let mut raw = Raw::connect(server.addr);
            raw.stream.write_all(&worst(i)).unwrap();
            raw.stream.flush().unwrap();
            raw
        })
        .collect();
    // Let every reply fill what it can: sample until the peak stops growing.
    let mut peak = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let now = peak_rss_kib(server.pid()).unwrap();
        if now == peak && started.elapsed() > Duration::from_secs(10) {
            break;
        }
        peak = now;
    }
    let threads = fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Threads:").map(|n| n.trim().to_owned()))
        .unwrap();
    eprintln!(
        "figures: {CONNECTIONS} connections each doing its worst (32 pipelined Gets, a \
         200,000-entry listing with digests, a cold Get at the end of 1 TiB, Checkpoints \
         of 1 TiB, a 128 KiB request frame one byte short, a cold Get of a file of its \
         own from its start), none reading: server peak RSS \
         {idle} KiB idle -> {peak} KiB, {threads} threads, after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak < WORST_PEAK_KIB,
        "peak RSS {peak} KiB over the stated {WORST_PEAK_KIB} KiB"
    );
    drop(held);
}
