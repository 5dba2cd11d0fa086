//! `Get`: a file from a chunk boundary. Runs of pipelined `Get`s are opened
//! in one trip to a blocking thread; small files, up to a byte budget per
//! run, are answered from memory, their replies written together; any other
//! file is streamed from itself (read in pieces and encrypted over TLS; by
//! `sendfile(2)` over a bare socket), each
//! checkpoint sent once the file's digests reach it: at once for a warm
//! file, as the shared hashing pass gets there for a cold one (with
//! keep-alives meanwhile). The `Get` that starts a pass rides it, sending
//! the chunks the pass read rather than reading them again. What a
//! connection holds is bounded whatever its client does: the budget, one
//! frame of replies, of a stream one piece of the file and at most what the
//! server-wide riding budget grants it. A `Range` is a stream of part of a
//! file with neither checkpoints nor `End`: its bytes never wait for a hash.

use std::sync::Arc;

use bytes::Bytes;
use ft_protocol::get::piece_len;
use ft_protocol::{
    Connection, ConnectionError, Digest, ErrorCode, FileMeta, RemoteError, RemotePath, Response,
    Transport, CHUNK_SIZE, MAX_DATA,
};

use super::shared::{log_outcome, parse_path, Client, Context, Next};
use crate::backend::Backend;
use crate::relay::{blocking, keep_alive, lost};
use crate::store::Store;
use crate::tokens::Scope;

/// Replies of small files gathered before they are written: enough to
/// write many small replies at once, little to hold for a client that
/// does not read.
const FLUSH_BYTES: usize = 64 * 1024;

/// How a `Get` goes on once the file is open.
enum Prepared<F> {
    /// A small file, read whole: its reply is written with its neighbours'.
    Whole(FileMeta, Bytes, Digest),
    /// Anything else: streamed.
    Stream(FileMeta, RemotePath, F),
}

/// Answers a run of `Get`s that arrived together (pipelined): all opened in
/// one trip to a blocking thread, small files answered from memory a few
/// together, others streamed, in request order.
pub(crate) async fn batch<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    gets: Vec<(String, u64)>,
) -> Result<Next, ConnectionError> {
    let opener = Arc::clone(context);
    // A copy for the blocking thread, so that if it fails each request is
    // still answered, and logged, by its path.
    let requests = gets.clone();
    let scope = client.scope.clone();
    let opened = blocking(move || {
        let mut budget = opener.limits.get_batch_bytes;
        Ok(requests
            .iter()
            .map(|(path, offset)| prepare(&opener.store, &scope, path, *offset, &mut budget))
            .collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|failed| gets.iter().map(|_| Err(failed.clone())).collect());
    let mut replies = Vec::new();
    let mut gathered = 0;
    for ((path, offset), opened) in gets.iter().zip(opened) {
        match opened {
            Ok(Prepared::Whole(meta, data, sha256)) => {
                log_outcome(client, "get", path, *offset, data.len() as u64, None);
                gathered += data.len();
                replies.push(Response::Meta(meta));
                if !data.is_empty() {
                    replies.push(Response::Data(data));
                }
                replies.push(Response::End { sha256 });
                if gathered >= FLUSH_BYTES {
                    conn.send_all(&std::mem::take(&mut replies)).await?;
                    gathered = 0;
                }
            }
            Ok(Prepared::Stream(meta, parsed, file)) => {
                conn.send_all(&std::mem::take(&mut replies)).await?;
                gathered = 0;
                stream(conn, client, context, (path, &parsed), *offset, meta, file).await?;
            }
            Err(err) => {
                log_outcome(client, "get", path, *offset, 0, Some(&err));
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

/// Opens one requested file, checks the offset and, for a small file that
/// fits in what is left of `budget`, reads and hashes it. Blocks.
fn prepare<B: Backend>(
    store: &Store<B>,
    scope: &Scope,
    path: &str,
    offset: u64,
    budget: &mut u64,
) -> Result<Prepared<B::File>, RemoteError> {
    let parsed = parse_path(scope, path)?;
    let file = store.open_at(&scope.folder(), &parsed, offset)?;
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
    if offset == 0 && meta.size <= MAX_DATA as u64 && meta.size <= *budget {
        *budget -= meta.size;
        let (data, sha256) = store.read_whole(&file)?;
        return Ok(Prepared::Whole(meta, data, sha256));
    }
    Ok(Prepared::Stream(meta, parsed, file))
}

/// Streams a file from `offset`: `Meta`, then each piece from the file and
/// each checkpoint once the digests have it, then `End` after a last look
/// at the file (or `Error`: changed, unreadable). `path` is the client's
/// text (for the log) and its parsed form.
async fn stream<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    (path, parsed): (&str, &RemotePath),
    offset: u64,
    meta: FileMeta,
    file: B::File,
) -> Result<(), ConnectionError> {
    let size = meta.size;
    conn.send(&Response::Meta(meta)).await?;
    let store = &context.store;
    let keepalive = context.limits.keepalive;
    // Dropped when this reply ends, however it ends: a client that leaves
    // withdraws its interest in the hashing pass, and nobody else's. A Get
    // that starts a pass rides it: the pass hands over each chunk it read.
    let ride_from = Some(offset / CHUNK_SIZE);
    let mut digesting = store.digesting(parsed, store.backend().stat(&file), ride_from);
    let mut pos = offset;
    let file = Arc::new(file);
    // Ok(Err(err)): the reply stopped short, for a reason to tell the client.
    let sending = async {
        while pos < size {
            let chunk = pos / CHUNK_SIZE;
            let end = ((chunk + 1) * CHUNK_SIZE).min(size);
            let ridden = match digesting.rides() {
                true => keep_alive(conn, keepalive, digesting.chunk(chunk)).await?,
                false => None,
            };
            match ridden {
                // Held until its bytes are sent: its share of the budget.
                Some((data, _budget)) => {
                    while pos < end {
                        let from = (pos - chunk * CHUNK_SIZE) as usize;
                        let len = piece_len(pos, size);
                        conn.send_data(data.slice(from..from + len)).await?;
                        pos += len as u64;
                    }
                }
                None => {
                    while pos < end {
                        let len = piece_len(pos, size);
                        if let Err(err) = send_piece(conn, context, &file, pos, len).await? {
                            return Ok(Err(err));
                        }
                        pos += len as u64;
                    }
                }
            }
            if pos.is_multiple_of(CHUNK_SIZE) {
                let index = pos / CHUNK_SIZE;
                match keep_alive(conn, keepalive, digesting.state(index)).await? {
                    Ok(state) => conn.send(&Response::Checkpoint { index, state }).await?,
                    Err(err) => return Ok(Err(err)),
                }
            }
        }
        keep_alive(conn, keepalive, digesting.digests()).await
    }
    .await;
    let sent = pos - offset;
    let outcome = match sending {
        Err(err) => {
            log_outcome(client, "get", path, offset, sent, Some(&lost(&err)));
            return Err(err);
        }
        Ok(Err(err)) => Err(err),
        Ok(Ok(digests)) => {
            let checker = Arc::clone(context);
            blocking(move || checker.store.unchanged(&file))
                .await
                .map(|()| digests.sha256)
        }
    };
    log_outcome(client, "get", path, offset, sent, outcome.as_ref().err());
    let last = match outcome {
        Ok(sha256) => Response::End { sha256 },
        Err(err) => Response::Error(err),
    };
    conn.send(&last).await
}

/// Answers `Range { offset, end }`: `Meta`, then the bytes from `offset` up
/// to `end` or the end of the file, read straight from the file. Nothing
/// waits for the file's digests, cold or warm: the client checks the bytes
/// against the states it asks `Checkpoints` for.
pub(crate) async fn range<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    path: &str,
    (offset, end): (u64, u64),
) -> Result<Next, ConnectionError> {
    let opener = Arc::clone(context);
    let (scope, asked) = (client.scope.clone(), path.to_owned());
    let opened = blocking(move || {
        let parsed = parse_path(&scope, &asked)?;
        let file = opener.store.open_at(&scope.folder(), &parsed, offset)?;
        let meta = opener.store.meta(&file);
        let aligned = offset.is_multiple_of(CHUNK_SIZE)
            && (end.is_multiple_of(CHUNK_SIZE) || end >= meta.size);
        if offset > meta.size || end <= offset || !aligned {
            return Err(RemoteError::new(
                ErrorCode::BadRequest,
                format!(
                    "range {offset}..{end} is not one of whole chunks within {asked} ({} bytes)",
                    meta.size
                ),
            ));
        }
        Ok((meta, file))
    })
    .await;
    let (meta, file) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            log_outcome(client, "range", path, offset, 0, Some(&err));
            let next = Next::after(Some(&err));
            conn.send(&Response::Error(err)).await?;
            return Ok(next);
        }
    };
    conn.send(&Response::Meta(meta)).await?;
    let stop = end.min(meta.size);
    let mut pos = offset;
    let file = Arc::new(file);
    let sending = async {
        while pos < stop {
            let len = piece_len(pos, stop);
            if let Err(err) = send_piece(conn, context, &file, pos, len).await? {
                return Ok(Err(err));
            }
            pos += len as u64;
        }
        Ok(Ok(()))
    }
    .await;
    match sending {
        Err(err) => {
            log_outcome(
                client,
                "range",
                path,
                offset,
                pos - offset,
                Some(&lost(&err)),
            );
            Err(err)
        }
        Ok(Err(err)) => {
            log_outcome(client, "range", path, offset, pos - offset, Some(&err));
            conn.send(&Response::Error(err)).await?;
            Ok(Next::Open)
        }
        Ok(Ok(())) => {
            log_outcome(client, "range", path, offset, pos - offset, None);
            Ok(Next::Open)
        }
    }
}

/// Sends the `len` bytes of `file` at `pos` as one `Data` frame: copied by
/// the kernel from a local file, else read by the backend on a blocking
/// thread. `Ok(Err(_))` when they cannot be read (the file changed, the
/// store failed): the reply ends with that error.
async fn send_piece<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    context: &Arc<Context<B>>,
    file: &Arc<B::File>,
    pos: u64,
    len: usize,
) -> Result<Result<(), RemoteError>, ConnectionError> {
    if let Some(local) = context.store.backend().local_file(file) {
        return conn.send_file_data(local, pos, len).await.map(Ok);
    }
    let (reader, file) = (Arc::clone(context), Arc::clone(file));
    match blocking(move || reader.store.backend().read(&file, pos, len)).await {
        Ok(data) => conn.send_data(data).await.map(Ok),
        Err(err) => Ok(Err(err)),
    }
}
