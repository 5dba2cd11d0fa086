//! One file over several connections, end to end on loopback: a relay that
//! caps each connection's rate makes ftget add range connections beside
//! its `Get` (and one that caps them all together makes it give the extra
//! one back), and then one of them is cut, a chunk comes corrupted, the
//! connection that asked for the states is lost before they come, the
//! client is killed and resumed with holes in its partial, the file is
//! replaced under it, or the server lies in one range. Whatever happens,
//! the final name holds the server's file byte for byte, or nothing.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ft_protocol::CHUNK_SIZE;
use ft_tests::{
    finish_run, ftget, read_pipe, sha256_hex, spawn_ftget, wait_bounded, wait_until, Altered,
    MisbehavingServer, Misbehaviour, Relay, Reply, Server, TestEnv,
};
use nix::sys::signal::Signal;

const MIB: u64 = 1024 * 1024;

/// What the capped relays let each connection carry: slow enough that
/// ftget adds connections within its first seconds, fast enough that a
/// test is over in a few.
const PER_CONNECTION: u64 = 8 * MIB;

/// The file most tests fetch: 16 chunks, about 8 s over one capped
/// connection.
const SIZE: u64 = 64 * MIB;

/// The longest a test waits for a download to reach a state it watches for.
const WATCH: Duration = Duration::from_secs(30);

/// Runs the tests of this file one at a time: they measure nothing, but
/// ftget's choice of connections follows the throughput it sees, which
/// other tests loading the two cores of a CI machine would disturb.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that failed holding it leaves nothing to repair.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The index of the last chunk of a file of `size` bytes.
fn last_chunk(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE) - 1
}

/// The bytes of chunk `k` of `data`.
fn chunk(data: &[u8], k: u64) -> &[u8] {
    let start = (k * CHUNK_SIZE) as usize;
    &data[start..(start + CHUNK_SIZE as usize).min(data.len())]
}

/// The value of `key=` in a log line, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(' ').next()
}

/// The client address (one per connection) of each range ftserve's log
/// says it served, in the order it logged them.
fn ranges_logged(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|line| line.contains("op=\"range\""))
        .map(|line| field(line, "client").expect("client=").to_owned())
        .collect()
}

/// The connections ftserve served ranges on.
fn range_connections(logs: &str) -> BTreeSet<String> {
    ranges_logged(logs).into_iter().collect()
}

/// The chunk runs the sidecar `NAME.part.json` in `dir` records, if it is
/// there and records any.
fn recorded_runs(dir: &Path, name: &str) -> Option<Vec<[u64; 2]>> {
    let text = fs::read(dir.join(format!("{name}.part.json"))).ok()?;
    let sidecar: serde_json::Value = serde_json::from_slice(&text).ok()?;
    serde_json::from_value(sidecar.get("chunks")?.clone()).ok()
}

/// Whether `runs` leave a hole: a chunk missing below one recorded.
fn has_hole(runs: &[[u64; 2]]) -> bool {
    runs.first().is_some_and(|first| first[0] > 0) || runs.len() > 1
}

/// Writes `data` to `root/name` as a new file with a new modification
/// time, by a rename: a reader that has the old file open keeps reading
/// the old bytes, as on any server whose files are replaced whole.
fn replace(root: &Path, name: &str, data: &[u8]) {
    let next = root.join(".next");
    fs::write(&next, data).unwrap();
    let file = fs::File::options().write(true).open(&next).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(file);
    fs::rename(next, root.join(name)).unwrap();
}

/// Asserts that `dir` holds `name` with exactly `want`, and nothing else.
fn assert_exact(dir: &Path, name: &str, want: &[u8]) {
    let got = fs::read(dir.join(name)).expect("the final file");
    assert!(got == want, "{name} is not the server's file byte for byte");
    let listing: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listing, [name], "the partial and its sidecar are gone");
}

/// Asserts that ftget ended with a verification error and left no final
/// file: the partial stays for a later run.
fn assert_refused_as_unverified(run: &ft_tests::Run, dir: &Path, name: &str) {
    assert_eq!(run.code, Some(4), "{run:?}");
    assert!(run.stderr.contains("verification failed"), "{}", run.stderr);
    assert!(!dir.join(name).exists(), "an unverified final file");
    assert!(dir.join(format!("{name}.part")).exists(), "the partial");
}

#[test]
fn with_each_connection_capped_ftget_adds_connections() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE as usize, 140);
    let server = Server::start(&env.root, &[]);
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let started = Instant::now();
    let run = ftget(&env.work, &[&relay.target(), "big.bin", "--json"]);
    let took = started.elapsed();
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["sha256"], sha256_hex(&data));
    assert_eq!(run.field("bytes_received"), SIZE, "each byte once");
    assert_exact(&env.work, "big.bin", &data);
    let peak = relay.peak_connections();
    let logs = server.logs();
    let ranged = range_connections(&logs);
    eprintln!(
        "figures: capped at {} MiB/s a connection: {} connections, {peak} at once, ranges on {}, {took:?}",
        PER_CONNECTION / MIB,
        relay.connections(),
        ranged.len()
    );
    // One connection alone would take 8 s; each step up paid off, so
    // ftget kept stepping: from 1 to 2, then to 4.
    assert!(peak >= 3, "at most {peak} connections at once");
    assert!(ranged.len() >= 2, "ranges on {ranged:?}; log:\n{logs}");
}

#[test]
fn with_one_cap_shared_by_all_ftget_gives_back_the_connection_it_tried() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    // 48 MiB/s: the controller's half-second windows then hold 24 MiB,
    // so that counting whole 1 MiB frames cannot pass for the 15 % gain it
    // looks for. 160 MiB: ftget is still at it when the probe is measured
    // and a next step would be worth taking.
    let (size, rate) = (160 * MIB, 48 * MIB);
    let data = env.random_file("big.bin", size as usize, 141);
    let server = Server::start(&env.root, &[]);
    let relay = Relay::shared_cap(server.addr, rate);
    let started = Instant::now();
    let run = ftget(&env.work, &[&relay.target(), "big.bin", "--json"]);
    let took = started.elapsed();
    assert_eq!(run.code, Some(0), "{run:?}");
    // The connection given back stops at once: what it had of its two
    // ranges in flight is fetched again by the first stream.
    let received = run.field("bytes_received");
    assert!(
        (size..=size + 2 * CHUNK_SIZE).contains(&received),
        "{received} bytes received for {size}"
    );
    assert_exact(&env.work, "big.bin", &data);
    let peak = relay.peak_connections();
    let logs = server.logs();
    let ranged = range_connections(&logs);
    eprintln!(
        "figures: {} MiB/s shared: {} connections, {peak} at once, ranges on {}, {took:?}",
        rate / MIB,
        relay.connections(),
        ranged.len()
    );
    // The one step it may try (a second connection) brings nothing, so it
    // is given back and no other follows.
    assert!(peak <= 2, "{peak} connections at once");
    assert!(ranged.len() <= 1, "ranges on {ranged:?}");
}

#[test]
fn a_range_connection_cut_midway_leaves_its_chunks_to_the_others() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let size = 80 * MIB;
    let data = env.random_file("big.bin", size as usize, 142);
    let server = Server::start(&env.root, &[]);
    // The first connection is the `Get`, the second the first range
    // worker's; the third comes with the second step up, and is cut 6 MiB
    // in: one chunk whole, the next half-way.
    let relay = Relay::capped_cutting(server.addr, PER_CONNECTION, 3, 6 * MIB);
    let run = ftget(&env.work, &[&relay.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["sha256"], sha256_hex(&data));
    assert_eq!(relay.budgets_spent(), 1, "the third connection was cut");
    assert!(relay.connections() > 3, "others went on beside it");
    // The half of a chunk that came before the cut is fetched again whole.
    let received = run.field("bytes_received");
    assert!(
        received > size && received < size + CHUNK_SIZE,
        "received {received} of {size}"
    );
    assert_exact(&env.work, "big.bin", &data);
}

#[test]
fn the_gets_connection_cut_midway_leaves_the_rest_to_the_ranges() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE as usize, 150);
    let server = Server::start(&env.root, &[]);
    // The first connection is the `Get`'s: cut 20 MiB in, by when range
    // workers run beside it (they start after a second, 8 MiB in).
    let relay = Relay::capped_cutting(server.addr, PER_CONNECTION, 1, 20 * MIB);
    let run = ftget(&env.work, &[&relay.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(relay.budgets_spent(), 1, "the `Get` was cut");
    // What the `Get` brought of the chunk it was in is fetched again whole.
    let received = run.field("bytes_received");
    assert!(
        received > SIZE && received < SIZE + CHUNK_SIZE,
        "received {received} of {SIZE}"
    );
    assert_exact(&env.work, "big.bin", &data);
}

#[test]
fn a_chunk_corrupted_on_one_range_is_fetched_again() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let mut data = vec![0u8; SIZE as usize];
    fastrand::Rng::with_seed(143).fill(&mut data);
    // The top chunk: the first a range worker takes.
    let bad = last_chunk(SIZE);
    let server = MisbehavingServer::start_concurrent(
        data.clone(),
        Misbehaviour::Corrupt {
            chunk: bad,
            times: 1,
        },
    );
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let run = ftget(&env.work, &[&relay.target(), "f.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let altered = server.altered();
    assert_eq!(
        altered
            .iter()
            .map(|a| (a.reply, a.chunk))
            .collect::<Vec<_>>(),
        [(Reply::Range, bad)],
        "corrupted once, in a range"
    );
    let fetched = server
        .served()
        .iter()
        .filter(|s| s.reply == Reply::Range && s.offset == bad * CHUNK_SIZE)
        .count();
    assert_eq!(fetched, 2, "the bad chunk was asked for again, once");
    assert_eq!(run.field("bytes_received"), SIZE + CHUNK_SIZE);
    assert_exact(&env.work, "f.bin", &data);
}

#[test]
fn a_chunk_corrupted_twice_on_ranges_ends_in_exit_4_without_a_final_file() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let data = vec![0x5au8; SIZE as usize];
    let bad = last_chunk(SIZE);
    let server = MisbehavingServer::start_concurrent(
        data,
        Misbehaviour::Corrupt {
            chunk: bad,
            times: 2,
        },
    );
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let run = ftget(&env.work, &[&relay.target(), "f.bin"]);
    assert_refused_as_unverified(&run, &env.work, "f.bin");
    let altered: Vec<Altered> = server.altered();
    assert_eq!(altered.len(), 2, "{altered:?}");
    assert!(
        altered
            .iter()
            .all(|a| a.reply == Reply::Range && a.chunk == bad),
        "{altered:?}"
    );
}

#[test]
fn a_server_that_lies_in_one_range_only_is_never_believed() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let mut data = vec![0u8; SIZE as usize];
    fastrand::Rng::with_seed(144).fill(&mut data);
    // The second chunk from the top: the first range worker's second
    // range, which lands after the states it is checked against.
    let lie = last_chunk(SIZE) - 1;
    let server = MisbehavingServer::start_concurrent(
        data,
        Misbehaviour::LieInRange {
            chunk: lie,
            times: usize::MAX,
        },
    );
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let run = ftget(&env.work, &[&relay.target(), "f.bin"]);
    assert_refused_as_unverified(&run, &env.work, "f.bin");
    assert!(
        run.stderr
            .contains(&format!("at byte {}", lie * CHUNK_SIZE)),
        "the error names where: {}",
        run.stderr
    );
    // Asked twice, lied to twice: then ftget stops asking.
    let lies = server.altered();
    assert_eq!(lies.len(), 2, "{lies:?}");
    assert!(lies.iter().all(|a| a.chunk == lie), "{lies:?}");
}

#[test]
fn a_range_that_lied_once_is_fetched_again_and_the_file_is_exact() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let mut data = vec![0u8; SIZE as usize];
    fastrand::Rng::with_seed(145).fill(&mut data);
    let lie = last_chunk(SIZE) - 1;
    let server = MisbehavingServer::start_concurrent(
        data.clone(),
        Misbehaviour::LieInRange {
            chunk: lie,
            times: 1,
        },
    );
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let run = ftget(&env.work, &[&relay.target(), "f.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(server.altered().len(), 1, "the lie was told");
    assert_eq!(run.field("bytes_received"), SIZE + CHUNK_SIZE);
    assert_exact(&env.work, "f.bin", &data);
}

#[test]
fn chunks_that_landed_before_the_states_are_checked_though_their_connection_was_lost() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let size = 32 * MIB;
    let mut data = vec![0u8; size as usize];
    fastrand::Rng::with_seed(151).fill(&mut data);
    // The first range worker asks for its first chunk, then the states:
    // the chunk lands, and the connection is lost before the states come.
    let server = MisbehavingServer::start_concurrent(
        data.clone(),
        Misbehaviour::HangUpOnCheckpoints { times: 1 },
    );
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let mut child = spawn_ftget(&env.work, &[&relay.target(), "f.bin"]);
    // About 4 s at 8 MiB/s; a hang shows as a run killed at the limit.
    let limit = Duration::from_secs(15);
    let status = wait_bounded(&mut child, limit);
    let stderr = child.stderr.take().map(read_pipe).unwrap_or_default();
    let Some(status) = status else {
        let partial = fs::read(env.work.join("f.bin.part")).unwrap_or_default();
        panic!(
            "ftget did not finish within {limit:?}, though its partial held the file byte for \
             byte: {}; the server had sent {:?}; stderr: {stderr}",
            partial == data,
            server.served(),
        );
    };
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_exact(&env.work, "f.bin", &data);
}

#[test]
fn a_killed_download_resumes_fetching_only_its_holes() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    let data = env.random_file("big.bin", SIZE as usize, 146);
    let server = Server::start(&env.root, &[]);
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let mut child = spawn_ftget(&env.work, &[&relay.target(), "big.bin", "-q"]);
    // Ranges come from the top, the `Get` from the bottom: once a range
    // chunk is recorded, the partial has a hole.
    let holed = wait_until(WATCH, || {
        recorded_runs(&env.work, "big.bin").is_some_and(|runs| has_hole(&runs))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_bounded(&mut child, Duration::from_secs(10)).expect("killed");
    assert!(holed, "no hole was ever recorded");
    assert!(!env.work.join("big.bin").exists());

    // What a resume may keep: each recorded chunk that is whole on disk
    // and right (the last ones the `Get` wrote may not be yet).
    let runs = recorded_runs(&env.work, "big.bin").expect("runs");
    let partial = fs::read(env.work.join("big.bin.part")).unwrap();
    let recorded: Vec<u64> = runs.iter().flat_map(|&[a, b]| a..b).collect();
    let keep: u64 = recorded
        .iter()
        .map(|&k| chunk(&data, k))
        .zip(&recorded)
        .filter(|(want, &k)| {
            let start = (k * CHUNK_SIZE) as usize;
            partial.get(start..start + want.len()) == Some(*want)
        })
        .map(|(want, _)| want.len() as u64)
        .sum();
    eprintln!("figures: killed with {runs:?} recorded, {keep} bytes good");
    assert!(keep > 0 && keep < SIZE, "{keep} of {SIZE} to keep");

    let run = ftget(&env.work, &[&server.target(), "big.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.field("resumed_from"), keep, "{runs:?}");
    assert_eq!(run.field("bytes_received"), SIZE - keep, "only the holes");
    assert_exact(&env.work, "big.bin", &data);
}

#[test]
fn a_resume_checks_exactly_the_recorded_chunks_and_fetches_the_rest() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    // Seven chunks, the last one short.
    let size = 6 * CHUNK_SIZE + 12_345;
    let data = env.random_file("f.bin", size as usize, 147);
    let server = Server::start(&env.root, &[]);
    // On disk: chunks 0, 1, 3, 4 and 5 right, but for a byte of 4; 2 and
    // 6 zeros. Recorded: 0, 1, 4 and 5. Chunk 3 is right but not recorded,
    // so not trusted; chunk 4 is recorded but wrong.
    let mut partial = vec![0u8; size as usize];
    for k in [0, 1, 3, 4, 5] {
        let start = (k * CHUNK_SIZE) as usize;
        let bytes = chunk(&data, k);
        partial[start..start + bytes.len()].copy_from_slice(bytes);
    }
    partial[(4 * CHUNK_SIZE + 777) as usize] ^= 0x01;
    fs::write(env.work.join("f.bin.part"), &partial).unwrap();
    let meta = fs::metadata(env.root.join("f.bin")).unwrap();
    let sidecar = serde_json::json!({
        "kind": "ftget partial download", "format": 2, "output": "f.bin",
        "server": server.target(), "remote": "f.bin", "size": size,
        "mtime_secs": meta.mtime(), "mtime_nanos": meta.mtime_nsec(), "sha256": null,
        "chunks": [[0, 2], [4, 6]],
    });
    fs::write(env.work.join("f.bin.part.json"), sidecar.to_string()).unwrap();

    let run = ftget(&env.work, &[&server.target(), "f.bin", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let kept = 3 * CHUNK_SIZE;
    assert_eq!(run.field("resumed_from"), kept, "chunks 0, 1 and 5");
    assert_eq!(
        run.field("bytes_received"),
        size - kept,
        "chunks 2, 3, 4 and 6"
    );
    assert_exact(&env.work, "f.bin", &data);
}

#[test]
fn a_file_replaced_while_its_ranges_run_is_fetched_anew_never_spliced() {
    let _serial = one_at_a_time();
    let env = TestEnv::new();
    env.random_file("big.bin", SIZE as usize, 148);
    let server = Server::start(&env.root, &[]);
    let relay = Relay::capped(server.addr, PER_CONNECTION);
    let child = spawn_ftget(&env.work, &[&relay.target(), "big.bin", "--json"]);
    let args = [relay.target(), "big.bin".into(), "--json".into()];
    // Replaced once a range has come: the `Get` is half-way, the ranges
    // have the top of the old file.
    let ranged = wait_until(WATCH, || !ranges_logged(&server.logs()).is_empty());
    let mut fresh = vec![0u8; SIZE as usize];
    fastrand::Rng::with_seed(149).fill(&mut fresh);
    replace(&env.root, "big.bin", &fresh);
    let run = finish_run(child, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ranged, "no range was served");
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["sha256"], sha256_hex(&fresh));
    assert_eq!(run.field("resumed_from"), 0, "nothing of the old file kept");
    assert!(
        run.field("bytes_received") > SIZE,
        "the new file came whole, after some of the old"
    );
    assert_exact(&env.work, "big.bin", &fresh);
}
