//! Why ftget failed, typed end to end: each failure is a variant with its
//! cause as its `source`, so that [`Chain`] (or anyhow's `{:#}`) prints the
//! whole story on one line; each maps to an exit code.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use ft_protocol::{ConnectionError, GetError, ListError, PathError, RemoteError, VERSION};

use crate::exit::Exit;
use crate::folder::{FolderError, Obstacle};
use crate::verify::Unchecked;

/// A download, a listing or the command line failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line does not say enough to act on.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The server refused the path.
    #[error("{server}")]
    Refused {
        /// The server, as the user named it.
        server: String,
        /// The server's reason.
        #[source]
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
    #[error("{server}")]
    Connection {
        /// The server, as the user named it.
        server: String,
        /// What went wrong last.
        #[source]
        source: ConnectError,
    },
    /// The server broke the protocol or could not serve the request.
    #[error("{server}")]
    Server {
        /// The server, as the user named it.
        server: String,
        /// What it did.
        #[source]
        source: ServerError,
    },
    /// A local file could not be read or written.
    #[error("{}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Something stands where ftget would write, and it is left alone.
    #[error("{}: {what}", path.display())]
    InTheWay {
        /// Where.
        path: PathBuf,
        /// What it is.
        what: Obstacle,
    },
    /// A folder of the output could not be made.
    #[error("cannot create folder {}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The server's identity could not be verified.
    #[error("{server}")]
    Identity {
        /// The server, as the user named it.
        server: String,
        /// Why it was refused.
        #[source]
        source: Box<crate::trust::IdentityError>,
    },
    /// The server refused our credentials (no token, wrong token).
    #[error("{server}")]
    Credentials {
        /// The server, as the user named it.
        server: String,
        /// The server's reason.
        #[source]
        reason: RemoteError,
    },
    /// The trust settings (`--ca`, the known-servers file) could not be
    /// used.
    #[error("{server}")]
    Trust {
        /// The server, as the user named it.
        server: String,
        /// Why.
        #[source]
        source: crate::trust::TrustError,
    },
    /// A thread doing the work for these files panicked or was cancelled.
    #[error("a worker thread failed")]
    Worker(#[source] WorkerError),
    /// The server found the same chunk of an upload corrupt twice.
    #[error("{}: the server found the chunk at byte {offset} corrupt twice", path.display())]
    Sent {
        /// The local file.
        path: PathBuf,
        /// Where the chunk starts.
        offset: u64,
    },
    /// A local file kept changing while it was being uploaded.
    #[error("{}: the file keeps changing while it is uploaded; nothing was stored", path.display())]
    Changing {
        /// The local file.
        path: PathBuf,
    },
}

/// Which thread failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A blocking task panicked or was cancelled. Shared: one task may work
    /// for several files, and each of them reports it.
    #[error(transparent)]
    Task(std::sync::Arc<tokio::task::JoinError>),
    /// A hashing thread of the verification engine panicked.
    #[error("a hashing thread panicked")]
    Hasher,
}

impl From<tokio::task::JoinError> for WorkerError {
    fn from(err: tokio::task::JoinError) -> Self {
        WorkerError::Task(std::sync::Arc::new(err))
    }
}

/// What the command line got wrong.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// SERVER is not a host, host:port or `[v6addr]:port`.
    #[error("invalid server {0:?}: expected host, host:port or [v6addr]:port")]
    Server(String),
    /// No PATH, and not `--list`.
    #[error("no PATH given")]
    NoPath,
    /// A LOCAL folder without `-r`.
    #[error("{} is a folder: upload it with -r", .0.display())]
    Folder(PathBuf),
    /// A LOCAL that is neither a file nor a folder.
    #[error("{} is not a regular file or a folder", .0.display())]
    NotAFile(PathBuf),
    /// PATH ends in no file name, and there is no `-o` to name one.
    #[error("cannot tell a file name from {0:?}; name one with -o")]
    NoFileName(String),
    /// With `-r` or several PATHs, `-o` names an existing file.
    #[error("-o {}: with -r or several PATHs, -o names a folder", .0.display())]
    OutputNotFolder(PathBuf),
    /// A PATH is not a plain relative path.
    #[error("invalid path {path:?}")]
    InvalidPath {
        /// The PATH as given.
        path: String,
        /// Why it is refused.
        #[source]
        source: PathError,
    },
    /// A file's output is another file's partial-download name.
    #[error("{} is the partial-download name of {}; download it on its own with -o", output.display(), owner.display())]
    PartialName {
        /// The output that clashes.
        output: PathBuf,
        /// The file whose partial it would be.
        owner: PathBuf,
    },
    /// Two PATHs land on one output.
    #[error("{} is already the output of another PATH; download it on its own with -o", .0.display())]
    SameOutput(PathBuf),
}

/// Why no usable connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name does not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The host name resolves to nothing.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The host.
        host: String,
    },
    /// Connecting to an address failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Connecting to an address took longer than the timeout.
    #[error("cannot connect to {addr}: timed out")]
    ConnectTimeout {
        /// The address.
        addr: SocketAddr,
    },
    /// The connection failed, or went silent, after it was made.
    #[error("connection lost")]
    Lost(#[source] ConnectionError),
    /// The server is at its connection limit.
    #[error(transparent)]
    Busy(RemoteError),
    /// Every retry failed; the last failure is the cause.
    #[error("gave up after {retries} retries")]
    GaveUp {
        /// Retries made.
        retries: u32,
        /// The last failure.
        #[source]
        last: Box<ConnectError>,
    },
}

/// What the server did wrong, or could not do.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The bytes it sent are not frames of this protocol.
    #[error("not an ft server, or a broken one")]
    Garbled(#[source] ConnectionError),
    /// It speaks another protocol version.
    #[error("server speaks protocol version {0}; this ftget speaks {VERSION}")]
    Version(u32),
    /// It does not speak TLS 1.3 with ft's ALPN (an ftserve of version 1
    /// answers so).
    #[error("not an ft server of protocol version {VERSION} (its TLS failed: {0})")]
    Tls(#[source] std::io::Error),
    /// It answered the hello with something else than `Welcome` or `Error`.
    #[error("unexpected reply to the handshake")]
    Handshake,
    /// It answered a `Stat` with something else than `Meta`.
    #[error("unexpected reply to a stat request")]
    StatReply,
    /// A reply to an upload's request that does not answer it.
    #[error("unexpected reply to an upload request")]
    UploadReply,
    /// The connections carrying an upload's chunks were lost.
    #[error("the connections carrying the upload were lost")]
    Lost,
    /// A `Checkpoints` reply that does not fit the request.
    #[error("bad reply to a checkpoints request")]
    CheckpointsReply,
    /// A `Get` reply out of order.
    #[error(transparent)]
    Get(#[from] GetError),
    /// A `List` reply out of order.
    #[error(transparent)]
    List(#[from] ListError),
    /// A resume point the hash chain cannot start from.
    #[error("resume point is not on a block boundary")]
    ResumePoint,
    /// The reply ended, in order, before the transfer did.
    #[error("the transfer stopped before its end")]
    StoppedEarly,
    /// The server reported a failure of its own, or a request it could not take.
    #[error(transparent)]
    Remote(RemoteError),
    /// The file changed on every attempt.
    #[error("{path} keeps changing on the server")]
    KeepsChanging {
        /// The remote path.
        path: String,
    },
    /// The listing changed while it was being read.
    #[error("the listing changed while it was read")]
    ListingChanged,
    /// A listing named an empty path.
    #[error("refused an empty path in the listing of {folder}")]
    EmptyPath {
        /// The folder listed.
        folder: String,
    },
    /// A listing named a path that is not plainly below the folder. (The
    /// path is kept as listed, not escaped: escaping could make a refused
    /// entry cost ftget several times its length; it is made printable where
    /// it is shown.)
    #[error("refused an unsafe path in the listing of {folder}: \"{path}\"")]
    UnsafePath {
        /// The folder listed.
        folder: String,
        /// The path as listed.
        path: String,
        /// Why it is unsafe.
        #[source]
        source: PathError,
    },
    /// A listing named one path twice.
    #[error("\"{path}\" is listed twice in {folder}")]
    ListedTwice {
        /// The folder listed.
        folder: String,
        /// The path as listed.
        path: String,
    },
    /// A listing longer than ftget will hold.
    #[error(
        "the listing of {folder} has more than {max} entries; download its folders one by one"
    )]
    TooManyEntries {
        /// The folder listed.
        folder: String,
        /// The most ftget holds.
        max: usize,
    },
    /// A listing with more refused entries than ftget will report one by one.
    #[error("the listing of {folder} has more than {max} unsafe or repeated paths; refused whole")]
    TooManyRefused {
        /// The folder listed.
        folder: String,
        /// The most refused entries ftget reports.
        max: usize,
    },
    /// A listing whose paths take more bytes than ftget will hold.
    #[error(
        "the listing of {folder} has more than {} MiB of paths; download its folders one by one",
        max >> 20
    )]
    ListingTooLarge {
        /// The folder listed.
        folder: String,
        /// The most bytes of paths ftget holds.
        max: usize,
    },
}

impl Error {
    /// The exit code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Refused { .. } => Exit::Refused,
            Error::Verification { .. } | Error::Sent { .. } => Exit::Verification,
            Error::Connection { .. } => Exit::Connection,
            Error::Identity { .. } => Exit::Identity,
            Error::Credentials { .. } => Exit::Credentials,
            Error::Trust { .. } => Exit::Failure,
            Error::Server { .. }
            | Error::Local { .. }
            | Error::InTheWay { .. }
            | Error::Folder { .. }
            | Error::Changing { .. }
            | Error::Worker(_) => Exit::Failure,
        }
    }

    /// A local failure on `path`.
    pub(crate) fn local(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Local { path, source }
    }

    /// A folder of the output that could not be made, or what stands in
    /// its way.
    pub(crate) fn folder(err: FolderError) -> Error {
        match err {
            FolderError::Io { path, source } => Error::Folder { path, source },
            other => other.into(),
        }
    }

    /// A check of the local file at `path` that could not be carried out.
    pub(crate) fn unchecked(path: impl Into<PathBuf>) -> impl FnOnce(Unchecked) -> Error {
        let path = path.into();
        move |unchecked| match unchecked {
            Unchecked::Read(source) => Error::Local { path, source },
            Unchecked::Panicked => Error::Worker(WorkerError::Hasher),
        }
    }

    /// The same failure, after `retries` retries that all failed: a lost
    /// connection says so; any other failure speaks for itself.
    pub(crate) fn gave_up(self, retries: u32) -> Error {
        match self {
            Error::Connection { server, source } if retries > 0 => Error::Connection {
                server,
                source: ConnectError::GaveUp {
                    retries,
                    last: Box::new(source),
                },
            },
            other => other,
        }
    }
}

impl From<FolderError> for Error {
    fn from(err: FolderError) -> Self {
        match err {
            FolderError::InTheWay { path, what } => Error::InTheWay { path, what },
            FolderError::Io { path, source } => Error::Local { path, source },
        }
    }
}

/// An error and its causes, `: `-separated, as one line.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ft_protocol::ErrorCode;

    fn chain(err: &Error) -> String {
        Chain(err).to_string()
    }

    #[test]
    fn chains_read_as_one_line_from_the_server_to_the_cause() {
        let refused = Error::Refused {
            server: "host:7878".into(),
            reason: RemoteError::new(ErrorCode::NotFound, "no such file: a.txt"),
        };
        assert_eq!(chain(&refused), "host:7878: no such file: a.txt");
        let lost = Error::Connection {
            server: "host:7878".into(),
            source: ConnectError::Lost(ConnectionError::Timeout(std::time::Duration::from_secs(1))),
        };
        assert_eq!(
            chain(&lost),
            "host:7878: connection lost: no progress for 1 s"
        );
        assert_eq!(
            chain(&lost.gave_up(3)),
            "host:7878: gave up after 3 retries: connection lost: no progress for 1 s"
        );
        let unsafe_path = Error::Server {
            server: "h".into(),
            source: ServerError::UnsafePath {
                folder: "docs".into(),
                path: "../x".into(),
                source: PathError::ParentDir,
            },
        };
        assert_eq!(
            chain(&unsafe_path),
            "h: refused an unsafe path in the listing of docs: \"../x\": `..` is not allowed in a path"
        );
        let local = Error::local("out/f.part")(io::Error::other("disk full"));
        assert_eq!(chain(&local), "out/f.part: disk full");
    }

    #[test]
    fn only_a_lost_connection_says_it_gave_up() {
        let server = || Error::Server {
            server: "h".into(),
            source: ServerError::ListingChanged,
        };
        assert_eq!(chain(&server().gave_up(3)), chain(&server()));
        let busy = || Error::Connection {
            server: "h".into(),
            source: ConnectError::Busy(RemoteError::new(ErrorCode::Busy, "busy")),
        };
        assert_eq!(chain(&busy().gave_up(0)), "h: busy");
    }

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        let usage: Error = UsageError::NoPath.into();
        assert_eq!(usage.exit(), Exit::Usage);
        let refused = Error::Refused {
            server: "h".into(),
            reason: RemoteError::new(ErrorCode::NotFound, "x"),
        };
        assert_eq!(refused.exit(), Exit::Refused);
        let verification = Error::Verification {
            path: "p".into(),
            offset: 0,
            partial: "p.part".into(),
        };
        assert_eq!(verification.exit(), Exit::Verification);
        let lost = Error::Connection {
            server: "h".into(),
            source: ConnectError::NoAddress { host: "h".into() },
        };
        assert_eq!(lost.exit(), Exit::Connection);
        assert_eq!(
            Error::local("f")(io::Error::other("x")).exit(),
            Exit::Failure
        );
    }
}
