//! ftget never writes outside its output folder, nor to a file of the
//! user's: whatever stands where a partial, a sidecar or a folder should be
//! (a link, a hard link, a FIFO) is named in a per-file error and left as
//! it is; names up to 255 bytes download and resume; a server that lists a
//! file and then denies it cannot make ftget remove the user's files.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ft_protocol::CHUNK_SIZE;
use ft_tests::{
    ftget, spawn_ftget, tree_contents, wait_bounded, AfterBudget, MisbehavingServer, Misbehaviour,
    OutputWithin, Relay, Run, Server, TestEnv, LISTED_THEN_GONE,
};

const MIB: usize = 1024 * 1024;

/// A file small enough to go out pipelined with `-r`.
const SMALL: usize = 1000;

/// A file of more than one chunk: it has a sidecar and can resume.
const BIG: usize = 5 * MIB;

/// What the file outside the output folder holds, and must go on holding.
const SECRET: &[u8] = b"the user's own file, outside the output folder";

/// A test's folders: `work/out` to download into, and `outside` beside
/// `work` with the user's `secret.txt` in it.
struct Scene {
    env: TestEnv,
    out: PathBuf,
    outside: PathBuf,
    secret: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let env = TestEnv::new();
        let out = env.work.join("out");
        let outside = env.work.parent().unwrap().join("outside");
        fs::create_dir(&out).unwrap();
        fs::create_dir(&outside).unwrap();
        let secret = outside.join("secret.txt");
        fs::write(&secret, SECRET).unwrap();
        Self {
            env,
            out,
            outside,
            secret,
        }
    }

    /// Runs ftget in the work folder.
    fn ftget(&self, args: &[&str]) -> Run {
        ftget(&self.env.work, args)
    }

    /// The folder outside holds the secret, unchanged, and nothing else.
    fn assert_outside_untouched(&self) {
        let mut expected = std::collections::BTreeMap::new();
        expected.insert("secret.txt".to_owned(), ft_tests::sha256_hex(SECRET));
        assert_eq!(tree_contents(&self.outside), expected, "outside changed");
    }
}

/// The run failed with exit 1 (a local problem) and said `what` of `path`.
fn assert_refused(run: &Run, path: &str, what: &str) {
    assert_eq!(run.code, Some(1), "{run:?}");
    let said = format!("{path}: {what}");
    assert!(
        run.stderr.contains(&said),
        "wanted {said:?} in: {}",
        run.stderr
    );
}

fn mkfifo(path: &std::path::Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .output_within(Duration::from_secs(10))
        .unwrap();
    assert!(made.status.success(), "{made:?}");
}

#[test]
fn a_symlink_at_the_partial_is_not_written_through() {
    let scene = Scene::new();
    // Over 1 MiB, so that `-r` fetches it the careful way, through a partial.
    scene.env.random_file("docs/x.bin", BIG, 1);
    let small = scene.env.random_file("docs/s.bin", SMALL, 11);
    let server = Server::start(&scene.env.root, &[]);

    symlink(&scene.secret, scene.out.join("x.bin.part")).unwrap();
    let run = scene.ftget(&[&server.target(), "docs/x.bin", "-o", "out"]);
    assert_refused(&run, "out/x.bin.part", "is a symbolic link");
    assert!(!scene.out.join("x.bin").exists());
    scene.assert_outside_untouched();

    fs::create_dir(scene.out.join("docs")).unwrap();
    symlink(&scene.secret, scene.out.join("docs/x.bin.part")).unwrap();
    // A small file of a batch is written unnamed and needs no partial: a
    // link at its partial's name is left as it is, never written through.
    symlink(&scene.secret, scene.out.join("docs/s.bin.part")).unwrap();
    let run = scene.ftget(&["-r", &server.target(), "docs", "-o", "out"]);
    assert_refused(&run, "out/docs/x.bin.part", "is a symbolic link");
    assert!(!scene.out.join("docs/x.bin").exists());
    assert_eq!(fs::read(scene.out.join("docs/s.bin")).unwrap(), small);
    assert!(fs::symlink_metadata(scene.out.join("docs/s.bin.part"))
        .unwrap()
        .file_type()
        .is_symlink());
    scene.assert_outside_untouched();
}

#[test]
fn a_symlink_at_the_sidecar_is_not_written_through() {
    let scene = Scene::new();
    scene.env.random_file("big.bin", BIG, 2);
    let server = Server::start(&scene.env.root, &[]);
    symlink(&scene.secret, scene.out.join("big.bin.part.json")).unwrap();
    let run = scene.ftget(&[&server.target(), "big.bin", "-o", "out"]);
    assert_refused(&run, "out/big.bin.part.json", "is a symbolic link");
    assert!(!scene.out.join("big.bin").exists());
    scene.assert_outside_untouched();
}

#[test]
fn a_hard_link_at_the_partial_is_not_written_to() {
    let scene = Scene::new();
    scene.env.random_file("x.bin", SMALL, 3);
    let server = Server::start(&scene.env.root, &[]);
    fs::hard_link(&scene.secret, scene.out.join("x.bin.part")).unwrap();
    let run = scene.ftget(&[&server.target(), "x.bin", "-o", "out"]);
    assert_refused(&run, "out/x.bin.part", "is a file with 2 hard links");
    assert!(!scene.out.join("x.bin").exists());
    scene.assert_outside_untouched();
}

#[test]
fn a_symlinked_subfolder_is_not_followed_by_a_recursive_download() {
    let scene = Scene::new();
    scene.env.random_file("docs/a.txt", SMALL, 4);
    scene.env.random_file("docs/big.bin", BIG, 5);
    scene.env.random_file("docs/sub/c.txt", SMALL, 6);
    let server = Server::start(&scene.env.root, &[]);
    symlink(&scene.outside, scene.out.join("docs")).unwrap();
    let run = scene.ftget(&["-r", &server.target(), "docs", "-o", "out"]);
    assert_refused(&run, "out/docs", "is a symbolic link");
    for file in ["a.txt", "big.bin", "sub/c.txt"] {
        assert!(
            run.stderr.contains(&format!("cannot download docs/{file}")),
            "{file} fails on its own: {}",
            run.stderr
        );
    }
    scene.assert_outside_untouched();
}

#[test]
fn a_fifo_at_the_partial_is_an_error_not_a_hang() {
    let scene = Scene::new();
    // Over 1 MiB, so that `-r` fetches it the careful way, through a partial.
    scene.env.random_file("docs/x.bin", BIG, 7);
    scene.env.random_file("docs/y.bin", SMALL, 8);
    let server = Server::start(&scene.env.root, &[]);
    fs::create_dir(scene.out.join("docs")).unwrap();
    mkfifo(&scene.out.join("docs/x.bin.part"));
    // A small file needs no partial: a FIFO at its partial's name is left.
    mkfifo(&scene.out.join("docs/y.bin.part"));

    let started = Instant::now();
    let mut child = spawn_ftget(
        &scene.env.work,
        &["-r", &server.target(), "docs", "-o", "out"],
    );
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let stderr = child
        .stderr
        .take()
        .map(ft_tests::read_pipe)
        .unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("ftget hung on a FIFO: {stderr}"));
    eprintln!(
        "figures: FIFO at a partial: ftget ended in {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let said = "out/docs/x.bin.part: is a FIFO, not a regular file";
    assert!(stderr.contains(said), "{stderr}");
    assert_eq!(
        fs::read(scene.out.join("docs/y.bin")).unwrap(),
        fs::read(scene.env.root.join("docs/y.bin")).unwrap(),
        "the other file is downloaded"
    );
}

/// A name of `len` bytes.
fn long_name(len: usize, fill: char) -> String {
    format!("{}.bin", fill.to_string().repeat(len - 4))
}

#[test]
fn names_of_up_to_255_bytes_download_and_verify() {
    let scene = Scene::new();
    let names = [long_name(255, 'x'), long_name(250, 'y')];
    for (seed, name) in names.iter().enumerate() {
        scene
            .env
            .random_file(&format!("docs/{name}"), BIG, 10 + seed as u64);
    }
    let server = Server::start(&scene.env.root, &[]);
    let run = scene.ftget(&["-r", &server.target(), "docs", "-o", "out"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        tree_contents(&scene.out.join("docs")),
        tree_contents(&scene.env.root.join("docs")),
        "both arrived whole, and no partial is left"
    );
}

#[test]
fn a_255_byte_name_resumes_after_an_interruption() {
    let scene = Scene::new();
    let name = long_name(255, 'z');
    let data = scene.env.random_file(&name, BIG, 20);
    let server = Server::start(&scene.env.root, &[]);
    // The link drops after the first chunk and its checkpoint.
    let relay = Relay::start(server.addr, (4 * MIB + MIB / 2) as u64, AfterBudget::Cut);
    let run = scene.ftget(&[&relay.target(), &name, "-o", "out", "--retries", "0"]);
    assert_eq!(run.code, Some(5), "{run:?}");
    let left: Vec<String> = fs::read_dir(&scene.out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "a partial and its sidecar: {left:?}");
    assert!(left.iter().all(|n| n.starts_with(".ftget-")), "{left:?}");

    let run = scene.ftget(&[&server.target(), &name, "-o", "out", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.field("resumed_from"), CHUNK_SIZE);
    assert_eq!(run.field("bytes_received"), (BIG as u64) - CHUNK_SIZE);
    assert!(fs::read(scene.out.join(&name)).unwrap() == data);
    let left = fs::read_dir(&scene.out).unwrap().count();
    assert_eq!(left, 1, "the partial and its sidecar are gone");
}

#[test]
fn a_server_that_lists_a_file_then_denies_it_removes_nothing_of_the_users() {
    let scene = Scene::new();
    let server = MisbehavingServer::start(vec![1u8; BIG], Misbehaviour::ListedThenGone);
    let mine = |dir: &std::path::Path| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(format!("{LISTED_THEN_GONE}.part")), b"my draft").unwrap();
        fs::write(
            dir.join(format!("{LISTED_THEN_GONE}.part.json")),
            b"{\"mine\":1}",
        )
        .unwrap();
    };
    let still_mine = |dir: &std::path::Path| {
        let part = fs::read(dir.join(format!("{LISTED_THEN_GONE}.part")));
        let json = fs::read(dir.join(format!("{LISTED_THEN_GONE}.part.json")));
        assert_eq!(part.ok().as_deref(), Some(&b"my draft"[..]), "{dir:?}");
        assert_eq!(json.ok().as_deref(), Some(&b"{\"mine\":1}"[..]), "{dir:?}");
    };

    mine(&scene.env.work);
    let run = scene.ftget(&[&server.target(), LISTED_THEN_GONE]);
    assert_eq!(run.code, Some(3), "{run:?}");
    still_mine(&scene.env.work);

    mine(&scene.out.join("docs"));
    let run = scene.ftget(&["-r", &server.target(), "docs", "-o", "out"]);
    assert_refused(
        &run,
        &format!("out/docs/{LISTED_THEN_GONE}.part"),
        "is not ftget's partial download of this file",
    );
    still_mine(&scene.out.join("docs"));
}

#[test]
fn a_partial_of_ftgets_own_is_removed_once_the_file_is_gone() {
    let scene = Scene::new();
    scene.env.random_file("big.bin", BIG, 30);
    let server = Server::start(&scene.env.root, &[]);
    let relay = Relay::start(server.addr, (4 * MIB + MIB / 2) as u64, AfterBudget::Cut);
    let run = scene.ftget(&[&relay.target(), "big.bin", "--retries", "0"]);
    assert_eq!(run.code, Some(5), "{run:?}");
    assert_eq!(
        scene.env.work_listing(),
        ["big.bin.part", "big.bin.part.json", "out"]
    );

    // Asked again of the same server (the relay passes later connections
    // whole), which no longer has the file.
    fs::remove_file(scene.env.root.join("big.bin")).unwrap();
    let run = scene.ftget(&[&relay.target(), "big.bin"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(
        scene.env.work_listing(),
        ["out"],
        "ftget's own partial is gone"
    );
}
