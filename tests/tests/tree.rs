//! Folders: listing, recursive downloads, several paths at once, re-runs
//! that fetch only what changed, and servers that lie about paths.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use ft_tests::{
    ftget, signal, spawn_ftget, tree_contents, wait_bounded, wait_until, AfterBudget,
    MisbehavingServer, Misbehaviour, Relay, Server, TestEnv, HOSTILE_PATHS,
};
use nix::sys::signal::Signal;

const MIB: usize = 1024 * 1024;

/// A nested tree under `root/tree`: empty folders, empty files, small files,
/// a 20 MiB file, a link inside the root, links out of it and to a folder,
/// and a name that is not UTF-8. Returns what a download must produce: the
/// contents of `tree/` minus what may not leave the server.
fn nested_tree(env: &TestEnv) -> BTreeMap<String, String> {
    let tree = env.root.join("tree");
    env.random_file("tree/big.bin", 20 * MIB, 1);
    env.random_file("tree/a/b/c/deep.txt", 1000, 2);
    for i in 0..30 {
        env.random_file(
            &format!("tree/many/f{i:02}.dat"),
            100 + i * 37,
            3 + i as u64,
        );
    }
    fs::create_dir_all(tree.join("empty/inner-empty")).unwrap();
    fs::write(tree.join("a/zero.bin"), b"").unwrap();
    fs::write(tree.join("info.txt"), b"hello from ft\n").unwrap();
    let mut expected = tree_contents(&tree);
    // A link to a file inside the root arrives as that file.
    std::os::unix::fs::symlink("../info.txt", tree.join("a/inner-link.txt")).unwrap();
    expected.insert("a/inner-link.txt".into(), expected["info.txt"].clone());
    // Left out: links out of the root, a link to a folder, a non-UTF-8 name.
    let outside = env.work.parent().unwrap().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink("../../outside/secret.txt", tree.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), tree.join("abs.txt")).unwrap();
    std::os::unix::fs::symlink("..", tree.join("a/loop")).unwrap();
    fs::write(
        tree.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9.txt")),
        b"x",
    )
    .unwrap();
    expected
}

const LEFT_OUT: u64 = 4;

fn summary(run: &ft_tests::Run) -> serde_json::Value {
    let last = run.json_lines().pop().expect("a summary object");
    assert!(
        last.get("files").is_some(),
        "last object is the summary: {last}"
    );
    last
}

#[test]
fn nested_tree_arrives_identical_and_a_rerun_fetches_only_what_differs() {
    let env = TestEnv::new();
    let expected = nested_tree(&env);
    let server = Server::start(&env.root, &[]);
    let files = expected.values().filter(|v| !v.is_empty()).count() as u64;

    let run = ftget(
        &env.work,
        &["-r", &server.target(), "tree", "-o", "out", "--json"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let out = env.work.join("out/tree");
    assert_eq!(
        tree_contents(&out),
        expected,
        "every file, folder and digest"
    );
    let first = summary(&run);
    assert_eq!(first["files"], files);
    assert_eq!(first["downloaded"], files);
    assert_eq!(first["skipped_by_server"], LEFT_OUT);
    assert_eq!(first["verified"], true);
    assert!(run.stderr.contains("left out 4 entries"), "{}", run.stderr);
    // One object per file with the single-download keys, then the summary.
    let objects = run.json_lines();
    assert_eq!(objects.len() as u64, files + 1);
    assert!(objects[..objects.len() - 1]
        .iter()
        .all(|o| o["verified"] == true && o.as_object().unwrap().len() == 8));

    // Unchanged: nothing crosses the network, and the summary says so.
    let again = ftget(
        &env.work,
        &["-r", &server.target(), "tree", "-o", "out", "--json"],
    );
    assert_eq!(again.code, Some(0), "{again:?}");
    let second = summary(&again);
    assert_eq!(second["downloaded"], 0);
    assert_eq!(second["up_to_date"], files);
    assert_eq!(second["bytes_received"], 0);
    assert!(again.stderr.contains("0 downloaded"), "{}", again.stderr);

    // Two local files altered (same size), one removed: only those three
    // return. The big one is checked chunk by chunk against the server's
    // checkpoints; its change is in the middle chunk.
    for (tampered, at) in [("many/f03.dat", 0), ("big.bin", 10 * MIB + 5)] {
        let tampered = out.join(tampered);
        let mut data = fs::read(&tampered).unwrap();
        data[at] ^= 1;
        fs::write(&tampered, &data).unwrap();
    }
    fs::remove_file(out.join("a/b/c/deep.txt")).unwrap();
    let third = ftget(
        &env.work,
        &["-r", &server.target(), "tree", "-o", "out", "--json"],
    );
    assert_eq!(third.code, Some(0), "{third:?}");
    assert_eq!(summary(&third)["downloaded"], 3);
    assert_eq!(tree_contents(&out), expected);
}

#[test]
fn interrupted_tree_resumes_and_fetches_only_the_rest() {
    let env = TestEnv::new();
    env.random_file("set/a.bin", 24 * MIB, 21);
    env.random_file("set/b.bin", 24 * MIB, 22);
    for i in 0..20 {
        env.random_file(&format!("set/small/{i}.txt"), 500, 30 + i);
    }
    let expected = tree_contents(&env.root.join("set"));
    let server = Server::start(&env.root, &[]);

    // One connection, so files go in listing order: a.bin whole, then b.bin
    // until the relay stalls 40 MiB in.
    let relay = Relay::start(server.addr, 40 * MIB as u64, AfterBudget::Stall);
    let target = relay.target();
    let mut child = spawn_ftget(
        &env.work,
        &["-r", &target, "set", "--connections", "1", "-q"],
    );
    let partial = env.work.join("set/b.bin.part");
    let grew = wait_until(Duration::from_secs(60), || {
        fs::metadata(&partial).is_ok_and(|m| m.len() > 8 * MIB as u64)
    });
    signal(child.id(), Signal::SIGKILL);
    wait_bounded(&mut child, Duration::from_secs(10)).expect("ftget exits");
    assert!(grew, "b.bin's partial never passed 8 MiB");
    assert!(env.work.join("set/a.bin").exists(), "a.bin finished first");
    assert!(!env.work.join("set/b.bin").exists(), "b.bin is unfinished");

    let run = ftget(&env.work, &["-r", &server.target(), "set", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(tree_contents(&env.work.join("set")), expected);
    let objects = run.json_lines();
    let report = |name: &str| {
        objects
            .iter()
            .find(|o| o["path"] == format!("set/{name}"))
            .unwrap_or_else(|| panic!("a report for {name}"))
            .clone()
    };
    assert_eq!(report("a.bin")["bytes_received"], 0, "a.bin was up to date");
    let b = report("b.bin");
    assert!(b["resumed_from"].as_u64().unwrap() >= 8 * MIB as u64, "{b}");
    let received = summary(&run)["bytes_received"].as_u64().unwrap();
    assert!(
        received <= (24 * MIB - 8 * MIB + 20 * 500) as u64,
        "only the rest crossed the network: {received}"
    );
}

#[test]
fn several_paths_in_one_call_and_each_failure_reported() {
    let env = TestEnv::new();
    env.random_file("a.txt", 10, 1);
    env.random_file("b.bin", 6 * MIB, 2);
    env.random_file("docs/guide.txt", 300, 3);
    env.random_file("docs/img/logo.png", 5000, 4);
    let server = Server::start(&env.root, &[]);

    let run = ftget(
        &env.work,
        &[
            &server.target(),
            "a.txt",
            "b.bin",
            "docs/",
            "-r",
            "-o",
            "dl",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let got = tree_contents(&env.work.join("dl"));
    let want: Vec<&str> = vec![
        "a.txt",
        "b.bin",
        "docs/",
        "docs/guide.txt",
        "docs/img/",
        "docs/img/logo.png",
    ];
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), want);
    assert_eq!(got["b.bin"], tree_contents(&env.root)["b.bin"]);

    // Without -r a folder is refused, a missing file too; the rest arrive,
    // and the exit code is the worst: 3, refused.
    let run = ftget(
        &env.work,
        &[
            &server.target(),
            "a.txt",
            "missing.txt",
            "docs",
            "b.bin",
            "-o",
            "two",
        ],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(env.work.join("two/a.txt").is_file() && env.work.join("two/b.bin").is_file());
    assert!(!env.work.join("two/docs").exists());
    assert!(
        run.stderr.contains("missing.txt") && run.stderr.contains("docs"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("2 failed"), "{}", run.stderr);
}

#[test]
fn hostile_listing_writes_nothing_outside_the_output_folder() {
    let env = TestEnv::new();
    let hostile = MisbehavingServer::start(b"hello".to_vec(), Misbehaviour::HostileListing);
    let nested = env.work.join("deep/er");
    fs::create_dir_all(&nested).unwrap();
    let before = tree_contents(env.work.parent().unwrap());

    let run = ftget(
        &nested,
        &["-r", &hostile.target(), "dir", "-o", "out", "--json"],
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(fs::read(nested.join("out/dir/good.txt")).unwrap(), b"hello");
    let after = tree_contents(env.work.parent().unwrap());
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(
        added,
        [
            "work/deep/er/out/",
            "work/deep/er/out/dir/",
            "work/deep/er/out/dir/good.txt"
        ],
        "nothing but the honest file and its folders"
    );
    assert!(!Path::new("/tmp/ft-absolute-escape.txt").exists());
    let refused = HOSTILE_PATHS.len() as u64 - 1;
    assert_eq!(summary(&run)["failed"], refused, "{}", run.stderr);
    assert!(run.stderr.contains("unsafe path"), "{}", run.stderr);
    assert!(run.stderr.contains("listed twice"), "{}", run.stderr);
}

#[test]
fn listing_is_sorted_typed_and_keeps_inside_the_root() {
    let env = TestEnv::new();
    nested_tree(&env);
    let server = Server::start(&env.root, &[]);
    let target = server.target();

    let run = ftget(&env.work, &[&target, "--list", "tree"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let names: Vec<&str> = run
        .stdout
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["a/", "big.bin", "empty/", "info.txt", "many/"]);
    let big = run.stdout.lines().find(|l| l.ends_with("big.bin")).unwrap();
    assert!(big.starts_with('-') && big.contains(" 20971520 "), "{big}");
    let human = ftget(&env.work, &[&target, "--list", "-h", "tree"]);
    assert!(human.stdout.contains("20.00 MiB"), "{}", human.stdout);

    let json = ftget(&env.work, &[&target, "--list", "-r", "--json", "tree"]);
    let entries = json.json_lines();
    let keys: Vec<&String> = entries[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["mtime", "name", "size", "type"]);
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(paths, sorted, "depth first, sorted");
    assert!(paths.contains(&"a/b/c/deep.txt") && paths.contains(&"empty/inner-empty"));
    for hidden in ["leak.txt", "abs.txt", "a/loop"] {
        assert!(!paths.contains(&hidden), "{hidden} listed");
    }
    assert!(
        json.stderr.contains("left out 4 entries"),
        "{}",
        json.stderr
    );

    // The escaping link is refused on Get too; a missing folder is exit 3.
    let leak = ftget(&env.work, &[&target, "tree/leak.txt"]);
    assert_eq!(leak.code, Some(3), "{leak:?}");
    assert!(!env.work.join("leak.txt").exists());
    let missing = ftget(&env.work, &[&target, "--list", "nope"]);
    assert_eq!(missing.code, Some(3), "{missing:?}");
    assert!(missing.stderr.contains("nope"), "{}", missing.stderr);
    // A file lists as itself.
    let file = ftget(&env.work, &[&target, "--list", "tree/info.txt"]);
    assert_eq!(file.stdout.lines().count(), 1, "{}", file.stdout);
    assert!(
        file.stdout.contains(" 14 ") && file.stdout.trim_end().ends_with(" info.txt"),
        "{}",
        file.stdout
    );
}

#[test]
fn a_folder_of_100000_entries_lists_in_bounded_frames() {
    let env = TestEnv::new();
    let big = env.root.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..100_000 {
        fs::File::create(big.join(format!("entry-with-a-longish-name-{i:06}"))).unwrap();
    }
    let server = Server::start(&env.root, &[]);
    let run = ftget(&env.work, &[&server.target(), "--list", "big"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 100_000);
    assert!(lines[0].ends_with("-000000") && lines[99_999].ends_with("-099999"));
}
