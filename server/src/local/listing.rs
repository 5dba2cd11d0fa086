//! Walking folders under the local root: sorted, without recursion on the
//! call stack, never through a link to a folder (so never into a loop) and
//! never out of the root. Everything here blocks.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, Metadata, MetadataExt};
use ft_protocol::{Entry, EntryKind, ErrorCode, RemoteError, RemotePath, MAX_PATH_BYTES};
use tracing::warn;

use super::files::{open_error, FileId};
use crate::backend::{Listed, Walked};

/// One entry of a folder, before it is emitted.
struct Item {
    name: String,
    kind: EntryKind,
    metadata: Metadata,
}

/// Walks the folder at `path` (its whole tree when `recursive`), handing
/// each entry to `emit` in sorted order: a folder's entries follow it
/// directly. `emit` returns false to stop. Digests are not its business.
///
/// Left out, and counted as skipped: names that are not UTF-8 (the wire
/// carries UTF-8 strings), symlinks except those resolving to a regular
/// file inside the root, special files, folders that cannot be read, and
/// paths longer than a request may carry.
pub fn walk(
    root: &Dir,
    path: &RemotePath,
    recursive: bool,
    emit: &mut dyn FnMut(Listed<FileId>) -> bool,
) -> Result<Walked, RemoteError> {
    let top = path.to_relative();
    let metadata = root.metadata(&top).map_err(|err| open_error(&err, path))?;
    if !metadata.is_dir() {
        return Err(RemoteError::new(
            ErrorCode::NotADirectory,
            format!("not a folder: {path}"),
        ));
    }
    let mut skipped = 0u64;
    let items = read_folder(root, &top, &mut skipped).map_err(|err| open_error(&err, path))?;
    // Each level: the folder's path relative to `top`, and what is left of it.
    let mut stack = vec![(String::new(), items.into_iter())];
    let base_len = path.to_string().len();
    while let Some((prefix, rest)) = stack.last_mut() {
        let Some(item) = rest.next() else {
            stack.pop();
            continue;
        };
        let relative = if prefix.is_empty() {
            item.name
        } else {
            format!("{prefix}/{}", item.name)
        };
        if base_len + 1 + relative.len() > MAX_PATH_BYTES {
            skipped += 1;
            continue;
        }
        let full = top.join(&relative);
        let m = &item.metadata;
        let id = FileId::new(m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec());
        let meta = id.meta();
        let (size, version) = match item.kind {
            EntryKind::File => (meta.size, Some(id)),
            EntryKind::Dir => (0, None),
        };
        let entry = Entry {
            path: relative.clone(),
            kind: item.kind,
            size,
            mtime_secs: meta.mtime_secs,
            mtime_nanos: meta.mtime_nanos,
            sha256: None,
        };
        if !emit(Listed { entry, version }) {
            return Ok(Walked::Abandoned);
        }
        if recursive && item.kind == EntryKind::Dir {
            match read_folder(root, &full, &mut skipped) {
                Ok(items) => stack.push((relative, items.into_iter())),
                Err(err) => {
                    warn!("listing left out {}: {err}", full.display());
                    skipped += 1;
                }
            }
        }
    }
    Ok(Walked::Complete { skipped })
}

/// The entries of one folder (relative to the root), sorted by name.
fn read_folder(root: &Dir, folder: &Path, skipped: &mut u64) -> io::Result<Vec<Item>> {
    let dir = root.open_dir(folder)?;
    let mut items = Vec::new();
    for entry in dir.entries()? {
        let entry = entry?;
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => {
                left_out(folder, &raw, "its name is not UTF-8", skipped);
                continue;
            }
        };
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(err) => {
                left_out(folder, &name.into(), &err.to_string(), skipped);
                continue;
            }
        };
        let item = if file_type.is_dir() || file_type.is_file() {
            entry.metadata().map(|metadata| Item {
                kind: if file_type.is_dir() {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
                name: name.clone(),
                metadata,
            })
        } else if file_type.is_symlink() {
            // Resolved from the root, beneath it: a link that leads out
            // fails here. Links to folders are left out so a walk can
            // never loop.
            match root.metadata(folder.join(&name)) {
                Ok(metadata) if metadata.is_file() => Ok(Item {
                    kind: EntryKind::File,
                    name: name.clone(),
                    metadata,
                }),
                Ok(_) => Err(io::Error::other("a link to something other than a file")),
                Err(err) => Err(err),
            }
        } else {
            Err(io::Error::other("not a regular file or folder"))
        };
        match item {
            Ok(item) => items.push(item),
            Err(err) => left_out(folder, &name.into(), &err.to_string(), skipped),
        }
    }
    items.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(items)
}

fn left_out(folder: &Path, name: &OsString, why: &str, skipped: &mut u64) {
    *skipped += 1;
    warn!(
        "listing left out {}: {why}",
        PathBuf::from(folder).join(name).display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;

    fn listing(root: &Dir, path: &str, recursive: bool) -> (Vec<(String, EntryKind)>, u64) {
        let mut out = Vec::new();
        let path = RemotePath::parse(path).expect("valid");
        let listed = walk(root, &path, recursive, &mut |listed| {
            assert_eq!(
                listed.version.is_some(),
                listed.entry.kind == EntryKind::File
            );
            out.push((listed.entry.path, listed.entry.kind));
            true
        })
        .expect("lists");
        match listed {
            Walked::Complete { skipped } => (out, skipped),
            Walked::Abandoned => panic!("abandoned"),
        }
    }

    #[test]
    fn walks_sorted_depth_first_and_leaves_out_what_it_must() {
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"s").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("b/inner")).expect("mkdir");
        fs::create_dir(root.join("empty")).expect("mkdir");
        fs::write(root.join("a.txt"), b"hello").expect("write");
        fs::write(root.join("b/inner/deep.bin"), b"x").expect("write");
        fs::write(root.join("b/z"), b"").expect("write");
        std::os::unix::fs::symlink("../a.txt", root.join("b/link")).expect("symlink");
        std::os::unix::fs::symlink("..", root.join("b/loop")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out"))
            .expect("symlink");
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"").expect("write");
        let files = Dir::open_ambient_dir(root, cap_std::ambient_authority()).expect("opens");

        let (top, skipped) = listing(&files, "", false);
        let names: Vec<&str> = top.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["a.txt", "b", "empty"]);
        assert_eq!(skipped, 2, "the escaping link and the non-UTF-8 name");

        let (all, skipped) = listing(&files, ".", true);
        let names: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "a.txt",
                "b",
                "b/inner",
                "b/inner/deep.bin",
                "b/link",
                "b/z",
                "empty"
            ]
        );
        assert_eq!(skipped, 3, "plus the link to a folder");

        let (sub, _) = listing(&files, "b/", true);
        assert_eq!(sub[0], ("inner".to_owned(), EntryKind::Dir));

        let code = |path: &str| {
            walk(
                &files,
                &RemotePath::parse(path).expect("valid"),
                false,
                &mut |_| true,
            )
            .err()
            .map(|err| err.code)
        };
        assert_eq!(code("a.txt"), Some(ErrorCode::NotADirectory));
        assert_eq!(code("missing"), Some(ErrorCode::NotFound));
        assert_eq!(code("out"), Some(ErrorCode::InvalidPath));
    }
}
