//! Faults on the way: a server killed and restarted, links that keep
//! failing, a client killed again and again, a full disk, a file rewritten
//! while it is sent. In every case the final name holds nothing or the
//! verified file, never anything else.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use ft_tests::{
    ftget, read_pipe, sha256_hex, signal, spawn_ftget, wait_bounded, wait_until, AfterBudget,
    OutputWithin, Relay, Server, TestEnv, POLL, RUN_TIMEOUT,
};
use nix::sys::signal::Signal;

const MIB: usize = 1024 * 1024;

/// Waits (bounded) for `child`, checking all the while that `output` holds
/// either nothing or exactly `want`. Returns the exit status and stdout.
fn watch(child: &mut Child, output: &Path, want: &[u8], limit: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let mut seen_whole = false;
    let status = loop {
        if !seen_whole && output.exists() {
            // It can only appear by rename, whole; check it once.
            let got = fs::read(output).unwrap();
            assert!(got == want, "the final name held something unverified");
            seen_whole = true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ftget did not finish in {limit:?}"
        );
        std::thread::sleep(POLL);
    };
    let stdout = child.stdout.take().map(read_pipe).unwrap_or_default();
    (status, stdout)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

#[test]
fn server_killed_and_restarted_mid_transfer() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", 64 * MIB, 5);
    let mut server = Server::start(&env.root, &[]);
    let addr = server.addr;
    // The first connection stalls 24 MiB in, so the kill lands mid-transfer.
    let relay = Relay::start(addr, 24 * MIB as u64, AfterBudget::Stall);
    let mut child = spawn_ftget(
        &env.work,
        &[
            &relay.target(),
            "big.bin",
            "--timeout",
            "2",
            "--retries",
            "20",
            "--json",
        ],
    );
    let partial = env.work.join("big.bin.part");
    assert!(wait_until(Duration::from_secs(60), || {
        fs::metadata(&partial).is_ok_and(|m| m.len() > 16 * MIB as u64)
    }));
    server
        .stop(Signal::SIGKILL, Duration::from_secs(10))
        .expect("killed");
    assert!(!env.work.join("big.bin").exists());
    let _restarted = Server::start_on(&addr.to_string(), &env.root, &[]);

    let output = env.work.join("big.bin");
    let (status, stdout) = watch(&mut child, &output, &data, Duration::from_secs(90));
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert_eq!(fs::read(&output).unwrap(), data);
    let report = json(&stdout);
    assert_eq!(report["sha256"], sha256_hex(&data));
    let received = report["bytes_received"].as_u64().unwrap();
    assert!(
        received < (64 + 12) as u64 * MIB as u64,
        "resumed, not restarted: {received}"
    );
}

/// Downloads a 48 MiB file through a relay that fails every connection
/// after 9 MiB in the way `after` says; returns the report.
fn through_a_failing_link(after: AfterBudget, extra: &[&str]) -> serde_json::Value {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", 48 * MIB, 6);
    let server = Server::start(&env.root, &[]);
    let relay = Relay::start_every(server.addr, 9 * MIB as u64, after);
    let mut args = vec![relay.target(), "big.bin".into(), "--json".into()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = ftget(&env.work, &args);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(env.work.join("big.bin")).unwrap(), data);
    run.json()
}

#[test]
fn a_link_cut_every_9_mib_still_delivers_with_little_refetched() {
    let report = through_a_failing_link(AfterBudget::Cut, &[]);
    let received = report["bytes_received"].as_u64().unwrap();
    // Each connection verifies 8 MiB and loses at most the 1 MiB past it
    // plus the chunk in flight: well under 1.25x the size in all.
    assert!(
        received <= 48 * MIB as u64 * 5 / 4,
        "bytes_received {received} for 48 MiB: restarts from zero?"
    );
}

#[test]
fn a_link_that_stalls_every_9_mib_still_delivers() {
    let report = through_a_failing_link(AfterBudget::Stall, &["--timeout", "2"]);
    let received = report["bytes_received"].as_u64().unwrap();
    assert!(received <= 48 * MIB as u64 * 5 / 4, "{received}");
}

#[test]
fn twenty_sigkills_in_a_row_then_a_verified_file() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", 300 * MIB, 7);
    let server = Server::start(&env.root, &[]);
    let output = env.work.join("big.bin");
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut killed_mid_transfer = 0;
    for _ in 0..20 {
        let mut child = spawn_ftget(&env.work, &[&server.target(), "big.bin", "-q"]);
        let delay = Duration::from_millis(rng.u64(5..250));
        let until = Instant::now() + delay;
        // Watch the final name until the kill, then kill.
        while Instant::now() < until && child.try_wait().unwrap().is_none() {
            if output.exists() {
                assert!(fs::read(&output).unwrap() == data, "unverified final file");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // A child that exits after this check stays a zombie until it is
        // waited for, so the signal still reaches a process.
        if child.try_wait().unwrap().is_none() {
            killed_mid_transfer += 1;
            signal(child.id(), Signal::SIGKILL);
        }
        wait_bounded(&mut child, Duration::from_secs(10));
        if output.exists() {
            assert!(fs::read(&output).unwrap() == data, "unverified final file");
        }
    }
    eprintln!("{killed_mid_transfer} of 20 kills landed mid-run");
    assert!(
        killed_mid_transfer >= 10,
        "only {killed_mid_transfer} kills landed mid-run"
    );
    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(&output).unwrap(), data);
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_partial_resumes() {
    let env = TestEnv::new();
    let data = env.random_file("big.bin", 40 * MIB, 8);
    let server = Server::start(&env.root, &[]);
    // prlimit(1) caps the size of any file ftget writes: a disk that fills
    // at 20 MiB.
    let ftget_bin = ft_tests::bin("ftget");
    let out = std::process::Command::new("prlimit")
        .env("XDG_CONFIG_HOME", ft_tests::config_home())
        .arg(format!("--fsize={}", 20 * MIB))
        .arg(&ftget_bin)
        .args([&server.target(), "big.bin"])
        .current_dir(&env.work)
        .output_within(RUN_TIMEOUT)
        .expect("prlimit (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("big.bin.part") && stderr.contains("File too large"),
        "{stderr}"
    );
    assert!(!env.work.join("big.bin").exists());
    assert!(env.work.join("big.bin.part.json").exists(), "partial kept");

    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.field("resumed_from") >= 16 * MIB as u64, "{run:?}");
    assert_eq!(fs::read(env.work.join("big.bin")).unwrap(), data);
}

#[test]
fn a_file_rewritten_while_it_is_sent_never_arrives_mixed() {
    rewritten_while_sent(false);
}

#[test]
fn a_file_rewritten_while_it_is_sent_from_the_cache_never_arrives_mixed() {
    // Warm: the server sends by sendfile(2) with cached checkpoints, so the
    // new bytes meet the old checkpoints.
    rewritten_while_sent(true);
}

fn rewritten_while_sent(warm: bool) {
    let env = TestEnv::new();
    let first = env.random_file("big.bin", 64 * MIB, 9);
    let mut second = first.clone();
    fastrand::Rng::with_seed(10).fill(&mut second);
    let server = Server::start(&env.root, &[]);
    if warm {
        let run = ftget(
            &env.work,
            &[&server.target(), "big.bin", "-q", "-o", "warm.bin"],
        );
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    // The first connection pauses 24 MiB in; the file is rewritten in place
    // (same inode, same size, new bytes and mtime) during the pause.
    let relay = Relay::start(
        server.addr,
        24 * MIB as u64,
        AfterBudget::Pause(Duration::from_secs(2)),
    );
    let mut child = spawn_ftget(&env.work, &[&relay.target(), "big.bin", "--json"]);
    let partial = env.work.join("big.bin.part");
    assert!(wait_until(Duration::from_secs(60), || {
        fs::metadata(&partial).is_ok_and(|m| m.len() > 16 * MIB as u64)
    }));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(env.root.join("big.bin"))
        .unwrap();
    std::io::Write::write_all(&mut file, &second).unwrap();
    drop(file);

    let output = env.work.join("big.bin");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if output.exists() {
            let got = fs::read(&output).unwrap();
            assert!(
                got == first || got == second,
                "a mixed file took the final name"
            );
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(POLL);
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        fs::read(&output).unwrap() == second,
        "the new version, whole"
    );
}
