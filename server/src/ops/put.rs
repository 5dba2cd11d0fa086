//! `Put`, `Chunk` (with its `Data`) and `Commit`: an upload on one
//! connection. `Put` opens the upload (or finds it open) and becomes the
//! connection's upload; each `Chunk` is checked against the states its
//! sender gave as its bytes arrive, and written in batches on a blocking
//! thread; `Commit` lands the file. Who may write where is decided here.

use std::sync::Arc;

use bytes::Bytes;
use ft_protocol::put::{chunk_len, ChunkCheck};
use ft_protocol::{
    Connection, ConnectionError, Digest, ErrorCode, RemoteError, Request, Response, Transport,
    CHUNK_SIZE,
};

use super::shared::{log_outcome, Client, Context, Next};
use crate::backend::Backend;
use crate::relay::{blocking, keep_alive};
use crate::tokens::Access;
use crate::upload::{place, Upload, Wanted};

/// Bytes of a chunk's pieces (of up to 64 KiB each) gathered before they go
/// to the thread that hashes and writes them: one wake-up of it per MiB.
const BATCH_BYTES: usize = 1 << 20;

/// Batches on their way to that thread: with the one being gathered and
/// the one being written, 4 MiB at most per connection.
const BATCHES_AHEAD: usize = 2;

/// The connection's upload: the last `Put`, open or refused.
#[derive(Default)]
pub(crate) enum Current {
    #[default]
    None,
    Open(Arc<Upload>, Wanted),
    /// Its `Chunk`s and `Commit` get this refusal too, so that a client
    /// that sent them ahead hears one answer per request; with the size
    /// the `Put` gave, which says how many bytes each chunk carries.
    Refused(RemoteError, u64),
}

/// The fields of a `Put`.
pub(crate) struct PutRequest {
    pub path: String,
    pub size: u64,
    pub version: Digest,
    pub mtime: (i64, u32),
    pub overwrite: bool,
}

/// Answers `Put` with `Held`, or an error.
pub(crate) async fn put<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    current: &mut Current,
    request: PutRequest,
) -> Result<Next, ConnectionError> {
    let shown = request.path.clone();
    let size = request.size;
    let opened = match allowed(client, context, request) {
        Ok(wanted) => {
            let opener = Arc::clone(context);
            // Opening an upload from an earlier run re-reads what it holds:
            // the client hears keep-alives meanwhile.
            let opening = blocking(move || {
                let uploads = opener.uploads.as_ref().ok_or_else(not_taken)?;
                let (upload, held) = uploads.put(&wanted)?;
                Ok((upload, held, wanted))
            });
            keep_alive(conn, context.limits.keepalive, opening).await?
        }
        Err(err) => Err(err),
    };
    let (reply, error) = match opened {
        Ok((upload, chunks, wanted)) => {
            *current = Current::Open(upload, wanted);
            (Response::Held { chunks }, None)
        }
        Err(err) => {
            *current = Current::Refused(err.clone(), size);
            (Response::Error(err.clone()), Some(err))
        }
    };
    log_outcome(client, "put", &shown, 0, size, error.as_ref());
    conn.send(&reply).await?;
    Ok(Next::after(error.as_ref()))
}

/// Whether `client` may upload what `request` asks, and the upload if so.
fn allowed<B: Backend>(
    client: &Client,
    context: &Context<B>,
    request: PutRequest,
) -> Result<Wanted, RemoteError> {
    let path = request.path;
    if context.uploads.is_none() {
        return Err(not_taken());
    }
    let parsed = ft_protocol::RemotePath::parse(&path)
        .map_err(|err| RemoteError::new(ErrorCode::InvalidPath, format!("{path:?}: {err}")))?;
    if place::reserved(&parsed) {
        return Err(RemoteError::new(
            ErrorCode::InvalidPath,
            format!("{parsed}: the server keeps its partial uploads there"),
        ));
    }
    let not_allowed = |why: String| RemoteError::new(ErrorCode::NotAllowed, why);
    let Some(token) = &client.token else {
        return Err(not_allowed(format!(
            "{parsed}: uploads need a token that may write (FTPUT_TOKEN or --token-file)"
        )));
    };
    let access = client.scope.access();
    if access < Access::Write {
        return Err(not_allowed(format!(
            "{parsed}: token {token} may only read"
        )));
    }
    if !client.scope.allows(&parsed) {
        return Err(not_allowed(format!(
            "{parsed}: token {token} may write only under {}/",
            client.scope.folder()
        )));
    }
    Ok(Wanted {
        path: parsed,
        size: request.size,
        version: request.version,
        mtime: request.mtime,
        overwrite: request.overwrite,
        may_replace: access >= Access::Overwrite,
    })
}

fn not_taken() -> RemoteError {
    RemoteError::new(
        ErrorCode::NotAllowed,
        "this server takes no uploads (ftserve --allow-upload)",
    )
}

/// Answers `Chunk { index, start, end }` and the `Data` after it: `Stored`
/// once the bytes hash from `start` to `end` and are written, else an
/// error (after every `Data` of the chunk has been read, so the next
/// request is where the client put it).
pub(crate) async fn chunk<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Context<B>,
    current: &Current,
    (index, start, end): (u64, Digest, Digest),
) -> Result<Next, ConnectionError> {
    let (upload, shown) = match current {
        Current::Open(upload, _) => (Arc::clone(upload), upload.path.to_string()),
        Current::Refused(err, size) => {
            // The client sent the chunk ahead of hearing the refusal.
            let outcome = drain(conn, chunk_len(*size, index), err.clone()).await?;
            return reply(conn, client, "chunk", "", index, outcome).await;
        }
        Current::None => {
            let err = RemoteError::new(ErrorCode::BadRequest, "Chunk without a Put before it");
            return reply(conn, client, "chunk", "", index, Err(err)).await;
        }
    };
    let check = ChunkCheck::new(upload.size, index, &start, end);
    let (check, write) = match check.map_err(|err| bad(err.to_string())).and_then(|check| {
        let write = upload.claim(index)?;
        Ok((check, write))
    }) {
        Ok(ready) => ready,
        Err(err) if err.code == ErrorCode::BadRequest => {
            return reply(conn, client, "chunk", &shown, index, Err(err)).await;
        }
        Err(err) => {
            let outcome = drain(conn, chunk_len(upload.size, index), err).await?;
            return reply(conn, client, "chunk", &shown, index, outcome).await;
        }
    };
    // The bytes go to a blocking thread that hashes and writes them as they
    // come, so that reading the socket, hashing and writing overlap.
    let (batches, mut arriving) = tokio::sync::mpsc::channel::<Vec<Bytes>>(BATCHES_AHEAD);
    let writer = Arc::clone(&upload);
    let stored = tokio::task::spawn_blocking(move || {
        let mut check = check;
        let mut pos = index * CHUNK_SIZE;
        let mut failed: Option<RemoteError> = None;
        while let Some(batch) = arriving.blocking_recv() {
            // The connection has checked that the pieces fit the chunk.
            for piece in &batch {
                let _ = check.feed(index, piece);
            }
            if let (Some(claim), None) = (write, &failed) {
                failed = writer.write(index, claim, pos, &batch).err();
            }
            pos += batch.iter().map(|piece| piece.len() as u64).sum::<u64>();
        }
        (check.finish(index), failed)
    });
    let mut left = chunk_len(upload.size, index);
    let mut batch = Vec::new();
    let mut gathered = 0;
    while left > 0 {
        let next = conn.read_request().await;
        let failure = match next {
            Ok(Some(Request::Data(bytes))) if bytes.len() as u64 <= left => {
                left -= bytes.len() as u64;
                gathered += bytes.len();
                batch.push(bytes);
                if gathered < BATCH_BYTES && left > 0 {
                    continue;
                }
                gathered = 0;
                if batches.send(std::mem::take(&mut batch)).await.is_ok() {
                    continue;
                }
                Ok(RemoteError::new(
                    ErrorCode::Internal,
                    "the chunk's writer stopped",
                ))
            }
            Ok(Some(Request::Data(_))) => Ok(bad(format!("more bytes than chunk {index} holds"))),
            Ok(Some(_)) => Ok(bad(format!(
                "chunk {index}: a request before all its bytes"
            ))),
            Ok(None) => Err(ConnectionError::Truncated),
            Err(err) => Err(err),
        };
        drop(batches);
        if let Some(claim) = write {
            let _ = upload.release(index, claim, None);
        }
        return match failure {
            Ok(err) => reply(conn, client, "chunk", &shown, index, Err(err)).await,
            Err(err) => Err(err),
        };
    }
    drop(batches);
    let (verified, failed) = match keep_alive(conn, context.limits.keepalive, stored).await? {
        Ok(done) => done,
        Err(err) => (
            Ok(()),
            Some(RemoteError::new(
                ErrorCode::Internal,
                format!("the chunk's writer failed: {err}"),
            )),
        ),
    };
    let outcome = match (verified, failed) {
        (_, Some(err)) => Err(err),
        (Err(err), None) => Err(RemoteError::new(
            ErrorCode::Mismatch,
            format!("{shown}: {err}"),
        )),
        (Ok(()), None) => Ok(()),
    };
    let outcome = match write {
        Some(claim) => {
            let states = outcome.is_ok().then_some((start, end));
            let writer = Arc::clone(&upload);
            let released = blocking(move || writer.release(index, claim, states)).await;
            outcome.and(released)
        }
        None => outcome,
    };
    reply(conn, client, "chunk", &shown, index, outcome).await
}

/// Reads and drops the `len` bytes of `Data` of a chunk that will not be
/// stored; the refusal to answer with, or `BadRequest` if another request
/// comes first.
async fn drain<S: Transport>(
    conn: &mut Connection<S>,
    len: u64,
    err: RemoteError,
) -> Result<Result<(), RemoteError>, ConnectionError> {
    let mut left = len;
    while left > 0 {
        match conn.read_request().await? {
            Some(Request::Data(bytes)) if bytes.len() as u64 <= left => left -= bytes.len() as u64,
            Some(_) => return Ok(Err(bad("a chunk's bytes did not come as announced".into()))),
            None => return Err(ConnectionError::Truncated),
        }
    }
    Ok(Err(err))
}

fn bad(message: String) -> RemoteError {
    RemoteError::new(ErrorCode::BadRequest, message)
}

/// Sends the answer to a chunk, `Stored` or the error, and logs it.
async fn reply<S: Transport>(
    conn: &mut Connection<S>,
    client: &Client,
    op: &str,
    shown: &str,
    index: u64,
    outcome: Result<(), RemoteError>,
) -> Result<Next, ConnectionError> {
    let error = outcome.err();
    if error.is_some() {
        log_outcome(client, op, shown, index * CHUNK_SIZE, 0, error.as_ref());
    }
    let response = match &error {
        None => Response::Stored { index },
        Some(err) => Response::Error(err.clone()),
    };
    conn.send(&response).await?;
    Ok(Next::after(error.as_ref()))
}

/// Answers `Commit`: `Meta` of the stored file, or an error.
pub(crate) async fn commit<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    current: &mut Current,
    sha256: Digest,
) -> Result<Next, ConnectionError> {
    let shown = match &*current {
        Current::Open(upload, _) => upload.path.to_string(),
        _ => String::new(),
    };
    let result = match std::mem::take(current) {
        Current::Open(upload, wanted) => {
            let committer = Arc::clone(context);
            // Checking the chain and syncing a large file take a while.
            let landing = blocking(move || {
                let uploads = committer.uploads.as_ref().ok_or_else(not_taken)?;
                uploads.commit(&upload, &wanted, sha256)
            });
            keep_alive(conn, context.limits.keepalive, landing).await?
        }
        Current::Refused(err, _) => Err(err),
        Current::None => Err(bad("Commit without a Put before it".to_owned())),
    };
    log_outcome(
        client,
        "commit",
        &shown,
        0,
        result.as_ref().map_or(0, |meta| meta.size),
        result.as_ref().err(),
    );
    let next = Next::after(result.as_ref().err());
    conn.send(&result.map_or_else(Response::Error, Response::Meta))
        .await?;
    Ok(next)
}
