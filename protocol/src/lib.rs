//! The ft wire protocol, version 2, in brief (PROTOCOL.md is the byte-exact spec).
//!
//! * **TLS.** Every connection is TLS 1.3 ([`tls`]: the provider, ALPN
//!   `ft/2`, the fingerprint that names a server's key); what follows runs
//!   inside it.
//! * **Frames.** Every message is a frame: a `u32` big-endian body length, then
//!   the body, which is a bincode-encoded [`Request`] or [`Response`] (fixed-width
//!   little-endian integers). A length above [`MAX_FRAME`] closes the connection
//!   before anything is allocated for it.
//! * **Handshake.** The client's first request is [`Request::Hello`] carrying
//!   [`MAGIC`], [`VERSION`] and the client's access token, if it has one;
//!   the server answers [`Response::Welcome`] or an error
//!   ([`ErrorCode::Unauthorized`], [`ErrorCode::UnsupportedVersion`],
//!   [`ErrorCode::Busy`], …).
//! * **Requests** follow each other on one connection: `Stat` → `Meta`;
//!   `Checkpoints` → `Checkpoints`; `Get` → `Meta`, then `Data` frames with a
//!   `Checkpoint` after every [`CHUNK_SIZE`] bytes, then `End` with the SHA-256
//!   of the whole file; `List` → `Entries` frames (each under
//!   [`LIST_BATCH_BYTES`]), then `ListEnd`; an upload is `Put` → `Held`
//!   (the chunks the server holds already), `Chunk` and its `Data` →
//!   `Stored` for each chunk it lacks, `Commit` → `Meta` (the rules in
//!   [`put`]). Any of them may be answered by `Error` instead. A server busy with a request sends `KeepAlive` every
//!   [`KEEPALIVE`] it has nothing else to send; readers skip it.
//! * **Integrity.** A checkpoint is the SHA-256 chaining state after the first
//!   `k * CHUNK_SIZE` bytes of the file, so a client hashing what it receives
//!   verifies each chunk as it lands, and can verify a partial file on disk
//!   against the server's checkpoints before resuming. [`ChainHasher`] keeps
//!   that state; its final digest is exactly what `sha256sum` prints.
//!
//! The crate is sans-IO at its core: [`frame`] splits bytes into frames,
//! [`codec`] (the one home of bincode) turns frames into messages, and
//! [`handshake`], [`get`], [`list`] and [`put`] hold the rules of the conversation as
//! plain types fed with messages. None of them touches a socket or needs a
//! runtime. The `io` feature (on by default; both binaries use it) adds
//! [`connection`], the thin async driver that runs frames over any byte
//! stream, and [`tls`].

pub mod codec;
#[cfg(feature = "io")]
pub mod connection;
pub mod error;
pub mod frame;
pub mod get;
pub mod handshake;
pub mod hash;
pub mod list;
pub mod message;
pub mod path;
pub mod put;
pub mod text;
#[cfg(feature = "io")]
pub mod tls;

#[cfg(feature = "io")]
pub use connection::{Connection, Transport};
pub use error::{CodecError, ConnectionError, PathError};
pub use get::{GetError, GetEvent, GetReply, RangeReply};
pub use handshake::{ClientHandshake, HandshakeError, ServerHandshake};
pub use hash::{ChainHasher, Digest};
pub use list::{ListError, ListEvent, ListReply};
pub use message::{Entry, EntryKind, ErrorCode, FileMeta, RemoteError, Request, Response, Token};
pub use path::RemotePath;
pub use put::{ChunkCheck, ChunkError};

/// Protocol version spoken by this crate. A peer asking for another one gets
/// [`ErrorCode::UnsupportedVersion`].
pub const VERSION: u32 = 2;

/// First field of every `Hello`: tells an ft server from anything else that
/// happens to connect.
pub const MAGIC: [u8; 4] = *b"FTXF";

/// Default TCP port of `ftserve`.
pub const DEFAULT_PORT: u16 = 7878;

/// Largest frame body either side accepts, in bytes. It bounds what one peer can
/// make the other allocate: a larger length prefix closes the connection. It
/// holds a [`MAX_DATA`] data frame or a [`MAX_CHECKPOINTS`] reply with room to spare.
pub const MAX_FRAME: usize = 2 * 1024 * 1024;

/// Largest request frame body a server accepts, in bytes: a request is a
/// path and a few numbers, and a path longer than [`MAX_PATH_BYTES`] is
/// refused by name (`InvalidPath`) up to this size; past it the frame is
/// `BadRequest`, and a client cannot make a server hold more of one frame.
pub const MAX_REQUEST: usize = 128 * 1024;

/// Checkpoint interval: the server sends the hash state after every this many
/// bytes. A multiple of 64 (the SHA-256 block), large enough that checkpoints
/// cost nothing, small enough that a bad byte costs little to fetch again.
pub const CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// Largest data payload in one frame. `CHUNK_SIZE` is a multiple of it, so data
/// frames never straddle a checkpoint.
pub const MAX_DATA: usize = 1024 * 1024;

/// Most checkpoint states in one `Checkpoints` reply (32 bytes each: 1 MiB).
pub const MAX_CHECKPOINTS: u32 = 32 * 1024;

/// Bytes of entries the server puts in one `Entries` frame, at most: a
/// listing of any size goes out in frames well under [`MAX_FRAME`], even with
/// the longest paths.
pub const LIST_BATCH_BYTES: usize = 1024 * 1024;

/// How often a server that is busy with a request, and has written nothing
/// for that long, sends [`Response::KeepAlive`]. Well under any client
/// timeout ftget accepts (1 s at least).
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_millis(500);

/// Largest payload of one upload `Data` request: well within
/// [`MAX_REQUEST`], so a server reads uploads under the same cap as any
/// other request.
pub const MAX_PUT_DATA: usize = 64 * 1024;

/// Most runs of chunks one `Held` reply lists: 1 MiB of them.
pub const MAX_HELD_RUNS: usize = 64 * 1024;

/// Longest token a hello may carry, in bytes; ft's own tokens are 47.
pub const MAX_TOKEN_BYTES: usize = 256;

/// Longest path a request may carry, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest single path component, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// The `--version` text of the binaries: their version and the protocol's.
pub fn version_text(crate_version: &str) -> String {
    format!("{crate_version} (ft protocol {VERSION})")
}

/// Number of checkpoint boundaries in a file of `size` bytes: one after every
/// whole chunk.
pub fn boundaries(size: u64) -> u64 {
    size / CHUNK_SIZE
}
