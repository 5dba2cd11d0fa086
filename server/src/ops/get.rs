//! `Get`: a file from a chunk boundary. Runs of pipelined `Get`s are opened
//! in one trip to a blocking thread; a small file is answered from memory,
//! its reply written together with its neighbours'; a larger one is
//! streamed: a warm file (digests known) by `sendfile(2)` with checkpoints
//! from the cache, a cold one from a hashing pass on a blocking thread.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ft_protocol::get::piece_len;
use ft_protocol::{
    Connection, ConnectionError, Digest, ErrorCode, FileMeta, RemoteError, Response, Transport,
    CHUNK_SIZE, MAX_DATA,
};

use super::shared::{log_outcome, parse_path, Context, Next};
use crate::backend::Backend;
use crate::cache::Digests;
use crate::relay::{blocking, lost, relay};
use crate::store::{Piece, Store};

/// How a `Get` goes on once the file is open.
enum Opened<F> {
    /// A file of at most one piece, read whole: its reply is sent in one write.
    Whole(FileMeta, Bytes, Digest),
    /// Anything larger: streamed.
    Stream(FileMeta, F),
}

/// Answers a run of `Get`s that arrived together (pipelined): all opened in
/// one trip to a blocking thread, small files answered from memory in one
/// write, larger ones streamed, in request order.
pub(crate) async fn batch<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    context: &Arc<Context<B>>,
    gets: Vec<(String, u64)>,
) -> Result<Next, ConnectionError> {
    let opener = Arc::clone(context);
    // A copy for the blocking thread, so that if it fails each request is
    // still answered, and logged, by its path.
    let requests = gets.clone();
    let opened = blocking(move || {
        Ok(requests
            .iter()
            .map(|(path, offset)| prepare(&opener.store, path, *offset))
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
                if next == Next::Close {
                    conn.send_all(&replies).await?;
                    return Ok(next);
                }
            }
        }
    }
    conn.send_all(&replies).await?;
    Ok(Next::Open)
}

/// Opens one requested file, checks the offset and, for a small file, reads
/// and hashes it. Blocks.
fn prepare<B: Backend>(
    store: &Store<B>,
    path: &str,
    offset: u64,
) -> Result<Opened<B::File>, RemoteError> {
    let file = store.open(&parse_path(path)?)?;
    let meta = store.meta(&file);
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
        let (data, sha256) = store.read_whole(&file)?;
        return Ok(Opened::Whole(meta, data, sha256));
    }
    Ok(Opened::Stream(meta, file))
}

/// Streams a larger file from `offset`: `Meta`, then the file warm or cold.
async fn stream<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    context: &Arc<Context<B>>,
    path: &str,
    offset: u64,
    meta: FileMeta,
    file: B::File,
) -> Result<(), ConnectionError> {
    conn.send(&Response::Meta(meta)).await?;
    let sendable = context.store.backend().local_file(&file).is_some();
    if let Some(digests) = context.store.cached(&file).filter(|_| sendable) {
        return send_warm(conn, peer, context, path, offset, file, &digests).await;
    }
    let producer = Arc::clone(context);
    let mut sent = 0u64;
    // A cold pass from an offset hashes the bytes before it first: the
    // relay keeps the client informed meanwhile.
    let relayed = relay(
        conn,
        context.limits.keepalive,
        context.limits.read_ahead,
        move |tx| producer.store.stream(file, offset, tx),
        |piece| match piece {
            Piece::Data(data) => {
                sent += data.len() as u64;
                Response::Data(data)
            }
            Piece::Checkpoint { index, state } => Response::Checkpoint { index, state },
            Piece::End(sha256) => Response::End { sha256 },
            Piece::Failed(err) => Response::Error(err),
        },
    )
    .await;
    log_outcome(peer, "get", path, offset, sent, relayed.outcome().as_ref());
    relayed.result
}

/// Sends a file whose digests are known from a local file: each piece goes
/// from the page cache to the socket by `sendfile(2)` behind its 16-byte
/// header, the checkpoints come from the cache, and a final look at the
/// file decides between `End` and `FileChanged`. Nothing is read into this
/// process.
async fn send_warm<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    context: &Arc<Context<B>>,
    path: &str,
    offset: u64,
    file: B::File,
    digests: &Digests,
) -> Result<(), ConnectionError> {
    let size = context.store.backend().stat(&file).meta.size;
    let cannot = || RemoteError::new(ErrorCode::Internal, format!("cannot send {path} warm"));
    let mut pos = offset;
    let local = context.store.backend().local_file(&file);
    // Ok(Some(err)): the pieces stopped short, for a reason to tell the client.
    let sending = async {
        let Some(local) = local else {
            return Ok(Some(cannot()));
        };
        while pos < size {
            let len = piece_len(pos, size);
            conn.send_file_data(local, pos, len).await?;
            pos += len as u64;
            if pos.is_multiple_of(CHUNK_SIZE) {
                let index = pos / CHUNK_SIZE;
                let Some(state) = digests.checkpoint(index) else {
                    return Ok(Some(cannot()));
                };
                conn.send(&Response::Checkpoint { index, state }).await?;
            }
        }
        Ok(None)
    }
    .await;
    let sent = pos - offset;
    let stopped = match sending {
        Ok(stopped) => stopped,
        Err(err) => {
            log_outcome(peer, "get", path, offset, sent, Some(&lost(&err)));
            return Err(err);
        }
    };
    let checker = Arc::clone(context);
    let outcome = match stopped {
        Some(err) => Err(err),
        None => blocking(move || checker.store.unchanged(&file)).await,
    };
    log_outcome(peer, "get", path, offset, sent, outcome.as_ref().err());
    let last = match outcome {
        Ok(()) => Response::End {
            sha256: digests.sha256,
        },
        Err(err) => Response::Error(err),
    };
    conn.send(&last).await
}
