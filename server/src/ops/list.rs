//! `List`: a folder's entries, walked on a blocking thread and sent in
//! batches as the walk goes, each file's digest filled in from the cache or,
//! when asked, by hashing it.

use std::net::SocketAddr;
use std::sync::Arc;

use ft_protocol::{
    Connection, ConnectionError, Digest, Entry, RemoteError, RemotePath, Response, Transport,
};

use super::shared::{log_outcome, parse_path, Context, Next};
use crate::backend::{Backend, Listed, Walked};
use crate::relay::relay;
use crate::store::Store;

/// What the walking thread hands the connection.
enum Batch {
    Entries(Vec<Entry>),
    End { skipped: u64 },
    Failed(RemoteError),
}

/// Answers `List { path, recursive, digests }`: `Entries` frames of at most
/// `list_batch_bytes` each as the walk produces them, then `ListEnd`; or one
/// `Error`.
pub(crate) async fn answer<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    context: &Arc<Context<B>>,
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
    let walker = Arc::clone(context);
    let mut entries = 0u64;
    // With digests, the walk hashes every file not hashed before: the relay
    // keeps the client informed meanwhile.
    let relayed = relay(
        conn,
        context.limits.keepalive,
        context.limits.read_ahead,
        move |tx| {
            let batch_bytes = walker.limits.list_batch_bytes;
            let mut batch = Vec::new();
            let mut bytes = 0;
            let walked = walk(&walker.store, &parsed, recursive, digests, &mut |entry| {
                bytes += Entry::FIXED_BYTES + entry.path.len();
                batch.push(entry);
                if bytes < batch_bytes {
                    return true;
                }
                bytes = 0;
                tx.blocking_send(Batch::Entries(std::mem::take(&mut batch)))
                    .is_ok()
            });
            let last = match walked {
                Ok(Walked::Abandoned) => return,
                Ok(Walked::Complete { skipped }) => {
                    if !batch.is_empty() && tx.blocking_send(Batch::Entries(batch)).is_err() {
                        return;
                    }
                    Batch::End { skipped }
                }
                Err(err) => Batch::Failed(err),
            };
            let _ = tx.blocking_send(last);
        },
        |batch| match batch {
            Batch::Entries(batch) => {
                entries += batch.len() as u64;
                Response::Entries(batch)
            }
            Batch::End { skipped } => Response::ListEnd { skipped },
            Batch::Failed(err) => Response::Error(err),
        },
    )
    .await;
    log_outcome(peer, op, path, 0, entries, relayed.outcome().as_ref());
    relayed.result.map(|()| Next::Open)
}

/// Walks the folder at `path`, handing each entry to `emit` with its file's
/// digest: known already, or, when `digests`, computed now (and kept).
/// Blocks.
fn walk<B: Backend>(
    store: &Store<B>,
    path: &RemotePath,
    recursive: bool,
    digests: bool,
    emit: &mut dyn FnMut(Entry) -> bool,
) -> Result<Walked, RemoteError> {
    store
        .backend()
        .list(path, recursive, &mut |listed: Listed<B::Version>| {
            let mut entry = listed.entry;
            if let Some(version) = listed.version {
                entry.sha256 = digest(store, path, &entry, &version, digests);
            }
            emit(entry)
        })
}

/// A listed file's digest: from the cache, or, when `compute`, by hashing
/// it. `None` when unknown or unreadable.
fn digest<B: Backend>(
    store: &Store<B>,
    folder: &RemotePath,
    entry: &Entry,
    version: &B::Version,
    compute: bool,
) -> Option<Digest> {
    if let Some(digests) = store.cached_version(version) {
        return Some(digests.sha256);
    }
    if !compute {
        return None;
    }
    let path = folder.join(&RemotePath::parse(&entry.path).ok()?);
    let file = store.open(&path).ok()?;
    store.digests(&file).ok().map(|digests| digests.sha256)
}
