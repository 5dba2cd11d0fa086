//! The connection to the server: made on first use, kept across requests and
//! files, dropped whenever its state is in doubt; and how its failures map
//! onto what the caller should do next.

use std::time::Duration;

use ft_protocol::connection::TcpConnection;
use ft_protocol::{
    ConnectionError, ErrorCode, FileMeta, RemoteError, Request, Response, MAGIC, VERSION,
};
use tokio::net::TcpStream;

use crate::error::Error;

/// Where the server is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Server {
    /// The server as the user wrote it, for messages.
    pub label: String,
    /// Host to resolve.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Bound on connecting and on any silence from the server.
    pub timeout: Duration,
}

/// Why a step failed, and so what to do next.
pub(crate) enum Failure {
    /// Worth another attempt after a pause.
    Retry(Error),
    /// The chunk at this offset failed verification.
    Mismatch(u64),
    /// The remote file is another version now: start over.
    Changed,
    /// No point trying again.
    Fatal(Error),
}

/// One connection slot: empty until needed, emptied when in doubt.
pub(crate) struct Link<'a> {
    pub server: &'a Server,
    conn: Option<TcpConnection>,
}

impl<'a> Link<'a> {
    pub fn new(server: &'a Server) -> Self {
        Self { server, conn: None }
    }

    /// The open connection, connecting and greeting first if there is none.
    pub async fn conn(&mut self) -> Result<&mut TcpConnection, Failure> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => connect(self.server).await?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Forgets the connection: after a failure it may be mid-reply.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// Sends one request and reads one reply.
    pub async fn ask(&mut self, request: &Request) -> Result<Response, Failure> {
        let server = self.server;
        let reply = match self.conn().await?.send(request).await {
            Ok(()) => self.conn().await?.read_response().await,
            Err(err) => Err(err),
        };
        reply.map_err(|err| {
            self.reset();
            lost(server)(err)
        })
    }

    /// The file's description, with its digest if the server has it.
    pub async fn stat(&mut self, path: &str) -> Result<FileMeta, Failure> {
        let request = Request::Stat {
            path: path.to_owned(),
        };
        match self.ask(&request).await? {
            Response::Meta(meta) => Ok(meta),
            Response::Error(err) => Err(remote_failure(self.server, err)),
            _ => Err(protocol(self.server, "unexpected reply to a stat request")),
        }
    }

    /// The file's description, its digest computed by the server if need be.
    pub async fn digest(&mut self, path: &str) -> Result<FileMeta, Failure> {
        let request = Request::Checkpoints {
            path: path.to_owned(),
            first: 1,
            count: 0,
        };
        match self.ask(&request).await? {
            Response::Checkpoints { meta, .. } if meta.sha256.is_some() => Ok(meta),
            Response::Error(err) => Err(remote_failure(self.server, err)),
            _ => Err(protocol(self.server, "bad reply to a checkpoints request")),
        }
    }
}

async fn connect(server: &Server) -> Result<TcpConnection, Failure> {
    let unreachable = |reason: String| {
        Failure::Retry(Error::Connection {
            server: server.label.clone(),
            reason,
        })
    };
    let addrs = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .map_err(|err| unreachable(format!("cannot resolve {}: {err}", server.host)))?;
    let mut last = format!("{} resolves to no address", server.host);
    let mut stream = None;
    for addr in addrs {
        match tokio::time::timeout(server.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(connected)) => {
                stream = Some(connected);
                break;
            }
            Ok(Err(err)) => last = format!("cannot connect to {addr}: {err}"),
            Err(_) => last = format!("cannot connect to {addr}: timed out"),
        }
    }
    let stream = stream.ok_or_else(|| unreachable(last))?;
    let mut conn = TcpConnection::tcp(stream, server.timeout);
    let hello = Request::Hello {
        magic: MAGIC,
        version: VERSION,
    };
    conn.send(&hello).await.map_err(lost(server))?;
    match conn.read_response().await.map_err(lost(server))? {
        Response::Welcome { version } if version == VERSION => Ok(conn),
        Response::Welcome { version } => Err(protocol(
            server,
            &format!("server speaks protocol version {version}; this ftget speaks {VERSION}"),
        )),
        Response::Error(err) => Err(remote_failure(server, err)),
        _ => Err(protocol(server, "unexpected reply to the handshake")),
    }
}

/// Maps a connection failure: a garbled stream means the peer is not an ft
/// server (final); anything else may pass (worth a retry).
pub(crate) fn lost(server: &Server) -> impl Fn(ConnectionError) -> Failure + '_ {
    move |err| match err {
        ConnectionError::Codec(_) | ConnectionError::FrameTooLarge { .. } => {
            protocol(server, &format!("not an ft server, or a broken one: {err}"))
        }
        err => Failure::Retry(Error::Connection {
            server: server.label.clone(),
            reason: format!("connection lost: {err}"),
        }),
    }
}

pub(crate) fn protocol(server: &Server, reason: &str) -> Failure {
    Failure::Fatal(Error::Server {
        server: server.label.clone(),
        reason: reason.to_owned(),
    })
}

pub(crate) fn remote_failure(server: &Server, err: RemoteError) -> Failure {
    let label = server.label.clone();
    match err.code {
        ErrorCode::NotFound
        | ErrorCode::NotAFile
        | ErrorCode::NotADirectory
        | ErrorCode::InvalidPath
        | ErrorCode::PermissionDenied => Failure::Fatal(Error::Refused {
            server: label,
            reason: err,
        }),
        ErrorCode::Busy => Failure::Retry(Error::Connection {
            server: label,
            reason: err.message,
        }),
        ErrorCode::FileChanged => Failure::Changed,
        ErrorCode::Internal => Failure::Retry(Error::Server {
            server: label,
            reason: err.message,
        }),
        ErrorCode::UnsupportedVersion | ErrorCode::BadRequest => Failure::Fatal(Error::Server {
            server: label,
            reason: err.message,
        }),
    }
}
