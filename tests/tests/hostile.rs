//! Hostile input, both ways: a catalogue of escaping and special paths and
//! of malformed frames thrown at the server, and servers that lie to the
//! client. Nothing outside the root is opened, the server keeps serving and
//! its memory stays put; the client ends cleanly with its documented exit
//! code, no unverified final file, and bounded memory.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use ft_protocol::frame::LEN_PREFIX;
use ft_protocol::{ErrorCode, Request, Response};
use ft_tests::{
    ftget, ftget_with_peak, peak_rss_kib, signal, spawn_ftget, wait_bounded, MisbehavingServer,
    Misbehaviour, OutputWithin, Raw, Server, TestEnv, RUN_TIMEOUT,
};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;

const MIB: u64 = 1024 * 1024;

/// A root with a file, a folder, links leading out and in, a loop, a FIFO
/// and a Unix socket; and a folder beside it with a secret in it.
fn hostile_root(env: &TestEnv) -> std::path::PathBuf {
    let root = &env.root;
    fs::write(root.join("a.txt"), b"inside").unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    let outside = env.work.parent().unwrap().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret.txt"), b"secret").unwrap();
    symlink("../..", root.join("sub/up")).unwrap();
    symlink(outside.join("secret.txt"), root.join("link-out")).unwrap();
    symlink("../outside/secret.txt", root.join("link-rel-out")).unwrap();
    symlink(&outside, root.join("dir-out")).unwrap();
    symlink(root.join("a.txt"), root.join("abs-in")).unwrap();
    symlink("/dev/null", root.join("dev-null")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(root.join("fifo"))
        .output_within(RUN_TIMEOUT)
        .unwrap();
    assert!(fifo.status.success());
    let socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    std::mem::forget(socket);
    outside
}

/// Paths that try to leave the root, hide a `..`, or name something that is
/// not a regular file. Each must be refused with one of the path errors.
fn hostile_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "..",
        "../",
        "../etc/passwd",
        "../../../../../../etc/passwd",
        "a/../../etc/passwd",
        "sub/..",
        "sub/../..",
        "./../a.txt",
        "..//..",
        "sub/./../../x",
        "sub/up/outside/secret.txt",
        "sub/up",
        "/etc/passwd",
        "//etc/passwd",
        "/",
        "C:\\Windows\\win.ini",
        "..\\..\\etc\\passwd",
        "sub\\..\\..\\x",
        "\\\\server\\share\\x",
        "nul\0byte",
        "a.txt\0.jpg",
        "%2e%2e/%2e%2e/etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%252e%252e/x",
        ".%2e/outside/secret.txt",
        "\u{2024}\u{2024}/outside/secret.txt",
        "link-out",
        "link-rel-out",
        "dir-out/secret.txt",
        "abs-in",
        "dev-null",
        "loop",
        "fifo",
        "sock",
        "sub",
        ".",
        "",
        "sub/.",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    paths.push("a/".repeat(32 * 1024)); // 64 KiB
    paths.push("x".repeat(300)); // one component over 255 bytes
    paths
}

#[test]
fn a_catalogue_of_hostile_paths_is_refused_without_opening_anything_outside() {
    let env = TestEnv::new();
    let outside = hostile_root(&env);
    let server = Server::start(&env.root, &[]);
    let warm = ftget(&env.work, &[&server.target(), "a.txt", "-q"]);
    assert_eq!(warm.code, Some(0));
    let before = peak_rss_kib(server.pid()).unwrap();

    // Anything that opens or reads the outside folder or its secret shows up here.
    let watch = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    let flags = AddWatchFlags::IN_OPEN | AddWatchFlags::IN_ACCESS;
    watch.add_watch(&outside, flags).unwrap();
    watch.add_watch(&outside.join("secret.txt"), flags).unwrap();

    let paths = hostile_paths();
    assert!(paths.len() >= 30);
    let mut raw = Raw::greeted(server.addr);
    for path in &paths {
        let requests = [
            Request::Stat { path: path.clone() },
            Request::Get {
                path: path.clone(),
                offset: 0,
            },
            Request::Checkpoints {
                path: path.clone(),
                first: 1,
                count: 1,
            },
        ];
        for request in requests {
            raw.send(&request);
            match raw.recv() {
                Some(Response::Error(err)) => assert!(
                    matches!(
                        err.code,
                        ErrorCode::InvalidPath | ErrorCode::NotFound | ErrorCode::NotAFile
                    ),
                    "{path:?} {request:?}: {err:?}"
                ),
                other => panic!("{path:?} {request:?} was answered {other:?}"),
            }
        }
        raw.send(&Request::List {
            path: path.clone(),
            recursive: true,
            digests: true,
        });
        match raw.recv() {
            // Folders inside the root may be listed: their walk must not
            // leave it, which the inotify watch checks.
            Some(Response::Entries(_)) => {
                raw.recv_until(&format!("list {path:?}"), |reply| {
                    matches!(reply, Response::ListEnd { .. }).then_some(())
                });
            }
            Some(Response::ListEnd { .. }) => {}
            Some(Response::Error(err)) => assert!(
                matches!(
                    err.code,
                    ErrorCode::InvalidPath | ErrorCode::NotFound | ErrorCode::NotADirectory
                ),
                "list {path:?}: {err:?}"
            ),
            other => panic!("list {path:?} was answered {other:?}"),
        }
    }
    // The same connection still works.
    raw.send(&Request::Stat {
        path: "a.txt".into(),
    });
    assert!(matches!(raw.recv(), Some(Response::Meta(m)) if m.size == 6));

    eprintln!(
        "figures: {} paths x 4 requests; server peak {before} -> {} KiB",
        paths.len(),
        peak_rss_kib(server.pid()).unwrap_or(0)
    );
    let events = watch.read_events().unwrap_or_default();
    assert!(
        events.is_empty(),
        "something outside the root was opened: {events:?}"
    );
    let after = peak_rss_kib(server.pid()).unwrap();
    assert!(
        after < before + 16 * 1024,
        "server memory jumped from {before} to {after} KiB"
    );
}

#[test]
fn malformed_frames_get_an_error_or_a_close_and_the_server_goes_on() {
    let env = TestEnv::new();
    fs::write(env.root.join("a.txt"), b"inside").unwrap();
    let server = Server::start(&env.root, &[]);
    let warm = ftget(&env.work, &[&server.target(), "a.txt", "-q"]);
    assert_eq!(warm.code, Some(0));
    let before = peak_rss_kib(server.pid()).unwrap();

    let frame = |body: &[u8]| {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    };
    let stat = ft_protocol::codec::encode(&Request::Stat { path: "a".into() }).unwrap();
    // Over TLS (after the ft handshake, or before it): the frame parser
    // meets them. Without TLS: what the server meets before any TLS.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Start {
        Plain,
        Tls,
        Greeted,
    }
    use Start::{Greeted, Plain, Tls};
    let v1_hello = {
        // Version 1's hello, as a version-1 ftget sends it, without TLS.
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&ft_protocol::MAGIC);
        body.extend_from_slice(&1u32.to_le_bytes());
        frame(&body)
    };
    let mut cases: Vec<(&str, Start, Vec<u8>)> = vec![
        // (what, how it starts, bytes)
        (
            "length prefix near 4 GiB",
            Tls,
            0xffff_fff0u32.to_be_bytes().to_vec(),
        ),
        (
            "length prefix near 4 GiB",
            Greeted,
            0xffff_fff0u32.to_be_bytes().to_vec(),
        ),
        (
            "length just over the cap",
            Greeted,
            ((2 << 20) + 1u32).to_be_bytes().to_vec(),
        ),
        ("empty frame", Greeted, frame(&[])),
        ("truncated frame", Greeted, {
            let mut cut = 100u32.to_be_bytes().to_vec();
            cut.extend_from_slice(&[1, 0, 0, 0]);
            cut
        }),
        ("truncated length", Greeted, vec![0, 0]),
        ("unknown request variant", Greeted, frame(&[99, 0, 0, 0])),
        ("a string claiming 2^60 bytes", Greeted, {
            let mut body = vec![1, 0, 0, 0];
            body.extend_from_slice(&(1u64 << 60).to_le_bytes());
            frame(&body)
        }),
        ("a path that is not UTF-8", Greeted, {
            let mut body = vec![1, 0, 0, 0];
            body.extend_from_slice(&2u64.to_le_bytes());
            body.extend_from_slice(&[0xff, 0xfe]);
            frame(&body)
        }),
        ("a bool that is 7", Greeted, {
            let mut body = ft_protocol::codec::encode(&Request::List {
                path: String::new(),
                recursive: false,
                digests: false,
            })
            .unwrap()[LEN_PREFIX..]
                .to_vec();
            let last = body.len() - 1;
            body[last] = 7;
            frame(&body)
        }),
        ("trailing bytes", Greeted, {
            let mut body = stat[LEN_PREFIX..].to_vec();
            body.push(0);
            frame(&body)
        }),
        ("a response sent as a request", Greeted, {
            ft_protocol::codec::encode(&Response::Data(bytes::Bytes::from_static(b"xyz"))).unwrap()
        }),
        ("a request before the hello", Tls, stat.clone()),
        ("a second hello", Greeted, {
            ft_protocol::codec::encode(&Request::Hello {
                magic: ft_protocol::MAGIC,
                version: 1,
                token: None,
            })
            .unwrap()
        }),
        ("wrong magic", Tls, {
            ft_protocol::codec::encode(&Request::Hello {
                magic: *b"HTTP",
                version: 1,
                token: None,
            })
            .unwrap()
        }),
        ("wrong version", Tls, {
            ft_protocol::codec::encode(&Request::Hello {
                magic: ft_protocol::MAGIC,
                version: 7,
                token: None,
            })
            .unwrap()
        }),
        (
            "an HTTP request",
            Tls,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a TLS client hello",
            Tls,
            vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
        ),
        (
            "a TLS client hello cut short",
            Plain,
            vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
        ),
        (
            "length prefix near 4 GiB, then a hello",
            Plain,
            [&0xffff_fff0u32.to_be_bytes()[..], &v1_hello].concat(),
        ),
        ("a version-1 hello without TLS", Plain, v1_hello.clone()),
        (
            "an HTTP request without TLS",
            Plain,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    let mut rng = fastrand::Rng::with_seed(4);
    for _ in 0..20 {
        let len = rng.usize(1..600);
        let mut body = vec![0u8; len];
        rng.fill(&mut body);
        cases.push(("random bytes in a frame", Greeted, frame(&body)));
        let mut noise = vec![0u8; len];
        rng.fill(&mut noise);
        cases.push((
            "random bytes",
            if rng.bool() { Greeted } else { Tls },
            noise,
        ));
    }
    // Its own generator: the cases above are the ones they always were.
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..10 {
        // At least the 12 bytes the server looks at before it closes:
        // fewer would wait out its handshake limit.
        let mut noise = vec![0u8; rng.usize(12..600)];
        rng.fill(&mut noise);
        cases.push(("random bytes without TLS", Plain, noise));
    }
    for (what, start, bytes) in &cases {
        let mut raw = match start {
            Greeted => Raw::greeted(server.addr),
            Tls => Raw::connect(server.addr),
            Plain => Raw::plain(server.addr),
        };
        raw.send_bytes(bytes);
        // Half-close: a truncated frame then reads as cut short.
        let _ = raw.stream.shutdown(std::net::Shutdown::Write);
        let mut replies = Vec::new();
        // Bounded: three replies fail the test, and each read times out.
        while let Some(reply) = raw.recv() {
            replies.push(reply);
            assert!(replies.len() < 3, "{what}: kept answering: {replies:?}");
        }
        // At most one reply, an error, then the close. Without TLS, only a
        // version-1 client hears one: which version the server speaks.
        assert!(
            bytes != &v1_hello || replies.len() == 1,
            "{what}: no refusal"
        );
        match replies.as_slice() {
            [] => {}
            [Response::Error(err)] if *start == Plain => {
                assert_eq!(err.code, ErrorCode::UnsupportedVersion, "{what}: {err:?}");
            }
            [Response::Error(err)] => assert!(
                matches!(
                    err.code,
                    ErrorCode::BadRequest | ErrorCode::UnsupportedVersion
                ),
                "{what}: {err:?}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
    let after = ftget(
        &env.work,
        &[&server.target(), "a.txt", "-q", "-o", "again.txt"],
    );
    assert_eq!(after.code, Some(0), "the server still serves: {after:?}");
    let peak = peak_rss_kib(server.pid()).unwrap();
    eprintln!(
        "figures: {} malformed cases; server peak {before} -> {peak} KiB",
        cases.len()
    );
    assert!(
        peak < before + 16 * 1024,
        "server memory jumped from {before} to {peak} KiB over {} cases",
        cases.len()
    );
}

/// Runs ftget against a server misbehaving so; the run and its peak memory.
fn against(misbehaviour: Misbehaviour, args: &[&str]) -> (TestEnv, ft_tests::Run, u64) {
    let env = TestEnv::new();
    let server = MisbehavingServer::start(vec![7u8; (10 * MIB) as usize], misbehaviour);
    let target = server.target();
    let mut all = vec![target.as_str()];
    all.extend_from_slice(args);
    let (run, peak) = ftget_with_peak(&env.work, &all);
    (env, run, peak)
}

#[test]
fn lying_servers_end_in_clean_errors_with_no_final_file() {
    let cases: [(Misbehaviour, &[&str], i32, &str); 5] = [
        (
            Misbehaviour::WrongDigest,
            &["f.bin"],
            4,
            "verification failed",
        ),
        (Misbehaviour::ExtraBytes, &["f.bin"], 1, "more bytes"),
        (Misbehaviour::FewerBytes, &["f.bin"], 1, "ended at byte"),
        (Misbehaviour::OversizedFrame, &["f.bin"], 1, "frame"),
        (
            Misbehaviour::Stall,
            &["f.bin", "--timeout", "1", "--retries", "1"],
            5,
            "no progress for 1 s",
        ),
    ];
    for (misbehaviour, args, code, says) in cases {
        let (env, run, peak) = against(misbehaviour, args);
        assert_eq!(run.code, Some(code), "{misbehaviour:?}: {run:?}");
        assert!(
            run.stderr.contains(says),
            "{misbehaviour:?}: {}",
            run.stderr
        );
        assert!(
            !env.work.join("f.bin").exists(),
            "{misbehaviour:?}: final file"
        );
        eprintln!("figures: {misbehaviour:?}: exit {code}, client peak {peak} KiB");
        assert!(peak < 64 * 1024, "{misbehaviour:?}: peak {peak} KiB");
    }
}

#[test]
fn an_endless_stream_does_not_grow_the_client() {
    let env = TestEnv::new();
    let server = MisbehavingServer::start(vec![0u8; 10], Misbehaviour::EndlessData);
    let mut child = spawn_ftget(&env.work, &[&server.target(), "f.bin", "-q"]);
    let mut peak = 0;
    for _ in 0..300 {
        peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = fs::metadata(env.work.join("f.bin.part")).map_or(0, |m| m.len());
    signal(child.id(), Signal::SIGKILL);
    wait_bounded(&mut child, Duration::from_secs(10));
    eprintln!("figures: endless stream: {written} bytes in 3 s, client peak {peak} KiB");
    assert!(written > 20 * MIB, "the stream flowed: {written} bytes");
    assert!(peak < 64 * 1024, "peak {peak} KiB after {written} bytes");
    assert!(!env.work.join("f.bin").exists());
}

#[test]
fn an_endless_listing_is_cut_off_with_bounded_memory() {
    let (env, run, peak) = against(Misbehaviour::EndlessListing, &["-r", "dir", "-o", "out"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("more than 1000000 entries"),
        "{}",
        run.stderr
    );
    assert!(!env.work.join("out/dir/f0").exists(), "nothing fetched");
    eprintln!("figures: endless listing cut off; client peak {peak} KiB");
    assert!(peak < 256 * 1024, "peak {peak} KiB");
}
