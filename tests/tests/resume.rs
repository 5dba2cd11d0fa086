//! Interrupted downloads: resuming, refusing to splice versions, and never
//! trusting a partial on disk.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::process::ExitStatus;
use std::time::Duration;

use ft_protocol::CHUNK_SIZE;
use ft_tests::{
    ftget, sha256_hex, signal, spawn_ftget, wait_bounded, wait_until, AfterBudget,
    MisbehavingServer, Misbehaviour, Relay, Server, TestEnv,
};
use nix::sys::signal::Signal;

const SIZE: usize = 100 * 1024 * 1024;

/// Starts a download of `name` through a relay that stalls after about 30 MiB,
/// waits until more than 20 MiB sit in the partial, and sends ftget `sig`.
/// Checks that no final file exists and the sidecar does; returns how ftget
/// exited and the partial's length.
fn interrupted_download(
    env: &TestEnv,
    server: &Server,
    name: &str,
    sig: Signal,
) -> (ExitStatus, u64) {
    let relay = Relay::start(server.addr, 30 * 1024 * 1024, AfterBudget::Stall);
    let mut child = spawn_ftget(&env.work, &[&relay.target(), name, "-q"]);
    let partial = env.work.join(format!("{name}.part"));
    let grew = wait_until(Duration::from_secs(60), || {
        fs::metadata(&partial).is_ok_and(|m| m.len() > 20 * 1024 * 1024)
    });
    signal(child.id(), sig);
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("ftget exits");
    assert!(grew, "the partial never passed 20 MiB");
    assert!(
        !env.work.join(name).exists(),
        "an interrupted download has no final file"
    );
    assert!(
        env.work.join(format!("{name}.part.json")).exists(),
        "the sidecar was written"
    );
    (status, fs::metadata(&partial).expect("partial").len())
}

#[test]
fn killed_download_resumes_and_verifies() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE, 11);
    let server = Server::start(&env.root, &[]);
    let (_, on_disk) = interrupted_download(&env, &server, "big.bin", Signal::SIGKILL);

    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let resumed = run.field("resumed_from");
    assert!(resumed > 0, "resumed from zero");
    assert!(
        resumed <= on_disk && resumed.is_multiple_of(CHUNK_SIZE),
        "resumed at {resumed}"
    );
    assert_eq!(run.field("bytes_received"), SIZE as u64 - resumed);
    assert_eq!(run.json()["sha256"], sha256_hex(&data));
    assert!(fs::read(env.work.join("big.bin")).expect("output") == data);
    assert_eq!(
        env.work_listing(),
        ["big.bin"],
        "partial and sidecar are gone"
    );
}

#[test]
fn a_dropped_connection_is_retried_from_the_last_verified_chunk() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE, 16);
    let server = Server::start(&env.root, &[]);
    let relay = Relay::start(server.addr, 30 * 1024 * 1024, AfterBudget::Cut);
    let run = ftget(&env.work, &[&relay.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.field("resumed_from"), 0, "one run, no earlier partial");
    let received = run.field("bytes_received");
    assert!(
        received > SIZE as u64,
        "the cut chunk was fetched again: {received}"
    );
    assert!(
        received < SIZE as u64 + CHUNK_SIZE,
        "no more than the unverified tail was refetched: {received}"
    );
    assert!(fs::read(env.work.join("big.bin")).expect("output") == data);
}

#[test]
fn changed_remote_file_is_downloaded_anew_not_spliced() {
    let env = TestEnv::new();
    env.random_file("big.bin", SIZE, 12);
    let server = Server::start(&env.root, &[]);
    interrupted_download(&env, &server, "big.bin", Signal::SIGKILL);

    // Same size, new contents, new modification time.
    let fresh = env.random_file("big.bin", SIZE, 13);
    let file = fs::File::options()
        .write(true)
        .open(env.root.join("big.bin"))
        .expect("open");
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    drop(file);

    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.field("resumed_from"), 0);
    assert_eq!(run.field("bytes_received"), SIZE as u64);
    assert_eq!(run.json()["sha256"], sha256_hex(&fresh));
    assert!(fs::read(env.work.join("big.bin")).expect("output") == fresh);
}

#[test]
fn corrupted_partial_is_never_accepted() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE, 14);
    let server = Server::start(&env.root, &[]);
    let (_, on_disk) = interrupted_download(&env, &server, "big.bin", Signal::SIGKILL);
    assert!(on_disk > 2 * CHUNK_SIZE);

    // Flip one byte inside the second chunk of the partial.
    let partial = env.work.join("big.bin.part");
    let mut bytes = fs::read(&partial).expect("partial");
    bytes[CHUNK_SIZE as usize + 12345] ^= 0x01;
    fs::write(&partial, &bytes).expect("write");

    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    // Every whole chunk that checks out is kept, wherever it is: at most
    // all those on disk but the flipped one (fewer if the sidecar had not
    // yet recorded the last ones when the kill came).
    let kept = run.field("resumed_from");
    assert!(kept <= (on_disk / CHUNK_SIZE - 1) * CHUNK_SIZE, "{run:?}");
    assert!(kept >= CHUNK_SIZE, "the chunk before the flip: {run:?}");
    assert_eq!(run.field("bytes_received"), SIZE as u64 - kept, "{run:?}");
    assert!(fs::read(env.work.join("big.bin")).expect("output") == data);
}

#[test]
fn no_resume_starts_over() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE, 15);
    let server = Server::start(&env.root, &[]);
    interrupted_download(&env, &server, "big.bin", Signal::SIGKILL);
    let run = ftget(
        &env.work,
        &[&server.target(), "big.bin", "--json", "--no-resume"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.field("resumed_from"), 0);
    assert_eq!(run.field("bytes_received"), SIZE as u64);
    assert!(fs::read(env.work.join("big.bin")).expect("output") == data);
}

#[test]
fn a_corrupted_chunk_is_fetched_again_once() {
    let env = TestEnv::new();
    let data: Vec<u8> = (0..3 * CHUNK_SIZE as usize + 99)
        .map(|i| (i % 199) as u8)
        .collect();
    let server =
        MisbehavingServer::start(data.clone(), Misbehaviour::Corrupt { chunk: 1, times: 1 });
    let run = ftget(&env.work, &[&server.target(), "f.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["sha256"], sha256_hex(&data));
    // Chunk 1 crossed the network twice; beyond that, only what was already
    // in flight when the hashing thread caught it (ftget writes while it
    // hashes: at most 8 MiB queued for the hasher, 4 frames for the writer).
    let received = run.field("bytes_received");
    let size = data.len() as u64;
    assert!(
        received >= size + CHUNK_SIZE && received <= size + CHUNK_SIZE + (12 << 20),
        "{received}"
    );
    assert!(fs::read(env.work.join("f.bin")).expect("output") == data);
}

#[test]
fn a_chunk_that_fails_twice_exits_4_without_a_final_file() {
    let env = TestEnv::new();
    let data: Vec<u8> = (0..3 * CHUNK_SIZE as usize)
        .map(|i| (i % 197) as u8)
        .collect();
    let server = MisbehavingServer::start(
        data,
        Misbehaviour::Corrupt {
            chunk: 2,
            times: usize::MAX,
        },
    );
    let run = ftget(&env.work, &[&server.target(), "f.bin"]);
    assert_eq!(run.code, Some(4), "{run:?}");
    assert!(run.stderr.contains("verification failed"), "{}", run.stderr);
    assert!(
        !env.work.join("f.bin").exists(),
        "no unverified file under the final name"
    );
    let kept = fs::metadata(env.work.join("f.bin.part"))
        .expect("partial kept")
        .len();
    assert_eq!(kept, 3 * CHUNK_SIZE, "the partial holds what arrived");
}

#[test]
fn a_file_that_never_stops_changing_ends_in_an_error_not_a_loop() {
    let env = TestEnv::new();
    let server = MisbehavingServer::start(vec![7u8; 1000], Misbehaviour::EverChanging);
    // A fresh download is one request, which sees one version. With a
    // partial of ftget's beside it, ftget asks what the file is first, and
    // its `Get` then meets another version every time.
    let sidecar = serde_json::json!({
        "kind": "ftget partial download", "format": 2, "output": "f.bin",
        "server": server.target(), "remote": "f.bin", "size": 1000,
        "mtime_secs": 1, "mtime_nanos": 0, "sha256": null,
    });
    fs::write(env.work.join("f.bin.part.json"), sidecar.to_string()).expect("sidecar");
    fs::write(env.work.join("f.bin.part"), b"").expect("partial");
    let run = ftget(&env.work, &[&server.target(), "f.bin", "--retries", "2"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("keeps changing"), "{}", run.stderr);
    assert!(!env.work.join("f.bin").exists());
}

#[test]
fn ctrl_c_exits_130_and_keeps_the_partial_for_a_resume() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE, 17);
    let server = Server::start(&env.root, &[]);
    let (status, _) = interrupted_download(&env, &server, "big.bin", Signal::SIGINT);
    assert_eq!(status.code(), Some(130));

    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.field("resumed_from") > 0);
    assert!(fs::read(env.work.join("big.bin")).expect("output") == data);
}
