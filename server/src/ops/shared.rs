//! What the requests share: the context, parsing a client's path, opening
//! a file off the async workers, whether the connection stays open after a
//! reply, and the one log line per request.

use std::net::SocketAddr;
use std::sync::Arc;

use ft_protocol::{ErrorCode, FileMeta, RemoteError, RemotePath};
use tracing::info;

use crate::backend::{missing, Backend};
use crate::limits::Limits;
use crate::relay::blocking;
use crate::store::Store;
use crate::tokens::{Gate, Scope};

/// What every connection shares: the files, the limits, the token file's
/// gate when there is one, and the uploads when the server takes them.
pub(crate) struct Context<B: Backend> {
    pub store: Store<B>,
    pub limits: Limits,
    pub gate: Option<Gate>,
    /// Where uploads go, when the server takes them (`--allow-upload`).
    pub uploads: Option<crate::upload::Uploads>,
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

/// Who is asking: the address, the name of the token it showed, and what
/// that token may reach.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub peer: SocketAddr,
    pub token: Option<String>,
    pub scope: Scope,
}

/// A client's path as the root-relative path it names: `InvalidPath` if it
/// is not one, and the very refusal a missing file gets if it lies outside
/// the client's scope.
pub(crate) fn parse_path(scope: &Scope, path: &str) -> Result<RemotePath, RemoteError> {
    let parsed = RemotePath::parse(path)
        .map_err(|err| RemoteError::new(ErrorCode::InvalidPath, format!("{path:?}: {err}")))?;
    if !scope.allows(&parsed) || crate::upload::place::reserved(&parsed) {
        return Err(missing(&parsed));
    }
    Ok(parsed)
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
    client: &Client,
    path: &str,
) -> Result<Opened<B::File>, RemoteError> {
    let path = parse_path(&client.scope, path)?;
    let scope = client.scope.folder();
    let context = Arc::clone(context);
    blocking(move || {
        let file = context.store.open(&scope, &path)?;
        let meta = context.store.meta(&file);
        Ok(Opened { path, meta, file })
    })
    .await
}

/// The one log line per request: who, what, from where, how much, how it ended.
pub(crate) fn log_outcome(
    client: &Client,
    op: &str,
    path: &str,
    offset: u64,
    bytes: u64,
    error: Option<&RemoteError>,
) {
    match error {
        None => info!(client = %client.peer, token = client.token, op, path, offset, bytes, "ok"),
        Some(err) => info!(
            client = %client.peer, token = client.token, op, path, offset, bytes, code = ?err.code,
            "{err}"
        ),
    }
}
