//! What the server needs of the place its files live, as one narrow
//! interface: open a file, say which version it is, read a range of it, tell
//! whether it is still that version, list a folder, and (where the backend
//! can keep them) the digests of a version kept beside it. The local folder
//! (`crate::local`) is one backend, a bucket of an object store
//! (`crate::bucket`) another, without the handler knowing. Everything here
//! blocks: callers run it on blocking threads, never on the async workers.

use std::fmt::Debug;
use std::hash::Hash;

use bytes::Bytes;
use ft_protocol::{Digest, Entry, FileMeta, RemoteError, RemotePath};

/// A file's digest and its checkpoint states, computed in one pass.
#[derive(Debug)]
pub struct Digests {
    /// SHA-256 of the whole file.
    pub sha256: Digest,
    /// `checkpoints[k - 1]` is the chaining state at boundary `k`.
    pub checkpoints: Vec<Digest>,
}

impl Digests {
    /// The chaining state at boundary `index` (1-based).
    pub fn checkpoint(&self, index: u64) -> Option<Digest> {
        let slot = usize::try_from(index.checked_sub(1)?).ok()?;
        self.checkpoints.get(slot).copied()
    }
}

/// One version of a file as it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat<V> {
    /// What tells this version from any other, for the digest caches.
    pub version: V,
    /// Size and modification time (no digest: the backend does not hash).
    pub meta: FileMeta,
}

/// One entry of a listing, with the version of a file, so that its digest
/// can be looked up.
#[derive(Debug, Clone)]
pub struct Listed<V> {
    /// The entry, its `sha256` empty.
    pub entry: Entry,
    /// The file's version; `None` for a folder.
    pub version: Option<V>,
}

/// How a walk ended when it was not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// Walked to the end; this many entries were left out.
    Complete {
        /// Entries left out (see [`ft_protocol::Response::ListEnd`]).
        skipped: u64,
    },
    /// The receiver stopped it.
    Abandoned,
}

/// A place files are served from. Paths are already parsed into plain
/// components; resolving them must never leave the served namespace.
pub trait Backend: Send + Sync + 'static {
    /// An open file: one version, readable until dropped, by one thread
    /// at a time.
    type File: Send + Sync + 'static;
    /// What identifies one version of a file (replacing or writing it
    /// changes it).
    type Version: Copy + Eq + Hash + Debug + Send + Sync + 'static;

    /// Opens a regular file; anything else is refused with the wire's error
    /// codes (`NotFound`, `NotAFile`, `InvalidPath`, `PermissionDenied`).
    /// `path` lies in the folder `within` (the root, or the folder a
    /// client's token is limited to), and resolving it never leaves that
    /// folder, through a link or otherwise.
    fn open(&self, within: &RemotePath, path: &RemotePath) -> Result<Self::File, RemoteError>;

    /// [`Backend::open`], for reads that start at byte `from`: a backend
    /// that fetches ahead starts there.
    fn open_at(
        &self,
        within: &RemotePath,
        path: &RemotePath,
        _from: u64,
    ) -> Result<Self::File, RemoteError> {
        self.open(within, path)
    }

    /// The version the file was opened at.
    fn stat(&self, file: &Self::File) -> Stat<Self::Version>;

    /// The `len` bytes at `pos`. Fewer than asked means the file shrank:
    /// `FileChanged`.
    fn read(&self, file: &Self::File, pos: u64, len: usize) -> Result<Bytes, RemoteError>;

    /// `FileChanged` unless the file is still the version it was opened at.
    fn unchanged(&self, file: &Self::File) -> Result<(), RemoteError>;

    /// The open file as a local file the kernel can send from, when it is one.
    fn local_file<'a>(&self, file: &'a Self::File) -> Option<&'a std::fs::File>;

    /// Walks the folder at `path` (its whole tree when `recursive`), handing
    /// each entry to `emit` in the order of the wire (sorted, a folder's
    /// entries right after it); `emit` returns false to stop. As for
    /// [`Backend::open`], nothing outside `within` is resolved, listed or
    /// described.
    fn list(
        &self,
        within: &RemotePath,
        path: &RemotePath,
        recursive: bool,
        emit: &mut dyn FnMut(Listed<Self::Version>) -> bool,
    ) -> Result<Walked, RemoteError>;

    /// The digests of `version` kept beside it by an earlier pass (of this
    /// server or another), if the backend keeps them and they are there.
    fn stored_digests(&self, _version: &Self::Version) -> Option<Digests> {
        None
    }

    /// Keeps the digests of `version` beside it, for every server that
    /// serves it, if the backend can; failing to is only logged.
    fn store_digests(&self, _version: &Self::Version, _digests: &Digests) {}
}

/// The refusal for a path that names nothing: the one words for every
/// missing file and folder, and for every path outside a client's scope, so
/// that the two cannot be told apart.
pub(crate) fn missing(path: &RemotePath) -> RemoteError {
    RemoteError::new(
        ft_protocol::ErrorCode::NotFound,
        format!("no such file: {path}"),
    )
}
