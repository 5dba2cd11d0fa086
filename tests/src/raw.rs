//! `Raw`: a protocol client driven by hand over a blocking socket, to speak
//! to the server in ways ftget never would; [`read_frame`], the one place
//! the harness reads a frame off a stream; and the TLS both ends of the
//! harness use: the shared identity every server of the test process shows
//! (`state_dir()`), as a rustls server configuration, and a client
//! configuration pinned to it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ft_client::trust::{Trust, TrustSettings};
use ft_protocol::frame::{body_len, LEN_PREFIX};
use ft_protocol::tls::Fingerprint;
use ft_protocol::{ClientHandshake, ErrorCode, Request, Response};
use ft_server::identity::Identity;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::env::state_dir;

/// Longest a harness socket waits to connect or for one read.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Most frames [`Raw::recv_until`] reads for one reply before it fails the
/// test: far more than any reply these tests read (a download of 64 MiB
/// is 82 frames).
pub const MAX_REPLY_FRAMES: usize = 10_000;

/// The identity every `ftserve` of this test process shows (the one in
/// [`state_dir`]), and the harness's own servers too; made here if no
/// server has made it yet (ftserve and this agree on one key when both
/// make it at once).
pub(crate) fn shared_identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| Identity::in_state_dir(state_dir()).expect("the shared identity"))
}

/// The fingerprint of the identity every server of the test process shows
/// (the one in [`state_dir`](crate::state_dir)), as ftserve prints it.
pub fn shared_fingerprint() -> Fingerprint {
    shared_identity().fingerprint
}

/// A TLS client configuration that accepts only the server key `pin`, and
/// records nothing.
fn client_config(addr: SocketAddr, pin: Fingerprint) -> Arc<rustls::ClientConfig> {
    let settings = TrustSettings {
        pin: Some(pin),
        ..TrustSettings::default()
    };
    Trust::new(&addr.ip().to_string(), addr.port(), settings)
        .expect("a pinned client configuration")
        .config()
}

/// Reads one frame body from a blocking stream; `None` on EOF, on an error,
/// or on a length prefix over the protocol's cap. Bounded by the socket's
/// read timeout, which every caller sets ([`IO_TIMEOUT`]).
pub(crate) fn read_frame(stream: &mut impl Read) -> Option<bytes::Bytes> {
    next_frame(stream).ok()
}

/// Why [`next_frame`] has no frame.
enum NoFrame {
    /// Nothing came within the read timeout.
    Silent,
    /// The peer closed (cleanly or not), or sent what is no frame.
    Closed,
}

/// Reads one frame body from a blocking stream, telling a read that timed
/// out from a connection that ended.
fn next_frame(stream: &mut impl Read) -> Result<bytes::Bytes, NoFrame> {
    let ended = |err: io::Error| match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NoFrame::Silent,
        _ => NoFrame::Closed,
    };
    let mut prefix = [0u8; LEN_PREFIX];
    stream.read_exact(&mut prefix).map_err(ended)?;
    let len = body_len(prefix).map_err(|_| NoFrame::Closed)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(ended)?;
    Ok(body.into())
}

/// What a [`Raw`] speaks over: TLS, as every ft client of version 2 does, or
/// bare TCP, for what a server meets before any TLS. Bytes written go
/// inside TLS when there is TLS.
pub enum Link {
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Plain(TcpStream),
}

impl Link {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tls(tls) => tls.get_ref(),
            Self::Plain(tcp) => tcp,
        }
    }

    /// Shuts down the socket as [`TcpStream::shutdown`] does. Over TLS, a
    /// shutdown of the writing half first says `close_notify`, so the
    /// server reads a clean end of the stream, as it would on bare TCP.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if let Self::Tls(tls) = self {
            if how != Shutdown::Read {
                tls.conn.send_close_notify();
                tls.flush()?;
            }
        }
        self.tcp().shutdown(how)
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tls(tls) => tls.read(buf),
            Self::Plain(tcp) => tcp.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tls(tls) => tls.write(buf),
            Self::Plain(tcp) => tcp.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tls(tls) => tls.flush(),
            Self::Plain(tcp) => tcp.flush(),
        }
    }
}

/// A hand-driven protocol client over a blocking socket, for speaking to the
/// server in ways ftget never would. Every read waits at most [`IO_TIMEOUT`].
pub struct Raw {
    pub stream: Link,
}

impl Raw {
    /// Connects and completes the TLS handshake with a server whose key is
    /// the [`shared_fingerprint`], and says nothing more: the ft
    /// conversation is the test's.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_pinned(addr, shared_fingerprint())
    }

    /// [`Raw::connect`] to a server showing the key `pin`.
    pub fn connect_pinned(addr: SocketAddr, pin: Fingerprint) -> Self {
        let tcp = Self::tcp(addr);
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(client_config(addr, pin), name).expect("a TLS client");
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .expect("a TLS handshake with the server");
        }
        Self {
            stream: Link::Tls(Box::new(tls)),
        }
    }

    /// Connects over bare TCP, without TLS: for what a server meets before
    /// any TLS (an older client, a port scanner, garbage).
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            stream: Link::Plain(Self::tcp(addr)),
        }
    }

    fn tcp(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connects");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        stream
    }

    /// Connects, over TLS, and completes the ft handshake.
    pub fn greeted(addr: SocketAddr) -> Self {
        let mut raw = Self::connect(addr);
        raw.send(&ClientHandshake::default().hello());
        let welcome = raw.recv().expect("the server answers the hello");
        assert_eq!(
            ClientHandshake::default().receive(welcome),
            Ok(ft_protocol::VERSION),
            "welcomed in this version"
        );
        raw
    }

    pub fn send(&mut self, request: &Request) {
        let frame = ft_protocol::codec::encode(request).expect("encodes");
        self.stream.write_all(&frame).expect("sends");
        self.stream.flush().expect("sends");
    }

    /// Sends raw bytes; errors are ignored (the server may already have closed).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
    }

    /// The next response; `None` when the server closed the connection (or
    /// sent nothing for [`IO_TIMEOUT`]).
    pub fn recv(&mut self) -> Option<Response> {
        let body = read_frame(&mut self.stream)?;
        Some(ft_protocol::codec::decode_response(body).expect("server sends valid frames"))
    }

    /// Reads responses until `last` makes something of one, and returns
    /// that. Fails the test, naming `what`, if the server closes first,
    /// falls silent for [`IO_TIMEOUT`], or sends more than
    /// [`MAX_REPLY_FRAMES`] frames without an end.
    pub fn recv_until<T>(&mut self, what: &str, mut last: impl FnMut(Response) -> Option<T>) -> T {
        for frames in 0..MAX_REPLY_FRAMES {
            let body = match next_frame(&mut self.stream) {
                Ok(body) => body,
                Err(NoFrame::Closed) => {
                    panic!("{what}: the connection closed before the reply ended, after {frames} frames")
                }
                Err(NoFrame::Silent) => panic!(
                    "{what}: nothing for {IO_TIMEOUT:?} before the reply ended, after {frames} frames"
                ),
            };
            let response =
                ft_protocol::codec::decode_response(body).expect("server sends valid frames");
            if let Some(done) = last(response) {
                return done;
            }
        }
        panic!("{what}: no end after {MAX_REPLY_FRAMES} frames");
    }

    /// Sends `Hello` with any version (built here, not by the handshake,
    /// which only speaks the current one) and reads the answer.
    pub fn hello(&mut self, version: u32) -> Option<Response> {
        self.send(&Request::Hello {
            magic: ft_protocol::MAGIC,
            version,
            token: None,
        });
        self.recv()
    }

    /// The error code of the next response, which must be an error.
    pub fn error_code(&mut self) -> ErrorCode {
        match self.recv() {
            Some(Response::Error(err)) => err.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Whether the server closes the connection within the read timeout,
    /// after any number of frames (up to 1000). A read that times out is
    /// not a close.
    pub fn closes(&mut self) -> bool {
        for _ in 0..1000 {
            match next_frame(&mut self.stream) {
                Ok(_) => {}
                Err(NoFrame::Closed) => return true,
                Err(NoFrame::Silent) => return false,
            }
        }
        false
    }
}
