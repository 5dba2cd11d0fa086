//! The messages of protocol v2. Variant order is part of the wire format:
//! bincode writes the variant index, so new variants go at the end.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hash::Digest;

/// What a client asks. `Hello` must come first and keeps its index and its
/// first two fields in every protocol version, so any server can tell which
/// version a client speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens the conversation: [`crate::MAGIC`] and the version the client speaks.
    Hello {
        /// Must equal [`crate::MAGIC`].
        magic: [u8; 4],
        /// Protocol version the client speaks.
        version: u32,
        /// The access token, when the client has one; a server with tokens
        /// refuses a hello without a known one ([`ErrorCode::Unauthorized`]).
        token: Option<Token>,
    },
    /// Describe one file; answered by [`Response::Meta`].
    Stat {
        /// Path relative to the served root, `/`-separated.
        path: String,
    },
    /// Send a file from `offset` (a multiple of [`crate::CHUNK_SIZE`], at most
    /// the size): [`Response::Meta`], `Data`/`Checkpoint` frames, then [`Response::End`].
    Get {
        /// Path relative to the served root, `/`-separated.
        path: String,
        /// First byte to send.
        offset: u64,
    },
    /// The checkpoint states at boundaries `first ..first + count` (boundary `k`
    /// lies after byte `k * CHUNK_SIZE`; `first` starts at 1). The server may
    /// answer fewer than asked: at most [`crate::MAX_CHECKPOINTS`], and none past
    /// the last whole chunk.
    Checkpoints {
        /// Path relative to the served root, `/`-separated.
        path: String,
        /// First boundary wanted, 1-based.
        first: u64,
        /// How many boundaries are wanted.
        count: u32,
    },
    /// List a folder: answered by `Entries` frames, then `ListEnd`; or by
    /// `Error` (`NotADirectory` when the path is a file).
    List {
        /// Folder relative to the served root, `/`-separated; empty for the root.
        path: String,
        /// Whole tree under the folder, not only its direct entries.
        recursive: bool,
        /// Fill in every file's SHA-256, hashing files the server has not yet
        /// hashed; without it, digests appear only where already known.
        digests: bool,
    },
    /// Send the bytes `offset..end` of a file (`offset` a multiple of
    /// [`crate::CHUNK_SIZE`], at most the size; `end` past `offset`, a
    /// multiple of it or anything from the size on): [`Response::Meta`], then
    /// `Data` frames up to `end` or the end of the file, and nothing else.
    /// One of the ranges of a download over several connections; the client
    /// checks each chunk against the states `Checkpoints` gives.
    Range {
        /// Path relative to the served root, `/`-separated.
        path: String,
        /// First byte to send.
        offset: u64,
        /// The byte after the last one wanted.
        end: u64,
    },
    /// Opens an upload of a file to `path`, or resumes one: answered by
    /// [`Response::Held`] (the chunks the server already holds, verified)
    /// or `Error`. It becomes the connection's upload, which `Chunk` and
    /// `Commit` act on until the next `Put`.
    Put {
        /// Path relative to the served root, `/`-separated.
        path: String,
        /// Size of the whole file in bytes.
        size: u64,
        /// What the client calls this version of its file (ftput: a hash
        /// of its size, modification time and inode): with `path` and
        /// `size`, what names this upload, so that a changed file is
        /// another upload. The chain checked at `Commit` is what makes
        /// splicing two versions impossible, whatever the client says here.
        version: Digest,
        /// Modification time the stored file gets: whole seconds since the epoch.
        mtime_secs: i64,
        /// Nanoseconds past `mtime_secs`.
        mtime_nanos: u32,
        /// Replace a file already at `path` (when the token may).
        overwrite: bool,
    },
    /// Chunk `index` of the connection's upload follows, in `Data`
    /// requests carrying exactly its bytes; answered by
    /// [`Response::Stored`] once they hash from `start` to `end`, or `Error`.
    Chunk {
        /// Which chunk, from 0: the bytes `index * CHUNK_SIZE` onwards.
        index: u64,
        /// The SHA-256 chaining state at the chunk's start (boundary `index`).
        start: Digest,
        /// The state at its end (boundary `index + 1`); for the last chunk,
        /// the SHA-256 of the whole file.
        end: Digest,
    },
    /// Bytes of the chunk announced by the last `Chunk`: at most
    /// [`crate::MAX_PUT_DATA`] each. Not answered on its own.
    Data(Bytes),
    /// Every chunk of the connection's upload has been stored: check that
    /// their states chain into `sha256`, and give the file its name.
    /// Answered by [`Response::Meta`] of the stored file, or `Error`.
    Commit {
        /// SHA-256 of the whole file.
        sha256: Digest,
    },
}

/// What a server answers. `Error` and `Welcome` keep their index and layout in
/// every protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request failed; the connection stays usable unless the code says otherwise.
    Error(RemoteError),
    /// The handshake succeeded.
    Welcome {
        /// The version both sides now speak.
        version: u32,
    },
    /// A file's description: the answer to `Stat`, and the first frame of `Get`.
    Meta(FileMeta),
    /// Checkpoint states of a file, for boundaries `first ..first + states.len()`.
    Checkpoints {
        /// The file they belong to, so the client can tell it has not changed.
        meta: FileMeta,
        /// The first boundary, 1-based.
        first: u64,
        /// One chaining state per boundary.
        states: Vec<Digest>,
    },
    /// Raw file bytes, following on from the previous `Data` frame of this `Get`.
    /// At most [`crate::MAX_DATA`] bytes; never crosses a checkpoint boundary.
    Data(Bytes),
    /// The hash state after the first `index * CHUNK_SIZE` bytes of the file,
    /// sent right after the `Data` frame that reaches that boundary.
    Checkpoint {
        /// The boundary, 1-based.
        index: u64,
        /// SHA-256 chaining state at the boundary.
        state: Digest,
    },
    /// The transfer is complete; carries the SHA-256 of the whole file.
    End {
        /// What `sha256sum` prints for the file, as 32 bytes.
        sha256: Digest,
    },
    /// Some entries of a listing, in order; more may follow.
    Entries(Vec<Entry>),
    /// The listing is complete.
    ListEnd {
        /// Entries left out: names that are not UTF-8, symlinks to folders or
        /// out of the root, special files, folders that could not be read.
        skipped: u64,
    },
    /// Nothing: the server is still working on the request (hashing a file
    /// it has not hashed before) and says so every [`crate::KEEPALIVE`], so
    /// that a client's silence timeout catches a dead server, not a slow
    /// hash. It may come before or between the frames of any reply;
    /// readers skip it (the connection's `read_response` does).
    KeepAlive,
    /// The answer to `Put`: the chunks the server already holds of this
    /// upload, verified, as runs `[first, end)` of chunk indices in order.
    /// At most [`crate::MAX_HELD_RUNS`]; a client sends the chunks outside them.
    Held {
        /// Runs of chunks held.
        chunks: Vec<(u64, u64)>,
    },
    /// Chunk `index` arrived, hashed to the states given, and is on disk.
    Stored {
        /// The chunk.
        index: u64,
    },
}

impl Response {
    /// The variant's name, for messages about a frame out of place.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Error(_) => "Error",
            Response::Welcome { .. } => "Welcome",
            Response::Meta(_) => "Meta",
            Response::Checkpoints { .. } => "Checkpoints",
            Response::Data(_) => "Data",
            Response::Checkpoint { .. } => "Checkpoint",
            Response::End { .. } => "End",
            Response::Entries(_) => "Entries",
            Response::ListEnd { .. } => "ListEnd",
            Response::KeepAlive => "KeepAlive",
            Response::Held { .. } => "Held",
            Response::Stored { .. } => "Stored",
        }
    }
}

/// What a listing entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file (or a symlink to one inside the root).
    File,
    /// A folder.
    Dir,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the listed folder, `/`-separated.
    pub path: String,
    /// File or folder.
    pub kind: EntryKind,
    /// Size in bytes (0 for a folder).
    pub size: u64,
    /// Modification time: whole seconds since the Unix epoch.
    pub mtime_secs: i64,
    /// Modification time: nanoseconds past `mtime_secs`.
    pub mtime_nanos: u32,
    /// SHA-256 of a file, when known or asked for.
    pub sha256: Option<Digest>,
}

impl Entry {
    /// Encoded size of an entry apart from its path: a bound for batching.
    pub const FIXED_BYTES: usize = 8 + 4 + 8 + 8 + 4 + 1 + 32;

    /// The file description this entry carries.
    pub fn meta(&self) -> FileMeta {
        FileMeta {
            size: self.size,
            mtime_secs: self.mtime_secs,
            mtime_nanos: self.mtime_nanos,
            sha256: self.sha256,
        }
    }
}

/// A file's size, modification time and, when the server knows it already, its
/// digest. Size and modification time together identify a version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Size in bytes.
    pub size: u64,
    /// Modification time: whole seconds since the Unix epoch.
    pub mtime_secs: i64,
    /// Modification time: nanoseconds past `mtime_secs`.
    pub mtime_nanos: u32,
    /// SHA-256 of the whole file, when the server has it cached.
    pub sha256: Option<Digest>,
}

impl FileMeta {
    /// The modification time, when it is one the system can hold.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        use std::time::{Duration, UNIX_EPOCH};
        let secs = Duration::from_secs(self.mtime_secs.unsigned_abs());
        let whole = if self.mtime_secs >= 0 {
            UNIX_EPOCH.checked_add(secs)
        } else {
            UNIX_EPOCH.checked_sub(secs)
        };
        whole.and_then(|t| t.checked_add(Duration::from_nanos(self.mtime_nanos.into())))
    }

    /// Whether two descriptions name the same version of a file: same size, same
    /// modification time, and no disagreement where both digests are known.
    pub fn same_version(&self, other: &FileMeta) -> bool {
        let digests_agree = match (self.sha256, other.sha256) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.size == other.size
            && self.mtime_secs == other.mtime_secs
            && self.mtime_nanos == other.mtime_nanos
            && digests_agree
    }
}

/// Why a request failed. Sent inside [`Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No such file under the root.
    NotFound,
    /// The path exists but is not a regular file (a folder, a FIFO, a device).
    NotAFile,
    /// The server may not read the file.
    PermissionDenied,
    /// The path is not a plain relative path under the root, or leads out of it.
    InvalidPath,
    /// The client asked for a protocol version the server does not speak.
    UnsupportedVersion,
    /// The server is at its connection limit; try again later.
    Busy,
    /// Something failed on the server that is not the client's doing.
    Internal,
    /// The request was malformed or out of place (bad frame, bad offset, no
    /// handshake). The server closes the connection after it.
    BadRequest,
    /// The file changed while it was being sent; the transfer cannot be trusted.
    FileChanged,
    /// A listing was asked of something that is not a folder.
    NotADirectory,
    /// The server wants a token and the hello carried none, or one it does
    /// not know. The server closes the connection after it.
    Unauthorized,
    /// An upload's name is taken and the client did not ask to replace it,
    /// or another upload stored it first.
    AlreadyExists,
    /// The server has no room for the upload (free space, a quota, a file
    /// size limit); what it holds verified is kept for a resume.
    NoSpace,
    /// The upload is larger than the server accepts (`--max-upload-size`).
    TooLarge,
    /// The server takes no uploads, or not from this client, or not to
    /// this path (its token's scope), or may not replace this file.
    NotAllowed,
    /// A chunk's bytes do not hash from its start state to its end state,
    /// or the chunks' states do not chain to the whole file's SHA-256.
    Mismatch,
}

/// An access token, as a client presents it in its hello. Its `Debug` shows
/// nothing of it, so a token never reaches a log by way of a request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a token's text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The token's text: for checking it, never for showing it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// An error the server reported: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Details for people; names the path where there is one.
    pub message: String,
}

impl RemoteError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, secs: i64, sha: Option<Digest>) -> FileMeta {
        FileMeta {
            size,
            mtime_secs: secs,
            mtime_nanos: 5,
            sha256: sha,
        }
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let hello = Request::Hello {
            magic: crate::MAGIC,
            version: crate::VERSION,
            token: Some(Token::new("ftk_secret")),
        };
        assert!(!format!("{hello:?}").contains("secret"));
    }

    #[test]
    fn modification_times_before_and_after_the_epoch() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |secs, nanos| FileMeta {
            size: 0,
            mtime_secs: secs,
            mtime_nanos: nanos,
            sha256: None,
        };
        assert_eq!(
            at(10, 5).modified(),
            Some(UNIX_EPOCH + Duration::from_secs(10) + Duration::from_nanos(5))
        );
        assert_eq!(
            at(-10, 0).modified(),
            UNIX_EPOCH.checked_sub(Duration::from_secs(10))
        );
        // The extremes are whatever the system can hold, never a panic.
        for secs in [i64::MIN, i64::MAX] {
            let _ = at(secs, u32::MAX).modified();
        }
    }

    #[test]
    fn same_version_needs_size_time_and_agreeing_digests() {
        let a = meta(10, 100, Some([1; 32]));
        assert!(a.same_version(&meta(10, 100, None)));
        assert!(a.same_version(&meta(10, 100, Some([1; 32]))));
        assert!(!a.same_version(&meta(10, 100, Some([2; 32]))));
        assert!(!a.same_version(&meta(11, 100, None)));
        assert!(!a.same_version(&meta(10, 101, None)));
    }
}
