//! Serving a bucket: ftserve in front of a real three-node Garage cluster
//! (started by `scripts/garage-cluster`), and two ftserve behind HAProxy.
//! Files and trees come verified; a download resumes after a kill, through
//! a stopped Garage node, and through the other instance when one dies; an
//! object replaced between runs is never spliced; hostile object names are
//! neither served nor written outside; wrong credentials stop ftserve at
//! start. Digests are computed once and kept in the bucket, for every
//! instance.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ft_protocol::{Request, Response, CHUNK_SIZE};
use ft_tests::{
    bin, finish_run, ftget, sha256_hex, signal, spawn_ftget, state_dir, tree_contents,
    wait_bounded, wait_until, AfterBudget, Garage, Haproxy, OutputWithin, Raw, Relay, Run, Server,
    TestEnv,
};
use nix::sys::signal::Signal;

/// Large enough for several chunks and a few seconds through a capped relay.
const BIG: usize = 48 * 1024 * 1024;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    data
}

/// ftserve serving `root` of the cluster's store, with the store's
/// credentials and endpoints in its environment.
fn serve(garage: &Garage, root: &Path, extra: &[&str]) -> Server {
    let env = garage.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with_env(root, extra, &env)
}

/// What a fresh connection's `Stat` says of `path`: its digest, if the
/// server knows it.
fn stat_sha256(server: &Server, path: &str) -> Option<String> {
    let mut raw = Raw::greeted(server.addr);
    raw.send(&Request::Stat { path: path.into() });
    match raw.recv() {
        Some(Response::Meta(meta)) => meta.sha256.map(|digest| hex(&digest)),
        other => panic!("Stat {path}: {other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts ftget on `name` through `target` and kills it once more than
/// `past` bytes sit in its partial; the partial stays for a resume.
fn kill_download_past(env: &TestEnv, target: &str, name: &str, past: u64) {
    let mut child = spawn_ftget(&env.work, &[target, name, "-q"]);
    let partial = env.work.join(format!("{name}.part"));
    let grew = wait_until(Duration::from_secs(60), || {
        fs::metadata(&partial).is_ok_and(|m| m.len() > past)
    });
    signal(child.id(), Signal::SIGKILL);
    wait_bounded(&mut child, Duration::from_secs(10)).expect("ftget exits");
    assert!(grew, "the partial never passed {past} bytes");
    assert!(!env.work.join(name).exists(), "no final file yet");
}

/// Downloads `big.bin` through `via`, at 12 MiB/s, doing `midway` once
/// its partial has grown past 8 MiB and before it is done (ranges write
/// from the top of the file, so that comes early): the run to its end.
fn download_big_midway(env: &TestEnv, via: std::net::SocketAddr, midway: impl FnOnce()) -> Run {
    let relay = Relay::shared_cap(via, 12 << 20);
    let target = relay.target();
    let args = [target.as_str(), "big.bin", "--json"];
    let child = spawn_ftget(&env.work, &args);
    let partial = env.work.join("big.bin.part");
    let reached = wait_until(Duration::from_secs(60), || {
        fs::metadata(&partial).is_ok_and(|m| m.len() > 8 << 20)
    });
    let unfinished = !env.work.join("big.bin").exists();
    midway();
    let run = finish_run(child, &args);
    assert!(
        reached && unfinished,
        "the download never got midway: {run:?}"
    );
    run
}

#[test]
fn a_file_and_a_tree_come_verified_and_digests_are_kept_for_every_instance() {
    let garage = Garage::start();
    let env = TestEnv::new();
    let big = random(BIG + 12_345, 1);
    garage.put("data/big.bin", &big);
    garage.put("data/tree/a/b.txt", b"deep\n");
    let tree_bin = random(5 * 1024 * 1024, 2);
    garage.put("data/tree/c.bin", &tree_bin);
    garage.put("data/tree/empty", b"");
    garage.put("secret/outside.txt", b"not served\n");
    let server = serve(&garage, &garage.root("data"), &[]);
    assert!(
        server
            .banner()
            .contains(&format!("serving s3://{}/data", garage.bucket)),
        "{}",
        server.banner()
    );
    assert_eq!(stat_sha256(&server, "big.bin"), None, "cold at first");

    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["sha256"], sha256_hex(&big));
    assert!(fs::read(env.work.join("big.bin")).expect("big.bin") == big);

    let run = ftget(&env.work, &[&server.target(), "-r", "tree"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let got = tree_contents(&env.work.join("tree"));
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(names, ["a/", "a/b.txt", "c.bin", "empty"], "{got:?}");
    assert_eq!(got["a/b.txt"], sha256_hex(b"deep\n"));
    assert_eq!(got["c.bin"], sha256_hex(&tree_bin));
    assert_eq!(got["empty"], sha256_hex(b""));

    // Nothing outside the prefix: not listed, not served.
    let run = ftget(&env.work, &[&server.target(), "--list", "-r", "."]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!run.stdout.contains("outside"), "{}", run.stdout);
    assert!(!run.stdout.contains(".ftserve-digests"), "{}", run.stdout);
    let run = ftget(&env.work, &[&server.target(), "../secret/outside.txt"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(!env.work.join("outside.txt").exists());

    // The first download hashed big.bin as it sent it and kept the digests
    // in the bucket: a new instance, which never read it, knows them.
    let fresh = serve(&garage, &garage.root("data"), &[]);
    let known = wait_until(Duration::from_secs(10), || {
        stat_sha256(&fresh, "big.bin") == Some(sha256_hex(&big))
    });
    assert!(known, "a second instance does not find the kept digests");
    let again = TestEnv::new();
    let run = ftget(&again.work, &[&fresh.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["sha256"], sha256_hex(&big));
    // The hidden folder is no path a client can name.
    let run = ftget(
        &again.work,
        &[&fresh.target(), "--list", ".ftserve-digests"],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
}

#[test]
fn a_killed_download_resumes_and_a_replaced_object_is_never_spliced() {
    let garage = Garage::start();
    let env = TestEnv::new();
    let first = random(BIG, 3);
    garage.put("data/big.bin", &first);
    let server = serve(&garage, &garage.root("data"), &[]);

    // Killed midway, then resumed from the last verified chunk.
    let relay = Relay::start(server.addr, 24 << 20, AfterBudget::Stall);
    kill_download_past(&env, &relay.target(), "big.bin", 16 << 20);
    drop(relay);
    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let resumed = run.field("resumed_from");
    assert!(resumed > 0 && resumed.is_multiple_of(CHUNK_SIZE), "{run:?}");
    assert!(fs::read(env.work.join("big.bin")).expect("big.bin") == first);

    // Killed midway again, then the object replaced by another of the same
    // size: the rest never comes from the new one on top of the old.
    fs::remove_file(env.work.join("big.bin")).expect("rm");
    let relay = Relay::start(server.addr, 24 << 20, AfterBudget::Stall);
    kill_download_past(&env, &relay.target(), "big.bin", 16 << 20);
    drop(relay);
    let second = random(BIG, 4);
    garage.put("data/big.bin", &second);
    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["sha256"], sha256_hex(&second), "{run:?}");
    assert!(
        fs::read(env.work.join("big.bin")).expect("big.bin") == second,
        "spliced: resumed from {}",
        run.field("resumed_from")
    );
}

#[test]
fn a_garage_node_stopped_mid_download_does_not_stop_it() {
    let garage = Garage::start();
    let env = TestEnv::new();
    let data = random(BIG, 5);
    garage.put("data/big.bin", &data);
    // Node 1 is the first endpoint ftserve asks.
    let server = serve(&garage, &garage.root("data"), &[]);
    let run = download_big_midway(&env, server.addr, || garage.node_stop(1));
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert!(fs::read(env.work.join("big.bin")).expect("big.bin") == data);
    let logs = server.logs();
    assert!(
        logs.contains("broke off") || logs.contains("did not answer"),
        "ftserve never noticed the node go: {logs}"
    );
}

#[test]
fn one_of_two_instances_killed_mid_download_the_client_goes_on_through_the_other() {
    let garage = Garage::start();
    let env = TestEnv::new();
    let data = random(BIG, 6);
    garage.put("data/big.bin", &data);
    let mut first = serve(&garage, &garage.root("data"), &[]);
    let second = serve(&garage, &garage.root("data"), &[]);
    let balancer = Haproxy::start(&[first.addr, second.addr]);
    let run = download_big_midway(&env, balancer.addr, || {
        assert!(first.is_running());
        first.stop(Signal::SIGKILL, Duration::from_secs(10));
    });
    assert_eq!(run.code, Some(0), "{run:?}\n{}", second.logs());
    assert_eq!(run.json()["sha256"], sha256_hex(&data));
    assert!(fs::read(env.work.join("big.bin")).expect("big.bin") == data);
    assert!(
        second.logs().contains("path=\"big.bin\""),
        "the other instance served none of it: {}",
        second.logs()
    );
}

#[test]
fn hostile_object_names_are_neither_served_outside_the_prefix_nor_written_outside() {
    let garage = Garage::start();
    let env = TestEnv::new();
    garage.put("data/ok.txt", b"fine\n");
    garage.put("data/../escaped.txt", b"outside the prefix\n");
    garage.put("data/sub/../../up.txt", b"two up\n");
    garage.put("data//empty-part", b"an empty name\n");
    garage.put("data/ctl%1B%5B31mred", b"escape in the name\n");
    garage.put("../above.txt", b"above the bucket's root\n");
    let server = serve(&garage, &garage.root("data"), &[]);
    let inside = env.work.join("inside");
    fs::create_dir(&inside).expect("mkdir");

    let run = ftget(&inside, &[&server.target(), "--list", "-r", "."]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("ok.txt"), "{}", run.stdout);
    assert!(
        run.stdout.contains("ctl\\x1b[31mred") && !run.stdout.contains('\u{1b}'),
        "the name is shown escaped: {:?}",
        run.stdout
    );
    for hidden in ["escaped", "up.txt", "above", "empty-part"] {
        assert!(!run.stdout.contains(hidden), "{hidden}: {}", run.stdout);
    }

    let run = ftget(&inside, &[&server.target(), "-r", "."]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("left out"), "{}", run.stderr);
    assert_eq!(
        fs::read_dir(&env.work).expect("work").count(),
        1,
        "only the output folder is in work"
    );
    let got = tree_contents(&inside);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    // `sub` is listed (a key lies below it), and empty: its one key is
    // `sub/../../up.txt`, left out.
    assert_eq!(names, ["ctl\u{1b}[31mred", "ok.txt", "sub/"], "{got:?}");

    for path in ["../escaped.txt", "sub/../../up.txt", "../../above.txt"] {
        let run = ftget(&inside, &[&server.target(), path]);
        assert_ne!(run.code, Some(0), "{path}: {run:?}");
    }
    assert_eq!(fs::read_dir(&env.work).expect("work").count(), 1);
    assert_eq!(tree_contents(&inside).len(), 3);
}

#[test]
fn wrong_credentials_or_bucket_stop_ftserve_at_start_with_a_clear_error() {
    let garage = Garage::start();
    let wrong = "wrong-secret-that-must-never-be-shown";
    let cases = [
        (
            garage.root("data"),
            garage.env_with_secret(wrong),
            "refused the credentials",
        ),
        (
            std::path::PathBuf::from("s3://no-such-bucket-here/data"),
            garage.env(),
            "no-such-bucket-here",
        ),
    ];
    for (root, env, says) in cases {
        let output = Command::new(bin("ftserve"))
            .env("FTSERVE_STATE_DIR", state_dir())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["--listen", "127.0.0.1:0"])
            .arg(&root)
            .stdin(Stdio::null())
            .output_within(Duration::from_secs(60))
            .expect("ftserve runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{root:?}: {stderr}");
        assert!(!stdout.contains("listening on"), "{stdout}");
        assert!(stderr.contains(says), "{root:?}: {stderr}");
        for secret in [wrong, garage.secret()] {
            assert!(!stderr.contains(secret) && !stdout.contains(secret));
        }
    }
    // A bucket is served read-only.
    let env = garage.env();
    let output = Command::new(bin("ftserve"))
        .env("FTSERVE_STATE_DIR", state_dir())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--listen", "127.0.0.1:0", "--allow-upload", "--token-file"])
        .arg(state_dir().join("no-tokens"))
        .arg(garage.root("data"))
        .output_within(Duration::from_secs(60))
        .expect("ftserve runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
}
