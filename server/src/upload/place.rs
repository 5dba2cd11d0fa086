//! Where an upload may land, and landing it: every path is walked from the
//! root one component at a time, each opened with `O_NOFOLLOW`, so no link
//! in any component is ever followed and nothing outside the root is
//! reached (openat2's `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, spelled out so
//! that missing folders can be made on the way). Everything here blocks.

use std::os::fd::{AsFd, OwnedFd};

use ft_protocol::{ErrorCode, RemoteError, RemotePath};
use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag};

/// The folder partial uploads live in, directly under the root: outside
/// the served namespace (never listed, never readable, never written by
/// name), on the root's file system so that an upload lands by a rename.
pub const PARTIALS: &str = ".ftserve-partial";

/// Whether `path` lies in the partials' folder, which no request may name.
pub fn reserved(path: &RemotePath) -> bool {
    path.components()
        .first()
        .is_some_and(|first| first == PARTIALS)
}

/// Opens a folder by path, for the root or the partials' folder.
pub fn open_folder(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// The folder `name` in `dir`, made (0700) if it is missing; never a link.
pub fn folder_in(dir: &OwnedFd, name: &str, mode: u32) -> Result<OwnedFd, Errno> {
    match child(dir, name) {
        Err(Errno::ENOENT) => {
            match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => child(dir, name),
                Err(err) => Err(err),
            }
        }
        other => other,
    }
}

fn child(dir: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, Mode::empty())
}

/// What is at a name now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A regular file.
    File,
    /// Anything else: a folder, a link, a device, …
    Other,
}

/// The folder `path` would land in, opened, with the last component: its
/// folders made on the way when `make` (0755, less the umask). A component
/// that is a link, or not a folder, or cannot be made, is refused by name.
pub fn parent(
    root: &OwnedFd,
    path: &RemotePath,
    make: bool,
) -> Result<Option<(OwnedFd, String)>, RemoteError> {
    let Some((name, folders)) = path.components().split_last() else {
        return Err(RemoteError::new(
            ErrorCode::InvalidPath,
            "an upload needs a file name, not the served folder",
        ));
    };
    let mut dir = nix::unistd::dup(root).map_err(|err| failed(path, err))?;
    for folder in folders {
        let next = if make {
            folder_in(&dir, folder, 0o755)
        } else {
            child(&dir, folder)
        };
        dir = match next {
            Ok(next) => next,
            Err(Errno::ENOENT) if !make => return Ok(None),
            // O_NOFOLLOW with O_DIRECTORY says ENOTDIR for a link: tell
            // the two apart for the message.
            Err(Errno::ENOTDIR | Errno::ELOOP) if is_link(&dir, folder) => {
                return Err(failed(path, Errno::ELOOP))
            }
            Err(err) => return Err(failed(path, err)),
        };
    }
    Ok(Some((dir, name.clone())))
}

fn is_link(dir: &OwnedFd, name: &str) -> bool {
    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

/// What `name` in `dir` is, never following a link.
pub fn found(dir: &OwnedFd, name: &str) -> Result<Found, Errno> {
    match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG => {
            Ok(Found::File)
        }
        Ok(_) => Ok(Found::Other),
        Err(Errno::ENOENT) => Ok(Found::Nothing),
        Err(err) => Err(err),
    }
}

/// Gives the file `from` in `from_dir` the name `name` in `dir`, at once:
/// replacing a file there only when `replace`, else failing with EEXIST.
pub fn land(
    from_dir: &OwnedFd,
    from: &str,
    dir: &OwnedFd,
    name: &str,
    replace: bool,
) -> Result<(), Errno> {
    let flags = match replace {
        true => RenameFlags::empty(),
        false => RenameFlags::RENAME_NOREPLACE,
    };
    nix::fcntl::renameat2(from_dir, from, dir, name, flags)?;
    // The new name is an entry of `dir`: on disk once the folder is.
    nix::unistd::fsync(dir.as_fd())
}

/// A failure to walk or write `path`, as the client hears it.
pub fn failed(path: &RemotePath, err: Errno) -> RemoteError {
    let (code, message) = match err {
        Errno::ELOOP => (
            ErrorCode::InvalidPath,
            format!("{path}: a link stands in the way; uploads never follow links"),
        ),
        Errno::ENOTDIR => (
            ErrorCode::InvalidPath,
            format!("{path}: a part of it is a file, not a folder"),
        ),
        Errno::EEXIST => (
            ErrorCode::InvalidPath,
            format!("{path}: a part of it is not a folder"),
        ),
        Errno::ENAMETOOLONG | Errno::EINVAL | Errno::EILSEQ => (
            ErrorCode::InvalidPath,
            format!("{path}: the server's file system cannot store this name ({err})"),
        ),
        Errno::EACCES | Errno::EPERM | Errno::EROFS => (
            ErrorCode::PermissionDenied,
            format!("{path}: the server may not write there ({err})"),
        ),
        Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG => (
            ErrorCode::NoSpace,
            format!("{path}: no room left on the server ({err})"),
        ),
        err => (ErrorCode::Internal, format!("{path}: {err}")),
    };
    RemoteError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> RemotePath {
        RemotePath::parse(text).expect("a path")
    }

    #[test]
    fn folders_are_made_on_the_way_and_links_are_never_followed() {
        let outside = tempfile::tempdir().expect("tempdir");
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("ln");
        std::os::unix::fs::symlink("sub", dir.path().join("in")).expect("ln");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("file"), b"x").expect("write");
        let root = open_folder(dir.path()).expect("root");

        let (_, name) = parent(&root, &path("a/b/c.txt"), true)
            .expect("made")
            .expect("there");
        assert_eq!(name, "c.txt");
        assert!(dir.path().join("a/b").is_dir());
        assert!(parent(&root, &path("x/y"), false).expect("walks").is_none());
        for through_link in ["out/f", "in/f", "out/new/f"] {
            let err = parent(&root, &path(through_link), true)
                .err()
                .map(|e| e.code);
            assert_eq!(err, Some(ErrorCode::InvalidPath), "{through_link}");
        }
        assert!(std::fs::read_dir(outside.path())
            .expect("ls")
            .next()
            .is_none());
        let err = parent(&root, &path("file/f"), true).err().map(|e| e.code);
        assert_eq!(err, Some(ErrorCode::InvalidPath));
        assert!(parent(&root, &RemotePath::root(), true).is_err());

        assert_eq!(found(&root, "file"), Ok(Found::File));
        assert_eq!(found(&root, "out"), Ok(Found::Other));
        assert_eq!(found(&root, "sub"), Ok(Found::Other));
        assert_eq!(found(&root, "none"), Ok(Found::Nothing));
        assert!(reserved(&path(".ftserve-partial/x")) && !reserved(&path("a/.ftserve-partial")));
    }

    #[test]
    fn landing_replaces_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = open_folder(dir.path()).expect("root");
        for (name, body) in [("new", "1"), ("old", "2"), ("new2", "3")] {
            std::fs::write(dir.path().join(name), body).expect("write");
        }
        assert_eq!(land(&root, "new", &root, "old", false), Err(Errno::EEXIST));
        land(&root, "new", &root, "old", true).expect("replaced");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("old"))
                .ok()
                .as_deref(),
            Some("1")
        );
        land(&root, "new2", &root, "fresh", false).expect("landed");
        assert!(!dir.path().join("new2").exists());
    }
}
