//! Files of the local folder: opened beneath the root and nowhere else (the
//! jail), read by range, and their versions told apart by device, inode,
//! size and modification time. Everything here blocks.

use std::io;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt as _};
use std::sync::OnceLock;

use bytes::Bytes;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use ft_protocol::{ErrorCode, FileMeta, RemoteError, RemotePath};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::backend::Stat;

/// What identifies one version of a local file: replacing the file, or
/// writing to it, changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_secs: i64,
    mtime_nanos: u32,
}

impl FileId {
    /// From the fields of a `stat`, whichever metadata type carried them.
    pub(crate) fn new(dev: u64, ino: u64, size: u64, mtime_secs: i64, mtime_nsec: i64) -> Self {
        Self {
            dev,
            ino,
            size,
            mtime_secs,
            // Always below 10^9, so it fits.
            mtime_nanos: mtime_nsec.clamp(0, 999_999_999) as u32,
        }
    }

    /// Size and modification time, as the wire describes a file.
    pub(crate) fn meta(&self) -> FileMeta {
        FileMeta {
            size: self.size,
            mtime_secs: self.mtime_secs,
            mtime_nanos: self.mtime_nanos,
            sha256: None,
        }
    }
}

/// One regular file, opened inside the root.
pub struct OpenFile {
    file: std::fs::File,
    id: FileId,
    path: RemotePath,
}

/// Opens a regular file under `root`. Resolution never leaves the root:
/// cap-std resolves every component beneath it (openat2 with
/// RESOLVE_BENEATH where the kernel has it), refusing `..` and symlinks
/// that lead out, absolute ones included.
///
/// Opening a node can act: a FIFO wakes its writers, a device's driver
/// runs, a terminal becomes the controlling one of a process that has
/// none. So the node is first only located (`O_PATH`, which runs nothing
/// of it) and looked at, and only a regular file is opened for reading.
///
/// `path` is resolved beneath `root`; `shown` is how messages name it (the
/// whole path, when `root` is a folder below the served one).
pub fn open(root: &Dir, path: &RemotePath, shown: &RemotePath) -> Result<OpenFile, RemoteError> {
    let failed = |err: io::Error| open_error(&err, shown);
    let node = locate(root, path).map_err(failed)?;
    let found = node.metadata().map_err(failed)?;
    if !found.is_file() {
        return Err(RemoteError::new(
            ErrorCode::NotAFile,
            format!("not a regular file: {shown}"),
        ));
    }
    let (file, metadata) = match reopen(&node) {
        // The very inode located: what was seen of it is what is open.
        Some(opened) => (opened.map_err(failed)?, found),
        None => {
            let file = reopen_by_path(root, path).map_err(failed)?;
            let metadata = file.metadata().map_err(failed)?;
            if (metadata.dev(), metadata.ino()) != (found.dev(), found.ino()) {
                return Err(RemoteError::new(
                    ErrorCode::FileChanged,
                    format!("{shown} was replaced while it was being opened"),
                ));
            }
            (file, metadata)
        }
    };
    Ok(OpenFile {
        file,
        id: file_id(&metadata),
        path: shown.clone(),
    })
}

/// The node at `path`, resolved beneath the root (a link inside the root
/// followed) and held by an `O_PATH` descriptor: the kernel calls no open
/// of the node's own, so a FIFO, a device or a terminal is untouched.
/// (O_NOCTTY would mean nothing here, and openat2 refuses it beside O_PATH.)
fn locate(root: &Dir, path: &RemotePath) -> io::Result<std::fs::File> {
    open_beneath(root, path, libc::O_PATH)
}

/// The regular file `node` holds, opened for reading through its entry in
/// `/proc/self/fd`: the kernel reopens that very inode, so nothing swapped
/// in at the path meanwhile can be opened. `None` without procfs.
fn reopen(node: &std::fs::File) -> Option<io::Result<std::fs::File>> {
    let reopened = nix::fcntl::openat(
        fd_folder()?,
        node.as_raw_fd().to_string().as_str(),
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    Some(reopened.map(std::fs::File::from).map_err(io::Error::from))
}

/// This process's `/proc/self/fd`, opened once: resolving it for every
/// file would double what reopening costs. `None` without procfs.
fn fd_folder() -> Option<&'static OwnedFd> {
    static FOLDER: OnceLock<Option<OwnedFd>> = OnceLock::new();
    FOLDER
        .get_or_init(|| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open("/proc/self/fd")
                .ok()
                .map(OwnedFd::from)
        })
        .as_ref()
}

/// Without procfs: `path` resolved and opened again, never blocking
/// (`O_NONBLOCK`: a FIFO swapped in meanwhile has no writer to wait for)
/// and never taking a terminal (`O_NOCTTY`); the caller checks that it is
/// the inode it located.
fn reopen_by_path(root: &Dir, path: &RemotePath) -> io::Result<std::fs::File> {
    open_beneath(root, path, libc::O_NONBLOCK | libc::O_NOCTTY)
}

/// `path` opened beneath the root for reading, with `flags` besides (with
/// O_PATH the access mode is ignored; std requires one).
fn open_beneath(root: &Dir, path: &RemotePath, flags: i32) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(flags);
    Ok(root.open_with(path.to_relative(), &options)?.into_std())
}

impl OpenFile {
    /// The version it was opened at.
    pub fn stat(&self) -> Stat<FileId> {
        Stat {
            version: self.id,
            meta: self.id.meta(),
        }
    }

    /// The `len` bytes at `pos`, filled straight from the file without
    /// zeroing the buffer first (`read_to_end` reads into spare room;
    /// `read_exact_at` would need it zeroed). It moves the file's offset: an
    /// open file is read by one thread at a time. Fewer bytes than asked:
    /// the file shrank.
    pub fn read(&self, pos: u64, len: usize) -> Result<Bytes, RemoteError> {
        let failed = |err: io::Error| {
            RemoteError::new(
                ErrorCode::Internal,
                format!("cannot read {}: {err}", self.path),
            )
        };
        let mut reader = &self.file;
        reader.seek(SeekFrom::Start(pos)).map_err(failed)?;
        let mut buf = Vec::with_capacity(len);
        reader
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(failed)?;
        if buf.len() != len {
            return Err(changed(self));
        }
        Ok(Bytes::from(buf))
    }

    /// `FileChanged` unless the file is still the version it was opened at.
    pub fn unchanged(&self) -> Result<(), RemoteError> {
        match self.file.metadata() {
            Ok(now) if file_id(&now) == self.id => Ok(()),
            _ => Err(changed(self)),
        }
    }

    /// The open file, for the kernel to send from.
    pub fn std(&self) -> &std::fs::File {
        &self.file
    }
}

fn changed(file: &OpenFile) -> RemoteError {
    RemoteError::new(
        ErrorCode::FileChanged,
        format!("{} changed while it was being read", file.path),
    )
}

fn file_id(metadata: &std::fs::Metadata) -> FileId {
    FileId::new(
        metadata.dev(),
        metadata.ino(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
    )
}

/// Maps a failure to open or inspect `path` onto the wire's error codes.
pub(crate) fn open_error(err: &io::Error, path: &RemotePath) -> RemoteError {
    let (code, message) = match (err.kind(), err.raw_os_error()) {
        (io::ErrorKind::NotFound | io::ErrorKind::NotADirectory, _) => {
            return crate::backend::missing(path)
        }
        // cap-std reports an escape from the root as PermissionDenied with no OS
        // error behind it; a real EACCES carries errno.
        (io::ErrorKind::PermissionDenied, None) => (
            ErrorCode::InvalidPath,
            format!("{path} leads outside the served folder"),
        ),
        (io::ErrorKind::PermissionDenied, Some(_)) => (
            ErrorCode::PermissionDenied,
            format!("permission denied: {path}"),
        ),
        // Opening a Unix socket, or a device with no driver, fails so.
        (_, Some(libc::ENXIO | libc::ENODEV)) => {
            (ErrorCode::NotAFile, format!("not a regular file: {path}"))
        }
        (_, Some(libc::ELOOP | libc::ENAMETOOLONG)) => (
            ErrorCode::InvalidPath,
            format!("cannot resolve {path}: {err}"),
        ),
        _ => (ErrorCode::Internal, format!("cannot open {path}: {err}")),
    };
    RemoteError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root_of(dir: &tempfile::TempDir) -> Dir {
        Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).expect("root opens")
    }

    fn code(result: Result<OpenFile, RemoteError>) -> ErrorCode {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(err) => err.code,
        }
    }

    fn path(text: &str) -> RemotePath {
        RemotePath::parse(text).expect("valid path")
    }

    fn mkfifo(at: &std::path::Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(at)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
    }

    #[test]
    fn opens_files_and_refuses_the_rest() {
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"s").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a.txt"), b"hello").expect("write");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("out"))
            .expect("symlink");
        std::os::unix::fs::symlink("../..", dir.path().join("sub/up")).expect("symlink");
        std::os::unix::fs::symlink("..", dir.path().join("sub/root")).expect("symlink");
        std::os::unix::fs::symlink("a.txt", dir.path().join("in")).expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("a.txt"), dir.path().join("abs-in"))
            .expect("symlink");
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).expect("symlink");
        mkfifo(&dir.path().join("fifo"));
        let root = root_of(&dir);
        let open = |text: &str| open(&root, &path(text), &path(text));

        assert_eq!(open("a.txt").expect("opens").id.size, 5);
        assert_eq!(open("in").expect("inner link opens").id.size, 5);
        assert_eq!(code(open("missing")), ErrorCode::NotFound);
        assert_eq!(code(open("a.txt/x")), ErrorCode::NotFound);
        assert_eq!(code(open("sub")), ErrorCode::NotAFile);
        assert_eq!(code(open("")), ErrorCode::NotAFile);
        assert_eq!(code(open("out")), ErrorCode::InvalidPath);
        // Absolute links are refused even when they point inside the root.
        assert_eq!(code(open("abs-in")), ErrorCode::InvalidPath);
        assert_eq!(code(open("loop")), ErrorCode::InvalidPath);
        // Opening a FIFO with no writer must not block.
        assert_eq!(code(open("fifo")), ErrorCode::NotAFile);
        assert_eq!(code(open("sub/up/a.txt")), ErrorCode::InvalidPath);
    }

    #[test]
    fn the_located_inode_is_reopened_with_procfs_or_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), b"data").expect("write");
        mkfifo(&dir.path().join("fifo"));
        let root = root_of(&dir);
        let located = locate(&root, &path("f")).expect("locates");
        let inode = |file: &std::fs::File| file.metadata().expect("fstat").ino();
        let through_proc = reopen(&located).expect("procfs is mounted here");
        assert_eq!(inode(&through_proc.expect("reopens")), inode(&located));
        let by_path = reopen_by_path(&root, &path("f")).expect("reopens");
        assert_eq!(inode(&by_path), inode(&located));
        // Without procfs, a FIFO swapped in would be opened at once (no
        // writer awaited), then refused by `open` as another inode.
        assert!(reopen_by_path(&root, &path("fifo")).is_ok());
    }

    #[test]
    fn reads_ranges_and_notices_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), b"0123456789").expect("write");
        let file = open(&root_of(&dir), &path("f"), &path("f")).expect("opens");
        assert_eq!(file.read(2, 3).expect("reads"), &b"234"[..]);
        assert_eq!(file.stat().meta.size, 10);
        assert!(file.unchanged().is_ok());
        assert_eq!(
            file.read(8, 5).map_err(|err| err.code).err(),
            Some(ErrorCode::FileChanged),
            "a short read is a file that shrank"
        );
        fs::write(dir.path().join("f"), b"0123").expect("rewrite");
        assert_eq!(
            file.unchanged().map_err(|err| err.code).err(),
            Some(ErrorCode::FileChanged)
        );
    }
}
