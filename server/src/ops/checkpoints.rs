//! `Checkpoints`: the chaining states a client checks its partial against,
//! waiting (with keep-alives) for the shared hashing pass if the file is
//! cold. A client that leaves stops waiting; the pass goes on only for
//! whoever else waits on it.

use std::sync::Arc;

use ft_protocol::{
    Connection, ConnectionError, ErrorCode, FileMeta, RemoteError, Response, Transport,
    MAX_CHECKPOINTS,
};

use super::shared::{log_outcome, open, Client, Context, Next};
use crate::backend::Backend;
use crate::relay::keep_alive;

/// Answers `Checkpoints { path, first, count }`.
pub(crate) async fn answer<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    path: &str,
    first: u64,
    count: u32,
) -> Result<Next, ConnectionError> {
    let working = states(context, client, path, first, count);
    let result = keep_alive(conn, context.limits.keepalive, working).await?;
    log_outcome(client, "checkpoints", path, first, 0, result.as_ref().err());
    let next = Next::after(result.as_ref().err());
    conn.send(&result.unwrap_or_else(Response::Error)).await?;
    Ok(next)
}

/// The reply: at most [`MAX_CHECKPOINTS`] states from boundary `first`, and
/// none past the last whole chunk.
async fn states<B: Backend>(
    context: &Arc<Context<B>>,
    client: &Client,
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
    let opened = open(context, client, path).await?;
    let stat = context.store.backend().stat(&opened.file);
    let digests = context
        .store
        .digesting(&opened.path, stat, None)
        .digests()
        .await?;
    let meta = FileMeta {
        sha256: Some(digests.sha256),
        ..opened.meta
    };
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
