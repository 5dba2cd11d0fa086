//! The async driver: frames over any byte stream, the only module that does
//! I/O. It holds no rules of the protocol: frames are split by [`frame`],
//! turned into messages by [`codec`], and checked by the types in
//! [`crate::handshake`], [`crate::get`] and [`crate::list`].
//!
//! Reading fills a buffer from the stream and takes whole frames out of it;
//! [`frame::decode`] checks each length prefix against the cap before it
//! reserves room for the body. Writing goes straight to the stream: a
//! message as one buffer, a data payload as a small header plus the payload
//! itself, without copying it; over plain TCP, file bytes can go from the
//! page cache to the socket by `sendfile(2)`. Every read and write must make
//! progress within the connection's timeout: it bounds silence, not the
//! length of a transfer, so a slow link is not cut.
//!
//! [`frame`]: crate::frame
//! [`frame::decode`]: crate::frame::decode

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

use crate::error::{CodecError, ConnectionError};
use crate::message::{Request, Response};
use crate::{codec, frame, MAX_FRAME};

/// Room made in a full read buffer before a read: a read takes what has
/// arrived, many small frames at once, up to this much.
const READ_ROOM: usize = 64 * 1024;

/// How much of a file is read at a time to be sent over a stream that is
/// not a bare socket (TLS): an eighth of a `Data` frame, so that what a
/// connection holds of a file is this one buffer, reused.
const FILE_PIECE: usize = 128 * 1024;

/// A byte stream a connection can run over. Plain TCP also offers its
/// socket, so that file bytes can be sent without passing through this
/// process; anything else (an in-memory pipe in tests, a TLS stream) reads
/// them first.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The socket to `sendfile(2)` to, if the stream is a bare socket.
    fn raw_socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl Transport for TcpStream {
    fn raw_socket(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// An in-memory pipe: how tests drive a connection without a socket.
impl Transport for tokio::io::DuplexStream {}

/// The server's end of a TLS connection: file bytes are read, then
/// encrypted in this process.
impl Transport for tokio_rustls::server::TlsStream<TcpStream> {}

/// The client's end of a TLS connection.
impl Transport for tokio_rustls::client::TlsStream<TcpStream> {}

/// The server's end of a connection over TLS, as ftserve serves them.
pub type ServerTlsConnection = Connection<tokio_rustls::server::TlsStream<TcpStream>>;

/// The client's end of a connection over TLS, as ftget makes them.
pub type ClientTlsConnection = Connection<tokio_rustls::client::TlsStream<TcpStream>>;

/// A stream of frames in both directions.
pub struct Connection<S> {
    stream: Pin<Box<TimeoutStream<S>>>,
    /// Bytes read and not yet taken as frames.
    buf: BytesMut,
    timeout: Duration,
    keepalives: u64,
    /// Longest frame body read: [`MAX_FRAME`] unless capped.
    max_frame: usize,
    /// The buffer file bytes are read into, when they cannot go by
    /// `sendfile(2)`; made on first use.
    piece: Vec<u8>,
    /// How file bytes are read on the file system last sent from (by
    /// device), when they cannot go by `sendfile(2)`.
    reads: Option<(u64, ReadMode)>,
}

/// How a file's bytes are read for a stream that is not a bare socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadMode {
    /// Here, if they are in the page cache (`RWF_NOWAIT`); on a blocking
    /// thread if not.
    Cached,
    /// Here: the file system is memory (tmpfs, ramfs), there is no disk to
    /// wait for.
    InMemory,
    /// On a blocking thread: the file system cannot say whether a read
    /// would wait.
    Blocking,
}

/// Turns Nagle's delay off on a socket frames will be written to: they are
/// written whole, so the delay would only add latency to small messages.
/// Failing to turn it off changes nothing else.
pub fn without_delay(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// Asks the kernel to send on `socket` with the congestion control `name`
/// (`TCP_CONGESTION`), and says which one is in effect afterwards. A
/// listening socket passes its choice to the connections it accepts. The
/// kernel refuses an algorithm it has not loaded, and one outside
/// `net.ipv4.tcp_allowed_congestion_control` to a process without
/// `CAP_NET_ADMIN`; the socket then keeps what it had.
pub fn set_congestion(socket: impl std::os::fd::AsFd, name: &str) -> io::Result<String> {
    rustix::net::sockopt::set_tcp_congestion(&socket, name)?;
    congestion(socket)
}

/// The congestion control `socket` sends with.
pub fn congestion(socket: impl std::os::fd::AsFd) -> io::Result<String> {
    Ok(rustix::net::sockopt::tcp_congestion(&socket)?)
}

impl<S: Transport> Connection<S> {
    /// Wraps a byte stream; every read and write must make progress within `timeout`.
    pub fn new(stream: S, timeout: Duration) -> Self {
        let mut stream = TimeoutStream::new(stream);
        stream.set_read_timeout(Some(timeout));
        stream.set_write_timeout(Some(timeout));
        Self {
            stream: Box::pin(stream),
            buf: BytesMut::new(),
            timeout,
            keepalives: 0,
            max_frame: MAX_FRAME,
            piece: Vec::new(),
            reads: None,
        }
    }

    /// Caps the frames this side reads at `max` bytes (at most
    /// [`MAX_FRAME`]): a server reads requests only, and caps them at
    /// [`crate::MAX_REQUEST`], so that a client cannot make it reserve more
    /// for one frame.
    pub fn cap_frames(mut self, max: usize) -> Self {
        self.max_frame = max.min(MAX_FRAME);
        self
    }

    /// The next frame body, or `None` if the peer closed the stream cleanly
    /// between frames. Cancel-safe: bytes read stay in the buffer.
    async fn next_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        loop {
            if let Some(body) = self.take_frame()? {
                return Ok(Some(body));
            }
            // `decode` has made room for the rest of a frame whose length it
            // knows; room is short only between frames.
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(READ_ROOM);
            }
            // Nothing more will be said before the peer answers: what a TLS
            // stream still holds of our last message must go now, or the
            // peer waits for it while we wait for the peer.
            let flushed = self.stream.flush().await;
            flushed.map_err(|err| self.io_error(err))?;
            let read = match self.stream.read_buf(&mut self.buf).await {
                // A TLS peer that closes without close_notify: between
                // frames that cuts nothing (each frame says its length), so
                // it is a close like any other; inside a frame it is
                // `Truncated` below, as on a bare socket.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => 0,
                read => read.map_err(|err| self.io_error(err))?,
            };
            if read == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(ConnectionError::Truncated),
                };
            }
        }
    }

    /// Reads the next request; `None` when the client has closed the connection.
    pub async fn read_request(&mut self) -> Result<Option<Request>, ConnectionError> {
        match self.next_frame().await? {
            None => Ok(None),
            Some(body) => Ok(Some(codec::decode_request_bytes(body)?)),
        }
    }

    /// The next request if it is already whole in the buffer, without
    /// waiting for the stream: how a server finds requests sent ahead.
    pub fn buffered_request(&mut self) -> Option<Result<Request, ConnectionError>> {
        match self.take_frame() {
            Ok(Some(body)) => Some(codec::decode_request_bytes(body).map_err(Into::into)),
            Ok(None) => None,
            Err(err) => Some(Err(err)),
        }
    }

    /// The variant index and body length of each whole frame already in the
    /// buffer, at most `most`, without taking them: what the peer has sent
    /// ahead.
    pub fn frames_ahead(&self, most: usize) -> Vec<(u32, usize)> {
        frame::whole_frames(&self.buf, self.max_frame, most)
    }

    /// The frame at the front of the buffer, if it is whole there.
    fn take_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        let max = self.max_frame;
        frame::decode_within(&mut self.buf, max).map_err(|err| match err {
            CodecError::FrameTooLarge { .. } => ConnectionError::FrameTooLarge { max },
            err => err.into(),
        })
    }

    /// Reads the next response, skipping [`Response::KeepAlive`] frames
    /// (each of which still counts as progress for the timeout); the
    /// connection closing is an error here.
    pub async fn read_response(&mut self) -> Result<Response, ConnectionError> {
        loop {
            let body = self.next_frame().await?.ok_or(ConnectionError::Closed)?;
            match codec::decode_response(body)? {
                Response::KeepAlive => self.keepalives += 1,
                response => return Ok(response),
            }
        }
    }

    /// How many [`Response::KeepAlive`] frames [`Self::read_response`] has
    /// skipped on this connection.
    pub fn keepalives(&self) -> u64 {
        self.keepalives
    }

    /// Writes one message as one frame.
    pub async fn send<M: Serialize>(&mut self, message: &M) -> Result<(), ConnectionError> {
        let frame = codec::encode(message)?;
        let result = self.stream.write_all(&frame).await;
        result.map_err(|err| self.io_error(err))
    }

    /// Writes several messages, one frame each, in one write: a short reply of
    /// several frames, or requests sent ahead of their replies.
    pub async fn send_all<M: Serialize>(&mut self, messages: &[M]) -> Result<(), ConnectionError> {
        let mut frames = Vec::new();
        for message in messages {
            frames.extend_from_slice(&codec::encode(message)?);
        }
        let result = self.stream.write_all(&frames).await;
        result.map_err(|err| self.io_error(err))
    }

    /// Writes one response as one frame; a `Data` payload without copying it.
    pub async fn send_response(&mut self, response: Response) -> Result<(), ConnectionError> {
        match response {
            Response::Data(payload) => self.send_data(payload).await,
            other => self.send(&other).await,
        }
    }

    /// Writes an upload's `Data` request carrying `payload`, without
    /// copying the payload.
    pub async fn send_put_data(&mut self, payload: Bytes) -> Result<(), ConnectionError> {
        let header = codec::put_data_header(payload.len())?;
        let mut frame = Bytes::copy_from_slice(&header).chain(payload);
        let result = self.stream.write_all_buf(&mut frame).await;
        result.map_err(|err| self.io_error(err))
    }

    /// Writes a `Data` frame carrying `payload`, without copying the payload.
    pub async fn send_data(&mut self, payload: Bytes) -> Result<(), ConnectionError> {
        let header = codec::data_header(payload.len())?;
        let mut frame = Bytes::copy_from_slice(&header).chain(payload);
        let result = self.stream.write_all_buf(&mut frame).await;
        result.map_err(|err| self.io_error(err))
    }

    /// Writes a `Data` frame whose payload is the `len` bytes of `file` at
    /// `offset` (at most [`crate::MAX_DATA`]). Over a bare socket the payload
    /// goes by `sendfile(2)`, straight from the page cache, never through
    /// this process; over anything else (TLS) it is read 128 KiB at a time
    /// into one buffer the connection keeps, and written from there: in
    /// place when the bytes are in the page cache or the file system is
    /// memory, on a blocking thread when reading might wait for a disk.
    /// Each step must make progress within the timeout. A file shorter than
    /// promised is an error; the frame is then broken and the connection
    /// must close.
    pub async fn send_file_data(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Result<(), ConnectionError> {
        let header = codec::data_header(len)?;
        let written = self.stream.write_all(&header).await;
        written.map_err(|err| self.io_error(err))?;
        if self.stream.get_ref().raw_socket().is_none() {
            let (mut position, mut left) = (offset, len);
            let (device, mut mode) = self.read_mode(file);
            while left > 0 {
                let step = left.min(FILE_PIECE);
                let read = match mode {
                    ReadMode::Blocking => Ok(false),
                    here => read_here(file, position, step, &mut self.piece, here),
                };
                if read == Err(rustix::io::Errno::OPNOTSUPP) {
                    mode = ReadMode::Blocking;
                    self.reads = Some((device, mode));
                }
                if read != Ok(true) {
                    let piece = std::mem::take(&mut self.piece);
                    self.piece = read_at(file, position, step, piece).await?;
                }
                let written = self.stream.write_all(&self.piece).await;
                written.map_err(|err| self.io_error(err))?;
                position += step as u64;
                left -= step;
            }
            return Ok(());
        }
        let socket = self.stream.get_ref().raw_socket();
        let socket = socket.ok_or_else(|| io::Error::other("the socket went away"))?;
        let mut position = i64::try_from(offset)
            .map_err(|_| ConnectionError::Io(io::Error::other("offset beyond i64")))?;
        let mut left = len;
        while left > 0 {
            let step = async {
                loop {
                    socket.writable().await?;
                    let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
                        nix::sys::sendfile::sendfile64(socket, file, Some(&mut position), left)
                            .map_err(io::Error::from)
                    });
                    match sent {
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            };
            let sent = tokio::time::timeout(self.timeout, step)
                .await
                .map_err(|_| ConnectionError::Timeout(self.timeout))?
                .map_err(ConnectionError::Io)?;
            if sent == 0 {
                return Err(ended_early());
            }
            left -= sent;
        }
        Ok(())
    }

    /// The device `file` is on, and how to read from it: found out once per
    /// file system (by its type, then by whether `RWF_NOWAIT` works).
    fn read_mode(&mut self, file: &std::fs::File) -> (u64, ReadMode) {
        let device = rustix::fs::fstat(file).map(|stat| stat.st_dev).unwrap_or(0);
        if let Some((known, mode)) = self.reads {
            if known == device {
                return (device, mode);
            }
        }
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        // `f_type`'s width differs between targets.
        #[allow(clippy::unnecessary_cast)]
        let in_memory = rustix::fs::fstatfs(file)
            .is_ok_and(|fs| matches!(fs.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC));
        let mode = match in_memory {
            true => ReadMode::InMemory,
            false => ReadMode::Cached,
        };
        self.reads = Some((device, mode));
        (device, mode)
    }

    fn io_error(&self, err: io::Error) -> ConnectionError {
        if err.kind() == io::ErrorKind::TimedOut {
            ConnectionError::Timeout(self.timeout)
        } else {
            ConnectionError::Io(err)
        }
    }

    /// Flushes and closes the writing side, so the peer reads a clean end.
    pub async fn shutdown(&mut self) -> Result<(), ConnectionError> {
        let result = self.stream.shutdown().await;
        result.map_err(|err| self.io_error(err))
    }
}

/// Reads `len` bytes of `file` at `offset` into `buf` here, on the async
/// thread: `ReadMode::Cached` only if they are all in the page cache
/// (`preadv2` with `RWF_NOWAIT`, which never waits for the disk),
/// `ReadMode::InMemory` plainly, the file system being memory. `Ok(false)`
/// if not all were read, an error if the kernel cannot tell: either way, the
/// caller reads them with [`read_at`].
fn read_here(
    file: &std::fs::File,
    offset: u64,
    len: usize,
    buf: &mut Vec<u8>,
    mode: ReadMode,
) -> rustix::io::Result<bool> {
    use rustix::io::{preadv2, ReadWriteFlags};
    let flags = match mode {
        ReadMode::Cached => ReadWriteFlags::NOWAIT,
        ReadMode::InMemory | ReadMode::Blocking => ReadWriteFlags::empty(),
    };
    // Zeroed only the first time: a reused buffer is overwritten whole.
    buf.resize(len, 0);
    match preadv2(file, &mut [io::IoSliceMut::new(buf)], offset, flags) {
        Ok(n) => Ok(n == len),
        Err(rustix::io::Errno::AGAIN) => Ok(false),
        Err(err) => Err(err),
    }
}

/// `len` bytes of `file` at `offset`, read on a blocking thread into
/// `buf` (whose room is reused).
async fn read_at(
    file: &std::fs::File,
    offset: u64,
    len: usize,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, ConnectionError> {
    use std::os::unix::fs::FileExt;
    let file = file.try_clone()?;
    let read = tokio::task::spawn_blocking(move || {
        // Zeroed only the first time: a reused buffer is overwritten whole.
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, offset).map(|()| buf)
    })
    .await
    .map_err(io::Error::other)?;
    match read {
        Ok(buf) => Ok(buf),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(ended_early()),
        Err(err) => Err(err.into()),
    }
}

fn ended_early() -> ConnectionError {
    ConnectionError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ended before the data frame did",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    /// Two connections joined by an in-memory pipe.
    fn pair(
        a_timeout: Duration,
        b_timeout: Duration,
    ) -> (Connection<DuplexStream>, Connection<DuplexStream>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (Connection::new(a, a_timeout), Connection::new(b, b_timeout))
    }

    /// A connection, and the raw other end of its pipe.
    fn raw(timeout: Duration) -> (Connection<DuplexStream>, DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (Connection::new(a, timeout), b)
    }

    #[tokio::test]
    async fn messages_and_data_cross_a_pipe() {
        let (mut a, mut b) = pair(Duration::from_secs(5), Duration::from_secs(5));
        a.send(&Response::Welcome { version: 1 })
            .await
            .expect("send");
        a.send_data(Bytes::from(vec![5u8; 300_000]))
            .await
            .expect("send data");
        assert_eq!(
            b.read_response().await.expect("read"),
            Response::Welcome { version: 1 }
        );
        match b.read_response().await.expect("read") {
            Response::Data(d) => assert_eq!(d, vec![5u8; 300_000]),
            other => panic!("unexpected {other:?}"),
        }
        b.send(&Request::Stat { path: "x".into() })
            .await
            .expect("send");
        assert_eq!(
            a.read_request().await.expect("read"),
            Some(Request::Stat { path: "x".into() })
        );
        drop(b);
        assert_eq!(a.read_request().await.expect("clean close"), None);
    }

    #[tokio::test]
    async fn file_data_is_read_when_there_is_no_socket() {
        let mut file = tempfile::tempfile().expect("tempfile");
        std::io::Write::write_all(&mut file, b"0123456789").expect("write");
        let (mut a, mut b) = pair(Duration::from_secs(5), Duration::from_secs(5));
        a.send_file_data(&file, 3, 4).await.expect("sends");
        assert_eq!(
            b.read_response().await.expect("read"),
            Response::Data(Bytes::from_static(b"3456"))
        );
        assert!(matches!(
            a.send_file_data(&file, 8, 4).await,
            Err(ConnectionError::Io(err)) if err.kind() == io::ErrorKind::UnexpectedEof
        ));
    }

    #[tokio::test]
    async fn requests_sent_ahead_are_found_in_the_buffer() {
        let (mut server, mut client) = raw(Duration::from_secs(5));
        let mut ahead = Vec::new();
        for path in ["a", "b", "c"] {
            ahead.extend(codec::encode(&Request::Stat { path: path.into() }).expect("encodes"));
        }
        client.write_all(&ahead).await.expect("write");
        assert!(server.buffered_request().is_none(), "nothing read yet");
        assert_eq!(
            server.read_request().await.expect("read"),
            Some(Request::Stat { path: "a".into() })
        );
        for path in ["b", "c"] {
            match server.buffered_request() {
                Some(Ok(Request::Stat { path: got })) => assert_eq!(got, path),
                other => panic!("expected {path}: {other:?}"),
            }
        }
        assert!(server.buffered_request().is_none());
    }

    #[tokio::test]
    async fn keepalives_are_skipped_and_hold_off_the_timeout() {
        let (mut server, mut client) = pair(Duration::from_secs(5), Duration::from_millis(300));
        let busy = tokio::spawn(async move {
            // 1 s of work, four times the client's timeout, announced every 100 ms.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                server.send(&Response::KeepAlive).await.expect("send");
            }
            server
                .send(&Response::End { sha256: [1; 32] })
                .await
                .expect("send");
            server
        });
        assert_eq!(
            client.read_response().await.expect("no timeout"),
            Response::End { sha256: [1; 32] }
        );
        assert_eq!(client.keepalives(), 10);
        // Silence past the timeout is still an error.
        let _server = busy.await.expect("joined");
        assert!(matches!(
            client.read_response().await,
            Err(ConnectionError::Timeout(_))
        ));
    }

    #[tokio::test]
    async fn oversized_length_prefix_is_refused_before_reading_it() {
        let (mut conn, mut client) = raw(Duration::from_secs(5));
        client
            .write_all(&[0xff, 0xff, 0xff, 0xff])
            .await
            .expect("write");
        assert!(matches!(
            conn.read_request().await,
            Err(ConnectionError::FrameTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn truncated_frame_and_silence_are_errors() {
        let (mut conn, mut client) = raw(Duration::from_secs(5));
        client.write_all(&[0, 0, 0, 10, 1, 2]).await.expect("write");
        drop(client);
        assert!(matches!(
            conn.read_request().await,
            Err(ConnectionError::Truncated)
        ));

        let (mut conn, _client) = raw(Duration::from_millis(50));
        assert!(matches!(
            conn.read_request().await,
            Err(ConnectionError::Timeout(_))
        ));
    }
}
