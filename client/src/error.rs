//! Why a download failed, each with the exit code it maps to.

use std::io;
use std::path::PathBuf;

use ft_protocol::RemoteError;

use crate::exit::Exit;

/// A download failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line does not say enough to act on.
    #[error("{0}")]
    Usage(String),
    /// The server refused the path.
    #[error("{server}: {reason}")]
    Refused {
        /// The server, as the user named it.
        server: String,
        /// The server's reason.
        reason: RemoteError,
    },
    /// The same chunk failed verification twice.
    #[error("{path}: verification failed twice for the chunk at byte {offset}; partial kept at {}", partial.display())]
    Verification {
        /// The remote path.
        path: String,
        /// Where the failing chunk starts.
        offset: u64,
        /// The partial file, verified up to `offset`.
        partial: PathBuf,
    },
    /// No connection could be made, or it kept failing until the retries ran out.
    #[error("{server}: {reason}")]
    Connection {
        /// The server, as the user named it.
        server: String,
        /// What went wrong last.
        reason: String,
    },
    /// The server broke the protocol or could not serve the request.
    #[error("{server}: {reason}")]
    Server {
        /// The server, as the user named it.
        server: String,
        /// What it did.
        reason: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

impl Error {
    /// The exit code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Refused { .. } => Exit::Refused,
            Error::Verification { .. } => Exit::Verification,
            Error::Connection { .. } => Exit::Connection,
            Error::Server { .. } | Error::Local { .. } => Exit::Failure,
        }
    }

    pub(crate) fn local(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Local { path, source }
    }
}
