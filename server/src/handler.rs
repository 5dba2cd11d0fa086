//! One client connection: the handshake, then requests one after another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ft_protocol::connection::TcpConnection;
use ft_protocol::{
    ConnectionError, Digest, Entry, ErrorCode, FileMeta, RemoteError, RemotePath, Request,
    Response, CHUNK_SIZE, LIST_BATCH_BYTES, MAGIC, MAX_CHECKPOINTS, MAX_DATA, VERSION,
};
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::files::{Digests, Files, OpenFile, Piece};
use crate::listing::Listed;

/// Pieces read ahead of the socket per transfer. With 1 MiB pieces this keeps
/// the disk and the socket both busy while holding at most a few MiB.
const READ_AHEAD: usize = 2;

/// Most pipelined `Get`s answered together: bounds what one trip to a
/// blocking thread opens and what one reply holds in memory (32 MiB at most,
/// a few KiB per small file in practice).
const GET_BATCH: usize = 32;

/// How long a new connection has to send its hello (at most the idle
/// timeout): a client that connects and says nothing (slowloris) gives its
/// slot back soon.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client refused for being over the limit has to send its hello
/// before the refusal closes.
const BUSY_HELLO_TIMEOUT: Duration = Duration::from_secs(1);

/// What the handler needs from the server.
pub(crate) struct Context {
    pub files: Files,
    pub idle_timeout: Duration,
    pub keepalive: Duration,
}

/// Serves one connection until the client leaves, goes silent, breaks the
/// protocol, or the server shuts down between two requests.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let mut conn = TcpConnection::tcp(stream, context.idle_timeout);
    // A connection that never says hello holds a slot: not for long.
    let limit = HANDSHAKE_TIMEOUT.min(context.idle_timeout);
    match tokio::time::timeout(limit, handshake(&mut conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            info!(client = %peer, "handshake failed: {err}");
            return;
        }
        Err(_) => {
            info!(client = %peer, "no hello within {} s; closing", limit.as_secs());
            return;
        }
    }
    // A frame read while gathering a run of `Get`s that was not one.
    let mut held = None;
    loop {
        let request = match held.take() {
            Some(request) => request,
            None => tokio::select! {
                request = conn.read_request() => request,
                () = shutdown.cancelled() => break,
            },
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(ConnectionError::Timeout(after)) => {
                info!(client = %peer, "closing idle connection after {} s", after.as_secs());
                break;
            }
            Err(err) => {
                match malformed(&err) {
                    Some(reply) => {
                        warn!(client = %peer, "bad request: {err}");
                        let _ = conn.send(&Response::Error(reply)).await;
                    }
                    None => info!(client = %peer, "connection lost: {err}"),
                }
                break;
            }
        };
        let outcome = match request {
            // Pipelined `Get`s already here are answered together.
            Request::Get { path, offset } => {
                let mut gets = vec![(path, offset)];
                while gets.len() < GET_BATCH {
                    match conn.read_request().now_or_never() {
                        Some(Ok(Some(Request::Get { path, offset }))) => gets.push((path, offset)),
                        Some(other) => {
                            held = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                get_batch(&mut conn, peer, &context, gets).await
            }
            request => answer(&mut conn, peer, &context, request).await,
        };
        match outcome {
            Ok(Next::Open) => {}
            Ok(Next::Close) => break,
            Err(err) => {
                info!(client = %peer, "connection lost: {err}");
                break;
            }
        }
    }
    let _ = conn.shutdown().await;
}

/// The reply owed to a client whose frame could not be read as a request:
/// `BadRequest` for a malformed or oversized frame; none when the connection
/// itself failed.
fn malformed(err: &ConnectionError) -> Option<RemoteError> {
    matches!(
        err,
        ConnectionError::Codec(_) | ConnectionError::FrameTooLarge { .. }
    )
    .then(|| RemoteError::new(ErrorCode::BadRequest, err.to_string()))
}

/// Tells a client over the connection limit that the server is busy: the
/// reply goes out at once, then the hello is read (for at most
/// `BUSY_HELLO_TIMEOUT`) so that closing does not reset the connection
/// under the reply.
pub(crate) async fn refuse_busy(stream: TcpStream, peer: SocketAddr, limit: usize) {
    let mut conn = TcpConnection::tcp(stream, BUSY_HELLO_TIMEOUT);
    let reply = RemoteError::new(
        ErrorCode::Busy,
        format!("server busy: all {limit} connections in use, try again later"),
    );
    let _ = conn.send(&Response::Error(reply)).await;
    let _ = conn.read_request().await;
    let _ = conn.shutdown().await;
    info!(client = %peer, "refused: busy");
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("client closed before the hello")]
    Closed,
    #[error("{0}")]
    Refused(String),
}

async fn handshake(conn: &mut TcpConnection) -> Result<(), HandshakeError> {
    let refusal = match conn.read_request().await {
        Ok(Some(Request::Hello { magic, version })) if magic == MAGIC => {
            if version == VERSION {
                conn.send(&Response::Welcome { version: VERSION }).await?;
                return Ok(());
            }
            RemoteError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "unsupported protocol version {version}: this server speaks version {VERSION}"
                ),
            )
        }
        Ok(Some(Request::Hello { .. })) => {
            RemoteError::new(ErrorCode::BadRequest, "wrong magic: not an ft client")
        }
        Ok(Some(_)) => RemoteError::new(ErrorCode::BadRequest, "expected a hello first"),
        Ok(None) => return Err(HandshakeError::Closed),
        Err(err) => match malformed(&err) {
            Some(reply) => reply,
            None => return Err(err.into()),
        },
    };
    let message = refusal.message.clone();
    conn.send(&Response::Error(refusal)).await?;
    Err(HandshakeError::Refused(message))
}

/// Whether the connection stays open after a request.
enum Next {
    Open,
    /// After `BadRequest`: the protocol promises the client a close.
    Close,
}

impl Next {
    fn after(error: Option<&RemoteError>) -> Self {
        match error {
            Some(err) if err.code == ErrorCode::BadRequest => Next::Close,
            _ => Next::Open,
        }
    }
}

/// Answers one request. An error means the connection is unusable; failures
/// the client should hear about are sent as `Error` responses instead.
async fn answer(
    conn: &mut TcpConnection,
    peer: SocketAddr,
    context: &Arc<Context>,
    request: Request,
) -> Result<Next, ConnectionError> {
    let result = match request {
        Request::Hello { .. } => Err(RemoteError::new(ErrorCode::BadRequest, "hello sent twice")),
        Request::Stat { path } => {
            let result = open(context, &path)
                .await
                .map(|(meta, _)| Response::Meta(meta));
            log_outcome(peer, "stat", &path, 0, 0, result.as_ref().err());
            result
        }
        Request::Checkpoints { path, first, count } => {
            let working = checkpoints(context, &path, first, count);
            let result = keep_alive(conn, context.keepalive, working).await?;
            log_outcome(peer, "checkpoints", &path, first, 0, result.as_ref().err());
            result
        }
        Request::Get { path, offset } => {
            return get_batch(conn, peer, context, vec![(path, offset)]).await;
        }
        Request::List {
            path,
            recursive,
            digests,
        } => return list(conn, peer, context, &path, recursive, digests).await,
    };
    let next = Next::after(result.as_ref().err());
    conn.send(&result.unwrap_or_else(Response::Error)).await?;
    Ok(next)
}

/// A client's path as the root-relative path it names, or `InvalidPath`.
fn parse_path(path: &str) -> Result<RemotePath, RemoteError> {
    RemotePath::parse(path)
        .map_err(|err| RemoteError::new(ErrorCode::InvalidPath, format!("{path:?}: {err}")))
}

/// Parses and opens a path on a blocking thread; the file's meta and handle.
async fn open(
    context: &Arc<Context>,
    path: &str,
) -> Result<(ft_protocol::FileMeta, crate::files::OpenFile), RemoteError> {
    let path = parse_path(path)?;
    let context = Arc::clone(context);
    blocking(move || {
        let file = context.files.open(&path)?;
        Ok((context.files.meta(&file), file))
    })
    .await
}

async fn checkpoints(
    context: &Arc<Context>,
    path: &str,
    first: u64,
    count: u32,
) -> Result<Response, RemoteError> {
    if first == 0 {
        return Err(RemoteError::new(
            ErrorCode::BadRequest,
            "checkpoint boundaries start at 1",
        ));
    }
    let (mut meta, file) = open(context, path).await?;
    let context = Arc::clone(context);
    let digests = blocking(move || context.files.digests(&file)).await?;
    meta.sha256 = Some(digests.sha256);
    let start = usize::try_from(first - 1).unwrap_or(usize::MAX);
    let count = count.min(MAX_CHECKPOINTS) as usize;
    let states = digests
        .checkpoints
        .iter()
        .skip(start)
        .take(count)
        .copied()
        .collect();
    Ok(Response::Checkpoints {
        meta,
        first,
        states,
    })
}

/// How a `Get` goes on once the file is open.
enum Opened {
    /// A file of at most one piece, read whole: its reply is sent in one write.
    Whole(FileMeta, Bytes, Digest),
    /// Anything larger: streamed from a reader thread.
    Stream(FileMeta, OpenFile),
}

/// Opens one requested file, checks the offset and, for a small file, reads
/// and hashes it. Blocks.
fn open_for_get(files: &Files, path: &str, offset: u64) -> Result<Opened, RemoteError> {
    let file = files.open(&parse_path(path)?)?;
    let meta = files.meta(&file);
    if offset > meta.size || !offset.is_multiple_of(CHUNK_SIZE) {
        return Err(RemoteError::new(
            ErrorCode::BadRequest,
            format!(
                "offset {offset} is not a chunk boundary within {path} ({} bytes)",
                meta.size
            ),
        ));
    }
    if offset == 0 && meta.size <= MAX_DATA as u64 {
        let (data, sha256) = files.read_whole(&file)?;
        return Ok(Opened::Whole(meta, data, sha256));
    }
    Ok(Opened::Stream(meta, file))
}

/// Answers a run of `Get`s that arrived together (pipelined): all opened in
/// one trip to a blocking thread, small files answered from memory in one
/// write, larger ones streamed, in request order.
async fn get_batch(
    conn: &mut TcpConnection,
    peer: SocketAddr,
    context: &Arc<Context>,
    gets: Vec<(String, u64)>,
) -> Result<Next, ConnectionError> {
    let opener = Arc::clone(context);
    let requests = gets.clone();
    let opened = blocking(move || {
        Ok(requests
            .iter()
            .map(|(path, offset)| open_for_get(&opener.files, path, *offset))
            .collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|failed| gets.iter().map(|_| Err(failed.clone())).collect());
    let mut replies = Vec::new();
    for ((path, offset), opened) in gets.iter().zip(opened) {
        match opened {
            Ok(Opened::Whole(meta, data, sha256)) => {
                log_outcome(peer, "get", path, *offset, data.len() as u64, None);
                replies.push(Response::Meta(meta));
                if !data.is_empty() {
                    replies.push(Response::Data(data));
                }
                replies.push(Response::End { sha256 });
            }
            Ok(Opened::Stream(meta, file)) => {
                conn.send_all(&std::mem::take(&mut replies)).await?;
                stream(conn, peer, context, path, *offset, meta, file).await?;
            }
            Err(err) => {
                log_outcome(peer, "get", path, *offset, 0, Some(&err));
                let next = Next::after(Some(&err));
                replies.push(Response::Error(err));
                if matches!(next, Next::Close) {
                    conn.send_all(&replies).await?;
                    return Ok(next);
                }
            }
        }
    }
    conn.send_all(&replies).await?;
    Ok(Next::Open)
}

/// Streams a larger file from `offset`: `Meta`, then what the reader thread
/// produces.
async fn stream(
    conn: &mut TcpConnection,
    peer: SocketAddr,
    context: &Arc<Context>,
    path: &str,
    offset: u64,
    meta: FileMeta,
    file: OpenFile,
) -> Result<(), ConnectionError> {
    conn.send(&Response::Meta(meta)).await?;
    if let Some(digests) = context.files.cached_digests(&file) {
        return send_warm(conn, peer, context, path, offset, file, &digests).await;
    }

    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let reader_context = Arc::clone(context);
    let reader = tokio::task::spawn_blocking(move || {
        reader_context.files.stream(file, offset, tx);
    });
    let mut sent = 0u64;
    let mut failure = None;
    let mut result = Ok(());
    loop {
        // A cold pass from an offset hashes the bytes before it first: a
        // keep-alive that cannot be sent is a failed step like any other.
        let step = match keep_alive(conn, context.keepalive, rx.recv()).await {
            Ok(None) => break,
            Err(err) => Err(err),
            Ok(Some(Piece::Data(data))) => {
                sent += data.len() as u64;
                conn.send_data(data).await
            }
            Ok(Some(Piece::Checkpoint { index, state })) => {
                conn.send(&Response::Checkpoint { index, state }).await
            }
            Ok(Some(Piece::End(sha256))) => conn.send(&Response::End { sha256 }).await,
            Ok(Some(Piece::Failed(err))) => {
                let step = conn.send(&Response::Error(err.clone())).await;
                failure = Some(err);
                step
            }
        };
        if let Err(err) = step {
            result = Err(err);
            break;
        }
    }
    // Dropping the receiver stops the reader at its next piece.
    drop(rx);
    let _ = reader.await;
    match (&result, &failure) {
        (Err(err), _) => {
            let lost = RemoteError::new(ErrorCode::Internal, format!("connection lost: {err}"));
            log_outcome(peer, "get", path, offset, sent, Some(&lost));
        }
        (Ok(()), failure) => log_outcome(peer, "get", path, offset, sent, failure.as_ref()),
    }
    result
}

/// Sends a file whose digests are cached: each piece goes from the page
/// cache to the socket by `sendfile(2)` behind its 16-byte header, the
/// checkpoints come from the cache, and a final look at the file decides
/// between `End` and `FileChanged`. Nothing is read into this process.
async fn send_warm(
    conn: &mut TcpConnection,
    peer: SocketAddr,
    context: &Arc<Context>,
    path: &str,
    offset: u64,
    file: OpenFile,
    digests: &Digests,
) -> Result<(), ConnectionError> {
    let size = file.size();
    let mut pos = offset;
    let mut result = Ok(());
    while pos < size {
        let len = (MAX_DATA as u64)
            .min(CHUNK_SIZE - pos % CHUNK_SIZE)
            .min(size - pos);
        if let Err(err) = conn.send_file_data(file.std(), pos, len as usize).await {
            result = Err(err);
            break;
        }
        pos += len;
        if pos.is_multiple_of(CHUNK_SIZE) {
            let index = pos / CHUNK_SIZE;
            let state = digests.checkpoints.get(index as usize - 1).copied();
            let Some(state) = state else { break };
            if let Err(err) = conn.send(&Response::Checkpoint { index, state }).await {
                result = Err(err);
                break;
            }
        }
    }
    let sent = pos - offset;
    if let Err(err) = result {
        let lost = RemoteError::new(ErrorCode::Internal, format!("connection lost: {err}"));
        log_outcome(peer, "get", path, offset, sent, Some(&lost));
        return Err(err);
    }
    let checker = Arc::clone(context);
    let unchanged = blocking(move || checker.files.unchanged(&file)).await;
    let last = match &unchanged {
        Ok(()) => Response::End {
            sha256: digests.sha256,
        },
        Err(err) => Response::Error(err.clone()),
    };
    log_outcome(peer, "get", path, offset, sent, unchanged.as_ref().err());
    conn.send(&last).await
}

/// What the walking thread hands the connection during a listing.
enum Listing {
    Batch(Vec<Entry>),
    End { skipped: u64 },
    Failed(RemoteError),
}

/// Streams a listing: `Entries` frames of at most `LIST_BATCH_BYTES` each as
/// the walk produces them, then `ListEnd`; or one `Error`.
async fn list(
    conn: &mut TcpConnection,
    peer: SocketAddr,
    context: &Arc<Context>,
    path: &str,
    recursive: bool,
    digests: bool,
) -> Result<Next, ConnectionError> {
    let op = if recursive { "list -r" } else { "list" };
    let parsed = match parse_path(path) {
        Ok(parsed) => parsed,
        Err(err) => {
            log_outcome(peer, op, path, 0, 0, Some(&err));
            conn.send(&Response::Error(err)).await?;
            return Ok(Next::Open);
        }
    };
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let walker_context = Arc::clone(context);
    let walker = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let listed = walker_context
            .files
            .list(&parsed, recursive, digests, |entry| {
                bytes += Entry::FIXED_BYTES + entry.path.len();
                batch.push(entry);
                if bytes < LIST_BATCH_BYTES {
                    return true;
                }
                bytes = 0;
                tx.blocking_send(Listing::Batch(std::mem::take(&mut batch)))
                    .is_ok()
            });
        let last = match listed {
            Ok(Listed::Abandoned) => return,
            Ok(Listed::Complete { skipped }) => {
                if !batch.is_empty() && tx.blocking_send(Listing::Batch(batch)).is_err() {
                    return;
                }
                Listing::End { skipped }
            }
            Err(err) => Listing::Failed(err),
        };
        let _ = tx.blocking_send(last);
    });
    let mut entries = 0u64;
    let mut outcome = None;
    let mut result = Ok(Next::Open);
    loop {
        // With digests, the walk hashes every file it has not hashed before:
        // a keep-alive that cannot be sent is a failed step like any other.
        let step = match keep_alive(conn, context.keepalive, rx.recv()).await {
            Ok(None) => break,
            Err(err) => Err(err),
            Ok(Some(Listing::Batch(batch))) => {
                entries += batch.len() as u64;
                conn.send(&Response::Entries(batch)).await
            }
            Ok(Some(Listing::End { skipped })) => conn.send(&Response::ListEnd { skipped }).await,
            Ok(Some(Listing::Failed(err))) => {
                let step = conn.send(&Response::Error(err.clone())).await;
                outcome = Some(err);
                step
            }
        };
        if let Err(err) = step {
            outcome = Some(RemoteError::new(
                ErrorCode::Internal,
                format!("connection lost: {err}"),
            ));
            result = Err(err);
            break;
        }
    }
    drop(rx);
    let _ = walker.await;
    log_outcome(peer, op, path, 0, entries, outcome.as_ref());
    result
}

/// Waits for `work`, sending `KeepAlive` after every `interval` it takes, so
/// that the client can tell a server busy hashing from a dead one.
async fn keep_alive<T>(
    conn: &mut TcpConnection,
    interval: Duration,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ConnectionError> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            () = tokio::time::sleep(interval) => conn.send(&Response::KeepAlive).await?,
        }
    }
}

/// Runs blocking filesystem work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| {
            Err(RemoteError::new(
                ErrorCode::Internal,
                format!("worker failed: {err}"),
            ))
        })
}

/// The one log line per request: who, what, from where, how much, how it ended.
fn log_outcome(
    peer: SocketAddr,
    op: &str,
    path: &str,
    offset: u64,
    bytes: u64,
    error: Option<&RemoteError>,
) {
    match error {
        None => info!(client = %peer, op, path, offset, bytes, "ok"),
        Some(err) => info!(client = %peer, op, path, offset, bytes, code = ?err.code, "{err}"),
    }
}
