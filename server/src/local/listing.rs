//! Walking folders under the local root: sorted, without recursion on the
//! call stack, never through a link to a folder (so never into a loop) and
//! never out of the root. Everything here blocks.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use cap_std::fs::{Dir, Metadata, MetadataExt};
use ft_protocol::{Entry, EntryKind, ErrorCode, RemoteError, RemotePath, MAX_PATH_BYTES};
use tracing::warn;

use super::files::{open_error, FileId};
use crate::backend::{Listed, Walked};

/// One entry of a folder, before it is emitted: where its name sits in its
/// folder's names, and what `readdir` said it is. Its metadata is read when
/// it is emitted, so a folder held by a walk costs 12 bytes per entry plus
/// its names (about 4 MB for 200,000 entries), whatever the client does.
#[derive(Debug, Clone, Copy)]
struct Item {
    start: u32,
    len: u32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    /// A symbolic link: served only if it resolves to a file in the root.
    Link,
}

/// The entries of one folder, sorted by name, their names in one string,
/// and how many were left out; or why it could not be read.
struct Folder {
    names: String,
    items: Vec<Item>,
    skipped: u64,
    failed: Option<io::Error>,
}

impl Folder {
    fn failed(err: io::Error) -> Self {
        Self {
            names: String::new(),
            items: Vec::new(),
            skipped: 0,
            failed: Some(err),
        }
    }

    fn name(&self, item: &Item) -> &str {
        let start = item.start as usize;
        self.names
            .get(start..start + item.len as usize)
            .unwrap_or_default()
    }

    fn result(self: Arc<Self>) -> io::Result<Arc<Self>> {
        match &self.failed {
            Some(err) => Err(io::Error::new(err.kind(), err.to_string())),
            None => Ok(self),
        }
    }
}

/// What identifies one version of a folder: adding, removing or renaming
/// an entry changes its modification time.
type FolderKey = (u64, u64, i64, i64);

/// The folders walks are in, shared: a folder's entries are read once per
/// version however many clients list it at once (the first reads, the
/// others wait for it), so what listings hold is bounded by the folders on
/// disk, not by the number of connections.
#[derive(Default)]
pub struct Folders {
    read: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    folders: HashMap<FolderKey, Arc<Slot>>,
    /// Entries past which the map is swept of folders no walk holds.
    sweep_at: usize,
}

/// One folder version: read by the first walk that needs it, held by the
/// walks in it, gone when the last leaves.
#[derive(Default)]
struct Slot {
    read: OnceLock<Weak<Folder>>,
}

impl Folders {
    /// The entries of the folder `dir` (at `path`), read now, or shared
    /// with a walk that read (or is reading) this version of it.
    fn entries(&self, dir: &Dir, path: &Path) -> io::Result<Arc<Folder>> {
        let m = dir.dir_metadata()?;
        let key = (m.dev(), m.ino(), m.mtime(), m.mtime_nsec());
        let slot = {
            let mut shared = self.read.lock().unwrap_or_else(PoisonError::into_inner);
            if shared.folders.len() > shared.sweep_at {
                shared.folders.retain(|_, slot| {
                    slot.read
                        .get()
                        .is_none_or(|folder| folder.strong_count() > 0)
                });
                shared.sweep_at = (2 * shared.folders.len()).max(64);
            }
            let slot = shared.folders.entry(key).or_default();
            if slot
                .read
                .get()
                .is_some_and(|folder| folder.strong_count() == 0)
            {
                *slot = Arc::default();
            }
            Arc::clone(slot)
        };
        let mut mine = None;
        let shared = slot.read.get_or_init(|| match read_entries(dir, path) {
            Ok(folder) => Arc::downgrade(mine.insert(Arc::new(folder))),
            Err(err) => {
                mine = Some(Arc::new(Folder::failed(err)));
                Weak::new()
            }
        });
        match (mine, shared.upgrade()) {
            (Some(folder), _) => folder.result(),
            (None, Some(folder)) => Ok(folder),
            // Its reader failed, or every walk left it: read it alone.
            (None, None) => read_entries(dir, path).map(Arc::new),
        }
    }
}

/// A folder the walk is in: its path from the root and from the listed
/// folder, its entries, the next one, and, while the walk is not in one of
/// its sub-folders, its handle (so a walk holds one descriptor, not one per
/// level).
struct Level {
    path: PathBuf,
    prefix: String,
    folder: Arc<Folder>,
    next: usize,
    dir: Option<Dir>,
}

/// Walks the folder at `path` (its whole tree when `recursive`), handing
/// each entry to `emit` in sorted order: a folder's entries follow it
/// directly. `emit` returns false to stop. Digests are not its business.
///
/// Left out, and counted as skipped: names that are not UTF-8 (the wire
/// carries UTF-8 strings), symlinks except those resolving to a regular
/// file inside the root, special files, folders that cannot be read,
/// entries that change kind or vanish during the walk, and paths longer
/// than a request may carry.
///
/// `path` is resolved beneath `root`, and links are judged against it;
/// `shown` is the whole path, for messages and the bound on listed paths.
pub fn walk(
    root: &Dir,
    folders: &Folders,
    path: &RemotePath,
    shown: &RemotePath,
    recursive: bool,
    emit: &mut dyn FnMut(Listed<FileId>) -> bool,
) -> Result<Walked, RemoteError> {
    let top = path.to_relative();
    let metadata = root.metadata(&top).map_err(|err| open_error(&err, shown))?;
    if !metadata.is_dir() {
        return Err(RemoteError::new(
            ErrorCode::NotADirectory,
            format!("not a folder: {shown}"),
        ));
    }
    let mut skipped = 0u64;
    let (dir, folder) =
        read_folder(root, folders, &top, &mut skipped).map_err(|err| open_error(&err, shown))?;
    let mut stack = vec![Level {
        path: top,
        prefix: String::new(),
        folder,
        next: 0,
        dir: Some(dir),
    }];
    let base_len = shown.to_string().len();
    while let Some(level) = stack.last_mut() {
        let Some(item) = level.folder.items.get(level.next).copied() else {
            stack.pop();
            continue;
        };
        level.next += 1;
        let name = level.folder.name(&item);
        let relative = match level.prefix.is_empty() {
            true => name.to_owned(),
            false => format!("{}/{name}", level.prefix),
        };
        if base_len + 1 + relative.len() > MAX_PATH_BYTES {
            skipped += 1;
            continue;
        }
        let full = level.path.join(name);
        let Some((kind, m)) = describe(root, level, item, &full, &mut skipped) else {
            continue;
        };
        let id = FileId::new(m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec());
        let meta = id.meta();
        let (size, version) = match kind {
            EntryKind::File => (meta.size, Some(id)),
            EntryKind::Dir => (0, None),
        };
        let entry = Entry {
            path: relative.clone(),
            kind,
            size,
            mtime_secs: meta.mtime_secs,
            mtime_nanos: meta.mtime_nanos,
            sha256: None,
        };
        if !emit(Listed { entry, version }) {
            return Ok(Walked::Abandoned);
        }
        if recursive && kind == EntryKind::Dir {
            match read_folder(root, folders, &full, &mut skipped) {
                Ok((dir, folder)) => {
                    level.dir = None;
                    stack.push(Level {
                        path: full,
                        prefix: relative,
                        folder,
                        next: 0,
                        dir: Some(dir),
                    });
                }
                Err(err) => {
                    warn!("listing left out {}: {err}", full.display());
                    skipped += 1;
                }
            }
        }
    }
    Ok(Walked::Complete { skipped })
}

/// What an entry is now, with its metadata: a file (a link only if it
/// resolves, beneath the root, to a regular file) or a folder. `None`, and
/// counted, for anything else.
fn describe(
    root: &Dir,
    level: &mut Level,
    item: Item,
    full: &Path,
    skipped: &mut u64,
) -> Option<(EntryKind, Metadata)> {
    let looked = match item.kind {
        // Resolved from the root, beneath it: a link that leads out fails
        // here. Links to folders are left out so a walk can never loop.
        Kind::Link => root.metadata(full),
        Kind::File | Kind::Dir => match &level.dir {
            Some(dir) => dir.symlink_metadata(level.folder.name(&item)),
            None => root.open_dir(&level.path).and_then(|dir| {
                let dir = level.dir.insert(dir);
                dir.symlink_metadata(level.folder.name(&item))
            }),
        },
    };
    let why = match looked {
        Ok(m) => match (item.kind, m.is_file(), m.is_dir()) {
            (Kind::File | Kind::Link, true, _) => return Some((EntryKind::File, m)),
            (Kind::Dir, _, true) => return Some((EntryKind::Dir, m)),
            (Kind::Link, ..) => "a link to something other than a file".to_owned(),
            _ => "it changed kind during the listing".to_owned(),
        },
        Err(err) => err.to_string(),
    };
    left_out(full, &why, skipped);
    None
}

/// Opens one folder (relative to the root) and its entries, sorted by name,
/// counting those left out.
fn read_folder(
    root: &Dir,
    folders: &Folders,
    folder: &Path,
    skipped: &mut u64,
) -> io::Result<(Dir, Arc<Folder>)> {
    let dir = root.open_dir(folder)?;
    let entries = folders.entries(&dir, folder)?;
    *skipped += entries.skipped;
    Ok((dir, entries))
}

/// Reads the entries of the folder `dir` (at `folder`), sorted by name.
fn read_entries(dir: &Dir, folder: &Path) -> io::Result<Folder> {
    let skipped = &mut 0;
    let mut read = Folder {
        names: String::new(),
        items: Vec::new(),
        skipped: 0,
        failed: None,
    };
    for entry in dir.entries()? {
        let entry = entry?;
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => {
                left_out(&folder.join(raw), "its name is not UTF-8", skipped);
                continue;
            }
        };
        let kind = match entry.file_type() {
            Ok(t) if t.is_dir() => Kind::Dir,
            Ok(t) if t.is_file() => Kind::File,
            Ok(t) if t.is_symlink() => Kind::Link,
            Ok(_) => {
                left_out(&folder.join(name), "not a regular file or folder", skipped);
                continue;
            }
            Err(err) => {
                left_out(&folder.join(name), &err.to_string(), skipped);
                continue;
            }
        };
        let (Ok(start), Ok(len)) = (u32::try_from(read.names.len()), u32::try_from(name.len()))
        else {
            return Err(io::Error::other("a folder with more than 4 GiB of names"));
        };
        read.names.push_str(&name);
        read.items.push(Item { start, len, kind });
    }
    let Folder { names, items, .. } = &mut read;
    let name = |item: &Item| &names[item.start as usize..item.start as usize + item.len as usize];
    items.sort_unstable_by(|a, b| name(a).cmp(name(b)));
    read.skipped = *skipped;
    read.names.shrink_to_fit();
    read.items.shrink_to_fit();
    Ok(read)
}

fn left_out(path: &Path, why: &str, skipped: &mut u64) {
    *skipped += 1;
    warn!("listing left out {}: {why}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;

    fn listing(root: &Dir, path: &str, recursive: bool) -> (Vec<(String, EntryKind)>, u64) {
        let mut out = Vec::new();
        let path = RemotePath::parse(path).expect("valid");
        let listed = walk(
            root,
            &Folders::default(),
            &path,
            &path,
            recursive,
            &mut |listed| {
                assert_eq!(
                    listed.version.is_some(),
                    listed.entry.kind == EntryKind::File
                );
                out.push((listed.entry.path, listed.entry.kind));
                true
            },
        )
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
            let path = RemotePath::parse(path).expect("valid");
            walk(
                &files,
                &Folders::default(),
                &path,
                &path,
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

    #[test]
    fn walks_in_one_folder_share_its_entries_until_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a"), b"").expect("write");
        fs::write(dir.path().join("b"), b"").expect("write");
        let root = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).expect("opens");
        let folders = Folders::default();
        let read = || {
            let here = root.open_dir(".").expect("opens");
            folders.entries(&here, Path::new(".")).expect("reads")
        };
        let (first, second) = (read(), read());
        assert!(Arc::ptr_eq(&first, &second), "read once, shared");
        fs::write(dir.path().join("c"), b"").expect("write");
        let third = read();
        assert!(
            !Arc::ptr_eq(&first, &third),
            "a changed folder is read again"
        );
        assert_eq!((first.items.len(), third.items.len()), (2, 3));
        drop((first, second, third));
        assert!(read().items.len() == 3);
    }
}
