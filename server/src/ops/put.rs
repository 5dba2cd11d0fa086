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
use crate::upload::Upload;
use crate::upload::{place, Wanted, Whole};

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
    /// the `Put` gave, which says how many bytes each chunk carries, and
    /// its path, for the log.
    Refused(RemoteError, u64, String),
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
    let allowed = allowed(client, context, request);
    if let Ok(wanted) = &allowed {
        let ahead = conn.frames_ahead(2 + CHUNK_SIZE as usize / ft_protocol::MAX_PUT_DATA);
        if let Some(frames) = ft_protocol::put::whole_upload_ahead(&ahead, wanted.size) {
            return whole(conn, client, context, wanted.clone(), frames).await;
        }
    }
    let opened = match allowed {
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
            *current = Current::Refused(err.clone(), size, shown.clone());
            (Response::Error(err.clone()), Some(err))
        }
    };
    log_outcome(client, "put", &shown, 0, size, error.as_ref());
    conn.send(&reply).await?;
    Ok(Next::after(error.as_ref()))
}

/// A small upload whose every request the client sent ahead of the `Put`
/// (`frames` of them, already in the buffer): taken in one trip to a
/// blocking thread, and answered as the three requests would be one by one.
async fn whole<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    wanted: Wanted,
    frames: usize,
) -> Result<Next, ConnectionError> {
    let mut chunk = None;
    let mut pieces = Vec::new();
    let mut sha256 = None;
    for _ in 0..frames {
        match conn.read_request().await? {
            Some(Request::Chunk { index, start, end }) => chunk = Some((index, start, end)),
            Some(Request::Data(bytes)) => pieces.push(bytes),
            Some(Request::Commit { sha256: digest }) => sha256 = Some(digest),
            _ => {}
        }
    }
    let (Some(sha256), false) = (sha256, chunk.is_some_and(|(index, ..)| index != 0)) else {
        // Another chunk than the first of a one-chunk file: out of place.
        let err = bad("a small upload's chunk must be chunk 0".to_owned());
        conn.send(&Response::Error(err)).await?;
        return Ok(Next::Close);
    };
    let shown = wanted.path.to_string();
    let size = wanted.size;
    let has_chunk = chunk.is_some();
    let taker = Arc::clone(context);
    let taking = blocking(move || {
        let uploads = taker.uploads.as_ref().ok_or_else(not_taken)?;
        let chunk = chunk.map(|(_, start, end)| ((start, end), pieces.as_slice()));
        Ok(uploads.whole(&wanted, chunk, sha256))
    });
    let done = keep_alive(conn, context.limits.keepalive, taking).await?;
    // Every request taken gets its answer, even when the work failed.
    let done = done.unwrap_or_else(|err| Whole {
        put: Err(err.clone()),
        chunk: has_chunk.then(|| Err(err.clone())),
        commit: Err(err),
    });
    let mut replies = vec![match done.put {
        Ok(chunks) => Response::Held { chunks },
        Err(err) => Response::Error(err),
    }];
    let mut next = Next::Open;
    if let Some(stored) = done.chunk {
        next = Next::after(stored.as_ref().err());
        replies.push(match stored {
            Ok(()) => Response::Stored { index: 0 },
            Err(err) => Response::Error(err),
        });
    }
    let failure = done.commit.as_ref().err();
    log_outcome(client, "put", &shown, 0, size, failure);
    if next == Next::Open {
        next = Next::after(failure);
    }
    replies.push(done.commit.map_or_else(Response::Error, Response::Meta));
    conn.send_all(&replies).await?;
    Ok(next)
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
        Current::Refused(err, size, path) => {
            // The client sent the chunk ahead of hearing the refusal.
            let outcome = drain(conn, chunk_len(*size, index), err.clone()).await?;
            return reply(conn, client, "chunk", path, index, outcome).await;
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
    // come, a MiB at a time, so that reading the socket, hashing and
    // writing overlap; it is started with the first MiB (a small chunk's
    // whole), and ends the claim itself: one trip to it per small chunk.
    let mut writer: Option<Writer> = None;
    let mut pending = Some((check, Arc::clone(&upload)));
    let mut left = chunk_len(upload.size, index);
    let mut batch = Vec::new();
    let mut gathered = 0;
    let mut failure = None;
    while left > 0 {
        let bytes = match conn.read_request().await {
            Ok(Some(Request::Data(bytes))) if bytes.len() as u64 <= left => bytes,
            Ok(Some(Request::Data(_))) => {
                failure = Some(Ok(bad(format!("more bytes than chunk {index} holds"))));
                break;
            }
            Ok(Some(_)) => {
                failure = Some(Ok(bad(format!(
                    "chunk {index}: a request before all its bytes"
                ))));
                break;
            }
            Ok(None) => {
                failure = Some(Err(ConnectionError::Truncated));
                break;
            }
            Err(err) => {
                failure = Some(Err(err));
                break;
            }
        };
        left -= bytes.len() as u64;
        gathered += bytes.len();
        batch.push(bytes);
        if gathered < BATCH_BYTES && left > 0 {
            continue;
        }
        gathered = 0;
        let full = std::mem::take(&mut batch);
        let sent = match (&writer, pending.take()) {
            (Some(running), _) => running.batches.send(full).await.is_ok(),
            (None, Some((check, upload))) => {
                writer = Some(Writer::start(
                    upload,
                    (index, write, (start, end)),
                    check,
                    full,
                ));
                true
            }
            (None, None) => false,
        };
        if !sent {
            failure = Some(Ok(RemoteError::new(
                ErrorCode::Internal,
                "the chunk's writer stopped",
            )));
            break;
        }
    }
    let outcome = match writer {
        // Its channel closed: it checks what it got (short of the whole
        // chunk, a mismatch) and ends the claim.
        Some(Writer { batches, done }) => {
            drop(batches);
            match keep_alive(conn, context.limits.keepalive, done).await? {
                Ok(outcome) => outcome,
                Err(err) => Err(RemoteError::new(
                    ErrorCode::Internal,
                    format!("the chunk's writer failed: {err}"),
                )),
            }
        }
        None => {
            if let Some(claim) = write {
                let _ = upload.release(index, claim, None);
            }
            Ok(())
        }
    };
    let outcome = match failure {
        None => outcome,
        Some(Ok(refusal)) => Err(refusal),
        Some(Err(err)) => return Err(err),
    };
    reply(conn, client, "chunk", &shown, index, outcome).await
}

/// The thread that hashes and writes a chunk's bytes, and ends its claim.
struct Writer {
    batches: tokio::sync::mpsc::Sender<Vec<Bytes>>,
    done: tokio::task::JoinHandle<Result<(), RemoteError>>,
}

impl Writer {
    /// Starts on the chunk's `first` batch: checked by `check`, written
    /// under `claim` if there is one (else only checked); at the end, the
    /// claim is ended, the chunk stored with `states` if it checked out.
    fn start(
        upload: Arc<Upload>,
        (index, claim, states): (u64, Option<u64>, (Digest, Digest)),
        mut check: ChunkCheck,
        first: Vec<Bytes>,
    ) -> Self {
        let (batches, mut arriving) = tokio::sync::mpsc::channel::<Vec<Bytes>>(BATCHES_AHEAD);
        let done = tokio::task::spawn_blocking(move || {
            let mut pos = index * CHUNK_SIZE;
            let mut failed: Option<RemoteError> = None;
            let mut next = Some(first);
            while let Some(batch) = next.take().or_else(|| arriving.blocking_recv()) {
                // The connection has checked that the pieces fit the chunk.
                for piece in &batch {
                    let _ = check.feed(index, piece);
                }
                if let (Some(claim), None) = (claim, &failed) {
                    failed = upload.write(index, claim, pos, &batch).err();
                }
                pos += batch.iter().map(|piece| piece.len() as u64).sum::<u64>();
            }
            let outcome = match (check.finish(index), failed) {
                (_, Some(err)) => Err(err),
                (Err(err), None) => Err(RemoteError::new(
                    ErrorCode::Mismatch,
                    format!("{}: {err}", upload.path),
                )),
                (Ok(()), None) => Ok(()),
            };
            match claim {
                Some(claim) => {
                    let verified = outcome.is_ok().then_some(states);
                    outcome.and(upload.release(index, claim, verified))
                }
                None => outcome,
            }
        });
        Self { batches, done }
    }
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
        Current::Refused(_, _, path) => path.clone(),
        Current::None => String::new(),
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
        Current::Refused(err, ..) => Err(err),
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
