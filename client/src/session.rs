//! The session layer: the connection to the server (made on first use, kept
//! across requests and files, dropped whenever its state is in doubt), the
//! one-reply requests every mode makes on it, what a failure means for the
//! next attempt, and the one retry policy with backoff that every mode uses.

use std::time::Duration;

use std::sync::Arc;

use ft_protocol::connection::ClientTlsConnection;
use ft_protocol::{
    ClientHandshake, ConnectionError, Digest, ErrorCode, FileMeta, HandshakeError, RemoteError,
    Request, Response, Token, MAX_CHECKPOINTS,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::{ConnectError, Error, ServerError};
use crate::trust::{self, Trust};

/// First pause before a retry; it doubles with each failure in a row.
const RETRY_BASE: Duration = Duration::from_millis(250);

/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Most bytes of a server's message that ftget keeps: its first and last
/// halves (a path at one end, the reason at the other). A message is a line
/// for people, and a batch's summary holds one for every file that failed:
/// the megabytes a server may put in one (a frame holds 2 MiB) would be
/// held that many times over.
const MAX_MESSAGE: usize = 128;

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
    /// Whom to trust as this server.
    pub trust: Arc<Trust>,
    /// The token to present, if any.
    pub token: Option<Token>,
    /// The congestion control to send with (ftput sends; ftget leaves the
    /// kernel's); tried quietly, as the kernel may not offer it.
    pub congestion: Option<String>,
}

impl Server {
    /// SERVER as the user wrote it, checked, with whom to trust as it, the
    /// token to present and the congestion control to send with.
    pub fn new(
        label: &str,
        timeout: Duration,
        trust: trust::TrustSettings,
        token: Option<Token>,
        congestion: Option<String>,
    ) -> Result<Self, Error> {
        let (host, port) = crate::addr::parse_server(label)?;
        let trust = Trust::new(&host, port, trust).map_err(|source| Error::Trust {
            server: label.to_owned(),
            source,
        })?;
        Ok(Self {
            label: label.to_owned(),
            host,
            port,
            timeout,
            trust: Arc::new(trust),
            token,
            congestion,
        })
    }
}

/// Why a step failed, and so what to do next.
#[derive(Debug)]
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
    conn: Option<ClientTlsConnection>,
    /// The hello sent on it whose answer is still to be read: the first
    /// requests go out behind the hello, not a round trip after it.
    greeting: Option<ClientHandshake>,
}

impl<'a> Link<'a> {
    pub fn new(server: &'a Server) -> Self {
        Self {
            server,
            conn: None,
            greeting: None,
        }
    }

    /// The open connection, connecting and sending the hello first if
    /// there is none. Its answer is read before the first reply (`read`).
    pub async fn conn(&mut self) -> Result<&mut ClientTlsConnection, Failure> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let (conn, greeting) = connect(self.server).await?;
                self.greeting = Some(greeting);
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// Forgets the connection: after a failure it may be mid-reply.
    pub fn reset(&mut self) {
        self.conn = None;
        self.greeting = None;
    }

    /// Reads the server's answer to the hello, if it is still owed.
    async fn greeted(&mut self) -> Result<(), Failure> {
        let server = self.server;
        let (Some(handshake), Some(conn)) = (self.greeting.take(), self.conn.as_mut()) else {
            return Ok(());
        };
        let welcome = conn.read_response().await.map_err(|err| lost(server, err));
        let answer = welcome.and_then(|welcome| match handshake.receive(welcome) {
            Ok(_) => Ok(()),
            Err(HandshakeError::Version { server: version }) => {
                Err(broken(server, ServerError::Version(version)))
            }
            Err(HandshakeError::Refused(err)) => Err(remote(server, err)),
            Err(HandshakeError::Unexpected { .. }) => Err(broken(server, ServerError::Handshake)),
        });
        if answer.is_err() {
            self.reset();
        }
        answer
    }

    /// Sends requests ahead of their replies, in one write.
    pub async fn send_all(&mut self, requests: &[Request]) -> Result<(), Failure> {
        let server = self.server;
        let sent = self.conn().await?.send_all(requests).await;
        sent.map_err(|err| {
            self.reset();
            lost(server, err)
        })
    }

    /// Sends an upload's `Chunk` request and then its bytes as `Data`
    /// requests, each payload written without a copy.
    pub async fn send_chunk(
        &mut self,
        chunk: &Request,
        pieces: &[bytes::Bytes],
    ) -> Result<(), Failure> {
        let server = self.server;
        let conn = self.conn().await?;
        let mut sent = conn.send(chunk).await;
        for piece in pieces {
            if sent.is_err() {
                break;
            }
            sent = conn.send_put_data(piece.clone()).await;
        }
        sent.map_err(|err| {
            self.reset();
            lost(server, err)
        })
    }

    /// The next reply on the connection; the connection must be open (a new
    /// one would owe no reply).
    pub async fn read(&mut self) -> Result<Response, Failure> {
        let server = self.server;
        self.greeted().await?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(lost(server, ConnectionError::Closed));
        };
        conn.read_response().await.map_err(|err| {
            self.reset();
            lost(server, err)
        })
    }

    /// Sends one request and reads the first frame of its reply.
    pub async fn ask(&mut self, request: &Request) -> Result<Response, Failure> {
        let server = self.server;
        let sent = self.conn().await?.send(request).await;
        sent.map_err(|err| {
            self.reset();
            lost(server, err)
        })?;
        self.read().await
    }

    /// A reply that breaks the protocol: the rest of it may still be on the
    /// way, so the connection goes.
    fn broken(&mut self, source: ServerError) -> Failure {
        self.reset();
        broken(self.server, source)
    }

    /// The file's description, with its digest if the server has it.
    pub async fn stat(&mut self, path: &str) -> Result<FileMeta, Failure> {
        let request = Request::Stat {
            path: path.to_owned(),
        };
        match self.ask(&request).await? {
            Response::Meta(meta) => Ok(meta),
            Response::Error(err) => Err(remote(self.server, err)),
            _ => Err(self.broken(ServerError::StatReply)),
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
            Response::Error(err) => Err(remote(self.server, err)),
            _ => Err(self.broken(ServerError::CheckpointsReply)),
        }
    }

    /// The server's checkpoint states of `path` for boundaries `1..=count`,
    /// asked for in pages, and the file's digest as the last page gave it;
    /// `Changed` if the file is no longer `meta`.
    pub async fn checkpoints(
        &mut self,
        path: &str,
        meta: &FileMeta,
        count: u64,
    ) -> Result<(Vec<Digest>, Option<Digest>), Failure> {
        let mut states = Vec::new();
        let mut sha256 = None;
        while (states.len() as u64) < count {
            let next = states.len() as u64 + 1;
            let want = (count - states.len() as u64).min(u64::from(MAX_CHECKPOINTS)) as u32;
            let request = Request::Checkpoints {
                path: path.to_owned(),
                first: next,
                count: want,
            };
            match self.ask(&request).await? {
                Response::Checkpoints { meta: now, .. } if !now.same_version(meta) => {
                    return Err(Failure::Changed)
                }
                Response::Checkpoints {
                    meta: now,
                    first,
                    states: page,
                } if first == next && !page.is_empty() && page.len() <= want as usize => {
                    states.extend(page);
                    sha256 = now.sha256;
                }
                Response::Error(err) => return Err(remote(self.server, err)),
                _ => return Err(self.broken(ServerError::CheckpointsReply)),
            }
        }
        Ok((states, sha256))
    }
}

/// Connects, secures the connection and sends the hello, whose answer the
/// caller reads.
async fn connect(server: &Server) -> Result<(ClientTlsConnection, ClientHandshake), Failure> {
    let unreachable = |source| {
        Failure::Retry(Error::Connection {
            server: server.label.clone(),
            source,
        })
    };
    let addrs = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .map_err(|source| {
            unreachable(ConnectError::Resolve {
                host: server.host.clone(),
                source,
            })
        })?;
    let mut last = ConnectError::NoAddress {
        host: server.host.clone(),
    };
    let mut stream = None;
    for addr in addrs {
        match tokio::time::timeout(server.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(connected)) => {
                stream = Some(connected);
                break;
            }
            Ok(Err(source)) => last = ConnectError::Connect { addr, source },
            Err(_) => last = ConnectError::ConnectTimeout { addr },
        }
    }
    let stream = stream.ok_or_else(|| unreachable(last))?;
    if let Some(name) = &server.congestion {
        let _ = ft_protocol::connection::set_congestion(&stream, name);
    }
    let mut conn = secure(server, stream).await?;
    let handshake = ClientHandshake {
        token: server.token.clone(),
    };
    conn.send(&handshake.hello())
        .await
        .map_err(|err| lost(server, err))?;
    Ok((conn, handshake))
}

/// The TLS handshake, within the timeout: the server's identity is checked
/// (see `trust`) before anything of ft, a token above all, is sent.
async fn secure(server: &Server, stream: TcpStream) -> Result<ClientTlsConnection, Failure> {
    ft_protocol::connection::without_delay(&stream);
    let name = ServerName::try_from(server.host.clone())
        .or_else(|_| ServerName::try_from("ftserve"))
        .map_err(|_| broken(server, ServerError::Handshake))?;
    let connector = tokio_rustls::TlsConnector::from(server.trust.config());
    let handshake = tokio::time::timeout(server.timeout, connector.connect(name, stream)).await;
    let tls = match handshake {
        Err(_) => return Err(lost(server, ConnectionError::Timeout(server.timeout))),
        Ok(Err(err)) => {
            if let Some(refusal) = trust::refusal(&err) {
                return Err(Failure::Fatal(Error::Identity {
                    server: server.label.clone(),
                    source: Box::new(refusal),
                }));
            }
            // A peer that spoke, but not TLS 1.3 with ft's ALPN, is not an
            // ft server of this version; a reset or an early close may pass.
            if err
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return Err(broken(server, ServerError::Tls(err)));
            }
            return Err(lost(server, ConnectionError::Io(err)));
        }
        Ok(Ok(tls)) => tls,
    };
    let session = tls.get_ref().1;
    if session.alpn_protocol() != Some(ft_protocol::tls::ALPN) {
        return Err(broken(server, ServerError::Handshake));
    }
    let cert = session.peer_certificates().and_then(|chain| chain.first());
    server.trust.confirm(cert).map_err(|err| {
        Failure::Fatal(Error::Trust {
            server: server.label.clone(),
            source: err,
        })
    })?;
    Ok(ClientTlsConnection::new(tls, server.timeout))
}

/// A connection failure: a garbled stream means the peer is not an ft
/// server (final); anything else may pass (worth a retry).
pub(crate) fn lost(server: &Server, err: ConnectionError) -> Failure {
    match err {
        ConnectionError::Codec(_) | ConnectionError::FrameTooLarge { .. } => {
            broken(server, ServerError::Garbled(err))
        }
        err => Failure::Retry(Error::Connection {
            server: server.label.clone(),
            source: ConnectError::Lost(err),
        }),
    }
}

/// The server did something no retry will mend.
pub(crate) fn broken(server: &Server, source: ServerError) -> Failure {
    Failure::Fatal(Error::Server {
        server: server.label.clone(),
        source,
    })
}

/// What the server's refusal means for the next attempt. Every refusal
/// comes this way, and leaves with its message cut to [`MAX_MESSAGE`].
pub(crate) fn remote(server: &Server, err: RemoteError) -> Failure {
    let err = shortened(err);
    let label = server.label.clone();
    match err.code {
        ErrorCode::NotFound
        | ErrorCode::NotAFile
        | ErrorCode::NotADirectory
        | ErrorCode::InvalidPath
        | ErrorCode::PermissionDenied
        | ErrorCode::AlreadyExists
        | ErrorCode::NoSpace
        | ErrorCode::TooLarge
        | ErrorCode::NotAllowed => Failure::Fatal(Error::Refused {
            server: label,
            reason: err,
        }),
        ErrorCode::Busy => Failure::Retry(Error::Connection {
            server: label,
            source: ConnectError::Busy(err),
        }),
        ErrorCode::FileChanged => Failure::Changed,
        ErrorCode::Internal => Failure::Retry(Error::Server {
            server: label,
            source: ServerError::Remote(err),
        }),
        ErrorCode::UnsupportedVersion | ErrorCode::BadRequest | ErrorCode::Mismatch => {
            broken(server, ServerError::Remote(err))
        }
        ErrorCode::Unauthorized => Failure::Fatal(Error::Credentials {
            server: label,
            reason: err,
        }),
    }
}

/// `err` with its message cut to [`MAX_MESSAGE`] bytes around an ellipsis
/// (on character boundaries).
fn shortened(mut err: RemoteError) -> RemoteError {
    let message = &err.message;
    if message.len() > MAX_MESSAGE {
        let half = MAX_MESSAGE / 2;
        let head = (0..=half).rev().find(|&at| message.is_char_boundary(at));
        let tail = (message.len() - half..=message.len()).find(|&at| message.is_char_boundary(at));
        let (head, tail) = (head.unwrap_or(0), tail.unwrap_or(message.len()));
        let mut kept = String::with_capacity(MAX_MESSAGE + '…'.len_utf8());
        kept.push_str(&message[..head]);
        kept.push('…');
        kept.push_str(&message[tail..]);
        err.message = kept;
    }
    err
}

/// The retry policy: this many failed attempts in a row are allowed, each
/// followed by a pause that grows exponentially, with jitter.
#[derive(Debug)]
pub(crate) struct Retries {
    allowed: u32,
    failures: u32,
}

impl Retries {
    pub fn new(allowed: u32) -> Self {
        Self {
            allowed,
            failures: 0,
        }
    }

    /// Verified progress since the last failure: the next one starts a
    /// fresh count, so a flaky link that keeps moving gets through.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Counts a failure: waits before the next attempt, or gives up with
    /// `err` once the retries are spent.
    pub async fn failed(&mut self, err: Error) -> Result<(), Error> {
        self.failures += 1;
        if self.failures > self.allowed {
            return Err(err);
        }
        tokio::time::sleep(backoff(self.failures)).await;
        Ok(())
    }

    /// The retries allowed, for a message that says they were all spent.
    pub fn allowed(&self) -> u32 {
        self.allowed
    }
}

/// Exponential backoff with jitter: half to all of `RETRY_BASE * 2^(n-1)`.
fn backoff(failures: u32) -> Duration {
    let exp = RETRY_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    exp.min(RETRY_MAX).mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Runs a request `step` on `link` until it succeeds, fails for good, or
/// the retries run out; the connection is dropped after each failure. A
/// step that finds what it reads changing (a listing) fails with
/// `ListingChanged`.
pub(crate) async fn retrying<'s, T>(
    link: &mut Link<'s>,
    retries: u32,
    mut step: impl AsyncFnMut(&mut Link<'s>) -> Result<T, Failure>,
) -> Result<T, Error> {
    let mut policy = Retries::new(retries);
    loop {
        let err = match step(link).await {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Retry(err)) => err,
            Err(Failure::Changed | Failure::Mismatch(_)) => Error::Server {
                server: link.server.label.clone(),
                source: ServerError::ListingChanged,
            },
        };
        link.reset();
        policy.failed(err).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for failures in 1..40 {
            let full = RETRY_BASE
                .saturating_mul(1 << (failures - 1).min(16))
                .min(RETRY_MAX);
            let pause = backoff(failures);
            assert!(pause >= full / 2 && pause <= full, "{failures}: {pause:?}");
        }
        assert!(backoff(30) <= RETRY_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_allow_so_many_failures_in_a_row_and_then_give_up() {
        let err = || Error::Connection {
            server: "h".into(),
            source: ConnectError::NoAddress { host: "h".into() },
        };
        let mut retries = Retries::new(2);
        assert!(retries.failed(err()).await.is_ok());
        assert!(retries.failed(err()).await.is_ok());
        retries.progressed();
        assert!(
            retries.failed(err()).await.is_ok(),
            "a fresh count after progress"
        );
        assert!(retries.failed(err()).await.is_ok());
        match retries.failed(err()).await {
            Err(Error::Connection {
                source: ConnectError::NoAddress { .. },
                ..
            }) => {}
            other => panic!("the last failure, as it was: {other:?}"),
        }
    }

    #[test]
    fn refusals_are_final_and_the_rest_worth_a_retry() {
        let server = Server {
            label: "h".into(),
            host: "h".into(),
            port: 1,
            timeout: Duration::from_secs(1),
            trust: Arc::new(Trust::new("h", 1, Default::default()).expect("trust")),
            token: None,
            congestion: None,
        };
        let failure = |code| remote(&server, RemoteError::new(code, "x"));
        assert!(matches!(
            failure(ErrorCode::NotFound),
            Failure::Fatal(Error::Refused { .. })
        ));
        assert!(matches!(failure(ErrorCode::Busy), Failure::Retry(_)));
        assert!(matches!(failure(ErrorCode::Internal), Failure::Retry(_)));
        assert!(matches!(failure(ErrorCode::FileChanged), Failure::Changed));
        assert!(matches!(
            failure(ErrorCode::BadRequest),
            Failure::Fatal(Error::Server { .. })
        ));
        assert!(matches!(
            lost(&server, ConnectionError::Truncated),
            Failure::Retry(Error::Connection { .. })
        ));
        assert!(matches!(
            lost(&server, ConnectionError::FrameTooLarge { max: 1 }),
            Failure::Fatal(Error::Server { .. })
        ));
    }

    #[test]
    fn a_server_message_is_kept_to_a_line() {
        let message = |text: &str| shortened(RemoteError::new(ErrorCode::NotFound, text)).message;
        assert_eq!(message("no such file: a.txt"), "no such file: a.txt");
        let exact = "x".repeat(MAX_MESSAGE);
        assert_eq!(message(&exact), exact);
        let long = format!("{}: not a file", "é".repeat(MAX_MESSAGE));
        let kept = message(&long);
        assert!(kept.len() <= MAX_MESSAGE + '…'.len_utf8(), "{}", kept.len());
        assert!(kept.starts_with("éé") && kept.contains("é…é"), "{kept}");
        assert!(
            kept.ends_with(": not a file"),
            "the reason at the end: {kept}"
        );
        assert!(kept.capacity() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
