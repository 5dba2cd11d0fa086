//! A framed connection: the only module that touches a socket.
//!
//! Reading uses tokio-util's length-delimited codec, which checks the length
//! prefix against [`MAX_FRAME`] before it reserves any memory. Writing goes
//! straight to the stream: a message as one buffer, a data payload as a small
//! header plus the payload itself in one vectored write, without copying it.
//! Every read and write must make progress within the connection's timeout: it
//! bounds silence, not the length of a transfer, so a slow link is not cut.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_io_timeout::{TimeoutReader, TimeoutWriter};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::codec;
use crate::error::ConnectionError;
use crate::message::{Request, Response};
use crate::MAX_FRAME;

/// A connection over TCP.
pub type TcpConnection = Connection<OwnedReadHalf, OwnedWriteHalf>;

/// A stream of frames in both directions.
pub struct Connection<R, W> {
    frames: FramedRead<Pin<Box<TimeoutReader<R>>>, LengthDelimitedCodec>,
    writer: Pin<Box<TimeoutWriter<W>>>,
    timeout: Duration,
    keepalives: u64,
}

impl TcpConnection {
    /// Wraps a TCP stream; every read and write must make progress within `timeout`.
    pub fn tcp(stream: TcpStream, timeout: Duration) -> Self {
        // Frames are written whole, so Nagle's delay would only add latency to
        // small requests. Failing to set it changes nothing else.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Self::new(reader, writer, timeout)
    }

    /// Writes a `Data` frame whose payload is the `len` bytes of `file` at
    /// `offset` (at most [`crate::MAX_DATA`]): the header from here, the payload
    /// by `sendfile(2)`, straight from the page cache to the socket, never
    /// through this process. Each step must make progress within the timeout.
    /// A file shorter than promised is an error; the frame is then broken and
    /// the connection must close.
    pub async fn send_file_data(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Result<(), ConnectionError> {
        let header = codec::data_header(len)?;
        let written = self.writer.write_all(&header).await;
        written.map_err(|err| self.io_error(err))?;
        let socket = self.writer.as_ref().get_ref().get_ref().as_ref();
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
                return Err(ConnectionError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the data frame did",
                )));
            }
            left -= sent;
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    /// Wraps a reader and a writer.
    pub fn new(reader: R, writer: W, timeout: Duration) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(codec::LEN_PREFIX)
            .big_endian()
            .max_frame_length(MAX_FRAME)
            .new_codec();
        let mut reader = TimeoutReader::new(reader);
        reader.set_timeout(Some(timeout));
        let mut writer = TimeoutWriter::new(writer);
        writer.set_timeout(Some(timeout));
        Self {
            frames: FramedRead::with_capacity(Box::pin(reader), codec, 64 * 1024),
            writer: Box::pin(writer),
            timeout,
            keepalives: 0,
        }
    }

    /// The next frame body, or `None` if the peer closed the connection cleanly
    /// between frames.
    async fn next_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        match self.frames.next().await {
            None => Ok(None),
            Some(Ok(frame)) => Ok(Some(frame.freeze())),
            Some(Err(err)) => Err(self.classify_read_error(err)),
        }
    }

    /// Reads the next request; `None` when the client has closed the connection.
    pub async fn read_request(&mut self) -> Result<Option<Request>, ConnectionError> {
        match self.next_frame().await? {
            None => Ok(None),
            Some(body) => Ok(Some(codec::decode_request(&body)?)),
        }
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
        let result = self.writer.write_all(&frame).await;
        result.map_err(|err| self.io_error(err))
    }

    /// Writes several messages, one frame each, in one write: a short reply of
    /// several frames, or requests sent ahead of their replies.
    pub async fn send_all<M: Serialize>(&mut self, messages: &[M]) -> Result<(), ConnectionError> {
        let mut frames = Vec::new();
        for message in messages {
            frames.extend_from_slice(&codec::encode(message)?);
        }
        let result = self.writer.write_all(&frames).await;
        result.map_err(|err| self.io_error(err))
    }

    /// Writes a `Data` frame carrying `payload`, without copying the payload.
    pub async fn send_data(&mut self, payload: Bytes) -> Result<(), ConnectionError> {
        let header = codec::data_header(payload.len())?;
        let mut frame = Bytes::copy_from_slice(&header).chain(payload);
        let result = self.writer.write_all_buf(&mut frame).await;
        result.map_err(|err| self.io_error(err))
    }

    fn io_error(&self, err: io::Error) -> ConnectionError {
        if err.kind() == io::ErrorKind::TimedOut {
            ConnectionError::Timeout(self.timeout)
        } else {
            ConnectionError::Io(err)
        }
    }

    fn classify_read_error(&self, err: io::Error) -> ConnectionError {
        // tokio-util reports both of these as plain io::Errors; the text is the
        // only tell, and these two strings are stable in its source.
        let text = err.to_string();
        if text.contains("frame size too big") {
            ConnectionError::FrameTooLarge { max: MAX_FRAME }
        } else if text.contains("bytes remaining on stream") {
            ConnectionError::Truncated
        } else {
            self.io_error(err)
        }
    }

    /// Flushes and closes the writing side, so the peer reads a clean end.
    pub async fn shutdown(&mut self) -> Result<(), ConnectionError> {
        let result = self.writer.shutdown().await;
        result.map_err(|err| self.io_error(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    type Pipe = tokio::io::DuplexStream;

    /// A server-side connection, and the client's reading and writing ends.
    fn pair(timeout: Duration) -> (Connection<Pipe, Pipe>, Pipe, Pipe) {
        let (client_read, server_write) = tokio::io::duplex(1 << 20);
        let (server_read, client_write) = tokio::io::duplex(1 << 20);
        let conn = Connection::new(server_read, server_write, timeout);
        (conn, client_read, client_write)
    }

    #[tokio::test]
    async fn messages_and_data_cross_a_pipe() {
        let (a_read, b_write) = tokio::io::duplex(1 << 20);
        let (b_read, a_write) = tokio::io::duplex(1 << 20);
        let mut a = Connection::new(a_read, a_write, Duration::from_secs(5));
        let mut b = Connection::new(b_read, b_write, Duration::from_secs(5));
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
    async fn keepalives_are_skipped_and_hold_off_the_timeout() {
        let (a_read, b_write) = tokio::io::duplex(1 << 16);
        let (b_read, a_write) = tokio::io::duplex(1 << 16);
        let mut server = Connection::new(a_read, a_write, Duration::from_secs(5));
        let mut client = Connection::new(b_read, b_write, Duration::from_millis(300));
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
        let (mut conn, _r, mut client_write) = pair(Duration::from_secs(5));
        client_write
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
        let (mut conn, _r, mut client_write) = pair(Duration::from_secs(5));
        client_write
            .write_all(&[0, 0, 0, 10, 1, 2])
            .await
            .expect("write");
        drop(client_write);
        assert!(matches!(
            conn.read_request().await,
            Err(ConnectionError::Truncated)
        ));

        let (mut conn, _r, _w) = pair(Duration::from_millis(50));
        assert!(matches!(
            conn.read_request().await,
            Err(ConnectionError::Timeout(_))
        ));
    }
}
