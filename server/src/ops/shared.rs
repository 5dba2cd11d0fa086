//! What the requests share: the context, parsing a client's path, opening
//! a file off the async workers, whether the connection stays open after a
//! reply, and the one log line per request.

use std::net::SocketAddr;
use std::sync::Arc;

use ft_protocol::{ErrorCode, FileMeta, RemoteError, RemotePath};
use tracing::info;

use crate::backend::Backend;
use crate::limits::Limits;
use crate::relay::blocking;
use crate::store::Store;

/// What every connection shares: the files and the limits.
pub(crate) struct Context<B: Backend> {
    pub store: Store<B>,
    pub limits: Limits,
}

/// Whether the connection stays open after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Open,
    /// After `BadRequest`: the protocol promises the client a close.
    Close,
}

impl Next {
    /// What follows a reply that was `error`, or a success.
    pub fn after(error: Option<&RemoteError>) -> Self {
        match error {
            Some(err) if err.code == ErrorCode::BadRequest => Next::Close,
            _ => Next::Open,
        }
    }
}

/// A client's path as the root-relative path it names, or `InvalidPath`.
pub(crate) fn parse_path(path: &str) -> Result<RemotePath, RemoteError> {
    RemotePath::parse(path)
        .map_err(|err| RemoteError::new(ErrorCode::InvalidPath, format!("{path:?}: {err}")))
}

/// A file a request opened.
pub(crate) struct Opened<F> {
    /// The path it was opened at.
    pub path: RemotePath,
    /// Its description.
    pub meta: FileMeta,
    /// The handle.
    pub file: F,
}

/// Parses and opens a path on a blocking thread.
pub(crate) async fn open<B: Backend>(
    context: &Arc<Context<B>>,
    path: &str,
) -> Result<Opened<B::File>, RemoteError> {
    let path = parse_path(path)?;
    let context = Arc::clone(context);
    blocking(move || {
        let file = context.store.open(&path)?;
        let meta = context.store.meta(&file);
        Ok(Opened { path, meta, file })
    })
    .await
}

/// The one log line per request: who, what, from where, how much, how it ended.
pub(crate) fn log_outcome(
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
