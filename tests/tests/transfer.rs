//! Whole downloads: bytes, digests, names, and what is left on disk.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;

use ft_protocol::{Request, Response, CHUNK_SIZE};
use ft_tests::{ftget, sha256_hex, Raw, Server, TestEnv};

#[test]
fn empty_small_and_large_files_arrive_byte_exact() {
    let env = TestEnv::new();
    let cases = [
        ("empty.bin", 0),
        ("info.txt", 14),
        // Not a multiple of the chunk size: the tail is verified by the end digest only.
        ("large.bin", 100 * 1024 * 1024 + 17),
    ];
    let originals: Vec<Vec<u8>> = cases
        .iter()
        .zip(1..)
        .map(|((name, len), seed)| env.random_file(name, *len, seed))
        .collect();
    let server = Server::start(&env.root, &[]);

    for ((name, len), original) in cases.iter().zip(&originals) {
        let run = ftget(&env.work, &[&server.target(), name, "--json"]);
        assert_eq!(run.code, Some(0), "{name}: {run:?}");
        let report = run.json();
        assert_eq!(report["path"], *name);
        assert_eq!(report["output"], *name);
        assert_eq!(report["size"], *len as u64);
        assert_eq!(report["sha256"], sha256_hex(original), "{name}");
        assert_eq!(report["verified"], true);
        assert_eq!(report["resumed_from"], 0);
        assert_eq!(report["bytes_received"], *len as u64);
        assert!(report["seconds"].as_f64().is_some_and(|s| s >= 0.0));
        let keys: Vec<_> = report
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys.len(), 8, "exactly the documented keys: {keys:?}");
        assert!(
            fs::read(env.work.join(name)).expect("output exists") == *original,
            "{name} differs"
        );
    }
    assert_eq!(
        env.work_listing(),
        ["empty.bin", "info.txt", "large.bin"],
        "no partials left behind"
    );
    // One log line per request: client address, path, offset, bytes, outcome.
    let logs = server.logs();
    let get = logs
        .lines()
        .find(|line| line.contains(r#"op="get""#) && line.contains(r#"path="large.bin""#))
        .unwrap_or_else(|| panic!("no log line for the download: {logs}"));
    for field in ["client=127.0.0.1:", "offset=0", "bytes=104857617", "ok"] {
        assert!(get.contains(field), "{field} missing from {get}");
    }
}

#[test]
fn output_option_names_a_file_or_a_folder() {
    let env = TestEnv::new();
    let data = env.random_file("docs/guide.txt", 5000, 7);
    let server = Server::start(&env.root, &[]);

    let run = ftget(
        &env.work,
        &[
            &server.target(),
            "docs/guide.txt",
            "-o",
            "renamed.txt",
            "-q",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.is_empty(), "-q prints nothing: {}", run.stderr);
    assert_eq!(
        fs::read(env.work.join("renamed.txt")).expect("written"),
        data
    );

    fs::create_dir(env.work.join("into")).expect("mkdir");
    let run = ftget(
        &env.work,
        &[&server.target(), "docs/guide.txt", "-o", "into"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        fs::read(env.work.join("into/guide.txt")).expect("written"),
        data
    );
}

#[test]
fn existing_output_is_replaced_only_by_a_verified_file() {
    let env = TestEnv::new();
    let data = env.random_file("data.bin", 3 * CHUNK_SIZE as usize, 9);
    let server = Server::start(&env.root, &[]);
    fs::write(env.work.join("data.bin"), b"old contents").expect("write");

    let run = ftget(&env.work, &[&server.target(), "nope.bin", "-o", "data.bin"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(
        fs::read(env.work.join("data.bin")).expect("kept"),
        b"old contents"
    );

    let run = ftget(&env.work, &[&server.target(), "data.bin"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(env.work.join("data.bin")).expect("replaced"), data);
}

#[test]
fn one_connection_carries_several_requests_and_warm_stats_carry_the_digest() {
    let env = TestEnv::new();
    let data = env.random_file("a.bin", CHUNK_SIZE as usize + 10, 3);
    let server = Server::start(&env.root, &[]);
    let mut raw = Raw::greeted(server.addr);

    raw.send(&Request::Stat {
        path: "a.bin".into(),
    });
    let Some(Response::Meta(cold)) = raw.recv() else {
        panic!("meta expected")
    };
    assert_eq!(cold.size, data.len() as u64);
    assert_eq!(cold.sha256, None, "nothing hashed yet");

    raw.send(&Request::Get {
        path: "a.bin".into(),
        offset: 0,
    });
    assert!(matches!(raw.recv(), Some(Response::Meta(_))));
    let mut received = Vec::new();
    let mut checkpoints = 0;
    let end = raw.recv_until("the download of a.bin", |reply| match reply {
        Response::Data(bytes) => {
            received.extend_from_slice(&bytes);
            None
        }
        Response::Checkpoint { .. } => {
            checkpoints += 1;
            None
        }
        Response::End { sha256 } => Some(sha256),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(received, data);
    assert_eq!(checkpoints, 1);
    assert_eq!(ft_protocol::hash::to_hex(&end), sha256_hex(&data));

    raw.send(&Request::Stat {
        path: "a.bin".into(),
    });
    let Some(Response::Meta(warm)) = raw.recv() else {
        panic!("meta expected")
    };
    assert_eq!(
        warm.sha256,
        Some(end),
        "the digest is cached after one pass"
    );

    raw.send(&Request::Get {
        path: "a.bin".into(),
        offset: 1,
    });
    assert_eq!(
        raw.error_code(),
        ft_protocol::ErrorCode::BadRequest,
        "offsets are chunk-aligned"
    );
    assert!(
        raw.closes(),
        "the server closes after BadRequest, as PROTOCOL.md says"
    );
}
