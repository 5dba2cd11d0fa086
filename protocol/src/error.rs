//! Typed errors of the protocol crate, one enum per kind of failure.

use std::time::Duration;

/// Turning bytes into a message, or a message into bytes, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame body is longer than [`crate::MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The length that was asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a well-formed message of this protocol version.
    /// bincode's account of why is kept as text, so that bincode's types
    /// stay inside `codec.rs`.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A `Data` frame's inner byte count disagrees with its frame length.
    #[error("malformed message: data frame announces {announced} bytes but carries {carried}")]
    DataLength {
        /// What the inner count says.
        announced: u64,
        /// What the frame holds.
        carried: usize,
    },
}

/// Reading or writing frames on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Nothing was read or written for this long.
    #[error("no progress for {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The peer closed the connection where a message was due.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The peer announced a frame longer than [`crate::MAX_FRAME`].
    #[error("peer announced a frame over the {max}-byte limit")]
    FrameTooLarge {
        /// The limit.
        max: usize,
    },
    /// A frame arrived whole but could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A path from a peer or a user is not a plain relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It starts with `/`.
    #[error("absolute paths are not allowed")]
    Absolute,
    /// It has a `..` component.
    #[error("`..` is not allowed in a path")]
    ParentDir,
    /// It contains a NUL byte.
    #[error("NUL bytes are not allowed in a path")]
    Nul,
    /// It contains a backslash (a Windows separator, never part of our names).
    #[error("backslashes are not allowed in a path")]
    Backslash,
    /// It is longer than [`crate::MAX_PATH_BYTES`].
    #[error("path of {0} bytes exceeds the {max}-byte limit", max = crate::MAX_PATH_BYTES)]
    TooLong(usize),
    /// One of its components is longer than [`crate::MAX_NAME_BYTES`].
    #[error("path component of {0} bytes exceeds the {max}-byte limit", max = crate::MAX_NAME_BYTES)]
    NameTooLong(usize),
}
