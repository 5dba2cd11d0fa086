//! `List`: a folder's entries, walked on a blocking thread and sent in
//! batches as the walk goes, each file's digest filled in from the cache or,
//! when asked, from the shared hashing pass over it. The walk stops as soon
//! as its client is gone: at the next entry, or at once while it waits for
//! a digest.

use std::sync::Arc;

use ft_protocol::{
    Connection, ConnectionError, Digest, Entry, FileMeta, RemoteError, RemotePath, Response,
    Transport,
};
use tokio::sync::mpsc;

use super::shared::{log_outcome, parse_path, Client, Context, Next};
use crate::backend::{Backend, Listed, Stat, Walked};
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
    client: &Client,
    context: &Arc<Context<B>>,
    path: &str,
    recursive: bool,
    digests: bool,
) -> Result<Next, ConnectionError> {
    let op = if recursive { "list -r" } else { "list" };
    let parsed = match parse_path(&client.scope, path) {
        Ok(parsed) => parsed,
        Err(err) => {
            log_outcome(client, op, path, 0, 0, Some(&err));
            conn.send(&Response::Error(err)).await?;
            return Ok(Next::Open);
        }
    };
    let walker = Arc::clone(context);
    let within = client.scope.folder();
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
            let walked = walk(
                &walker.store,
                &within,
                &parsed,
                recursive,
                digests,
                &tx,
                &mut |entry| {
                    bytes += Entry::FIXED_BYTES + entry.path.len();
                    batch.push(entry);
                    if bytes < batch_bytes {
                        return true;
                    }
                    bytes = 0;
                    tx.blocking_send(Batch::Entries(std::mem::take(&mut batch)))
                        .is_ok()
                },
            );
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
    log_outcome(client, op, path, 0, entries, relayed.outcome().as_ref());
    relayed.result.map(|()| Next::Open)
}

/// Walks the folder at `path`, handing each entry to `emit` with its file's
/// digest: known already, or, when `digests`, from the pass over it. Stops
/// when the receiver of `client` is gone. Blocks.
fn walk<B: Backend>(
    store: &Store<B>,
    within: &RemotePath,
    path: &RemotePath,
    recursive: bool,
    digests: bool,
    client: &mpsc::Sender<Batch>,
    emit: &mut dyn FnMut(Entry) -> bool,
) -> Result<Walked, RemoteError> {
    store
        .backend()
        .list(within, path, recursive, &mut |listed: Listed<
            B::Version,
        >| {
            if client.is_closed() {
                return false;
            }
            let mut entry = listed.entry;
            // Partial uploads are no part of what is served.
            let full = RemotePath::parse(&entry.path).map(|relative| path.join(&relative));
            if full.is_ok_and(|full| crate::upload::place::reserved(&full)) {
                return true;
            }
            if let Some(version) = listed.version {
                match digest(store, path, &entry, version, digests, client) {
                    Ok(sha256) => entry.sha256 = sha256,
                    Err(Gone) => return false,
                }
            }
            emit(entry)
        })
}

/// The client left while the walk waited.
struct Gone;

/// A listed file's digest: from the cache, or, when `compute`, from the
/// pass over it, waited for until it ends or `client`'s receiver is gone.
/// `None` when unknown or unreadable.
fn digest<B: Backend>(
    store: &Store<B>,
    folder: &RemotePath,
    entry: &Entry,
    version: B::Version,
    compute: bool,
    client: &mpsc::Sender<Batch>,
) -> Result<Option<Digest>, Gone> {
    // Only a walk asked for digests looks beyond this server's own: the
    // backend's kept digests may cost a request per file.
    let known = match compute {
        true => store.known(&version),
        false => store.cached_version(&version),
    };
    if let Some(digests) = known {
        return Ok(Some(digests.sha256));
    }
    let Some(path) = RemotePath::parse(&entry.path)
        .ok()
        .filter(|_| compute)
        .map(|relative| folder.join(&relative))
    else {
        return Ok(None);
    };
    let meta = FileMeta {
        size: entry.size,
        mtime_secs: entry.mtime_secs,
        mtime_nanos: entry.mtime_nanos,
        sha256: None,
    };
    let mut digesting = store.digesting(&path, Stat { version, meta }, None);
    tokio::runtime::Handle::current().block_on(async {
        tokio::select! {
            digests = digesting.digests() => Ok(digests.ok().map(|digests| digests.sha256)),
            () = client.closed() => Err(Gone),
        }
    })
}
