//! The files of one test: a [`TestEnv`] with a served root and a work
//! folder, and helpers that write and fingerprint files; and the folders
//! every server and client of a test process shares: one server identity
//! ([`state_dir`]) and one client configuration ([`config_home`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// A folder for one test: `root` is served, `work` is where ftget runs.
pub struct TestEnv {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let work = dir.path().join("work");
        std::fs::create_dir(&root).expect("mkdir root");
        std::fs::create_dir(&work).expect("mkdir work");
        Self {
            _dir: dir,
            root,
            work,
        }
    }

    /// Writes `len` pseudo-random bytes (from `seed`) to `root/name`.
    pub fn random_file(&self, name: &str, len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        fastrand::Rng::with_seed(seed).fill(&mut data);
        let path = self.root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, &data).expect("write");
        data
    }

    /// The names in the work folder, sorted.
    pub fn work_listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.work)
            .expect("read work")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// The state folder every `ftserve` of this test process uses, unless a
/// test gives its own: one key for all, so that a port used again by
/// another test's server shows the key ftget recorded for it. Made by the
/// first server that starts (ftserve makes an identity on first start, and
/// two starting at once end up with the same one).
pub fn state_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("state tempdir"))
        .path()
}

/// The `XDG_CONFIG_HOME` every `ftget` of this test process uses, unless a
/// test gives its own: where it records the servers it met
/// (`ft/known_servers`), away from the user's own.
pub fn config_home() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("config tempdir"))
        .path()
}

/// What a folder holds, walked without following links: each regular file's
/// SHA-256 and each folder (with a trailing `/`), by path relative to `dir`.
/// Anything else (a link, a FIFO) shows as `other`.
pub fn tree_contents(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    // Ends: only real folders are pushed, never a link, so each is walked once.
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read_dir") {
            let path = entry.expect("entry").path();
            let relative = path
                .strip_prefix(dir)
                .expect("below dir")
                .to_string_lossy()
                .into_owned();
            let kind = std::fs::symlink_metadata(&path).expect("lstat").file_type();
            if kind.is_dir() {
                found.insert(format!("{relative}/"), String::new());
                pending.push(path);
            } else if kind.is_file() {
                let data = std::fs::read(&path).expect("read");
                found.insert(relative, sha256_hex(&data));
            } else {
                found.insert(relative, "other".into());
            }
        }
    }
    found
}

/// SHA-256 in lower-case hex, computed with the `sha2` crate's standard API
/// (independent of the protocol's chain hasher).
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
