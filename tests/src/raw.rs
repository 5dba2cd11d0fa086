//! `Raw`: a protocol client driven by hand over a blocking socket, to speak
//! to the server in ways ftget never would; and [`read_frame`], the one
//! place the harness reads a frame off a socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ft_protocol::frame::{body_len, LEN_PREFIX};
use ft_protocol::{ClientHandshake, ErrorCode, Request, Response};

/// Longest a harness socket waits to connect or for one read.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Most frames [`Raw::recv_until`] reads for one reply before it fails the
/// test: far more than any reply these tests read (a download of 64 MiB
/// is 82 frames).
pub const MAX_REPLY_FRAMES: usize = 10_000;

/// Reads one frame body from a blocking socket; `None` on EOF, on an error,
/// or on a length prefix over the protocol's cap. Bounded by the socket's
/// read timeout, which every caller sets ([`IO_TIMEOUT`]).
pub(crate) fn read_frame(stream: &mut TcpStream) -> Option<bytes::Bytes> {
    let mut prefix = [0u8; LEN_PREFIX];
    stream.read_exact(&mut prefix).ok()?;
    let len = body_len(prefix).ok()?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(body.into())
}

/// A hand-driven protocol client over a blocking socket, for speaking to the
/// server in ways ftget never would. Every read waits at most [`IO_TIMEOUT`].
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connects");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        Self { stream }
    }

    /// Connects and completes the handshake.
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
    }

    /// Sends raw bytes; errors are ignored (the server may already have closed).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next response; `None` when the server closed the connection (or
    /// sent nothing for [`IO_TIMEOUT`]).
    pub fn recv(&mut self) -> Option<Response> {
        let body = read_frame(&mut self.stream)?;
        Some(ft_protocol::codec::decode_response(body).expect("server sends valid frames"))
    }

    /// Reads responses until `last` makes something of one, and returns
    /// that. Fails the test, naming `what`, if the server closes first or
    /// sends more than [`MAX_REPLY_FRAMES`] frames without an end.
    pub fn recv_until<T>(&mut self, what: &str, mut last: impl FnMut(Response) -> Option<T>) -> T {
        for _ in 0..MAX_REPLY_FRAMES {
            let Some(response) = self.recv() else {
                panic!("{what}: the connection closed before the reply ended");
            };
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
    /// after any number of frames (up to 1000).
    pub fn closes(&mut self) -> bool {
        for _ in 0..1000 {
            if read_frame(&mut self.stream).is_none() {
                return true;
            }
        }
        false
    }
}
