//! Finding the workspace's built binaries, and refusing any that is older
//! than its sources.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One of the workspace's binaries, built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    let built = modified(&path);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let own_crate = match name {
        "ftserve" => "server/src",
        _ => "client/src",
    };
    let newest_source = ["protocol/src", own_crate]
        .iter()
        .map(|dir| newest(&workspace.join(dir)))
        .max()
        .flatten();
    assert!(
        newest_source <= built,
        "{} is older than its sources; run the tests with `cargo test --workspace`, which rebuilds it",
        path.display()
    );
    path
}

/// When `path` (or what a link there leads to) was last written.
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of any file under `dir`. The walk ends:
/// it goes down real folders only, never through a link to one, so a link
/// loop cannot send it round.
fn newest(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            if entry.file_type().ok()?.is_dir() {
                newest(&path)
            } else {
                modified(&path)
            }
        })
        .max()
}
