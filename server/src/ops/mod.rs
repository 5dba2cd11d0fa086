//! The requests of a connection, each answered in a module of its own:
//! `stat`, `checkpoints`, `get` (with `Range`), `list`; what they share is
//! in `shared`.
//! This module sends each request to its answer.

mod checkpoints;
pub(crate) mod get;
mod list;
mod shared;
mod stat;

use std::sync::Arc;

use ft_protocol::{Connection, ConnectionError, ErrorCode, RemoteError, Request, Transport};

use crate::backend::Backend;
pub(crate) use shared::{Client, Context, Next};

/// Answers one request other than a run of `Get`s (the connection loop
/// gathers those). An error means the connection is unusable; failures the
/// client should hear about are sent as `Error` replies instead.
pub(crate) async fn answer<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    request: Request,
) -> Result<Next, ConnectionError> {
    match request {
        Request::Hello { .. } => {
            let err = RemoteError::new(ErrorCode::BadRequest, "hello sent twice");
            conn.send(&ft_protocol::Response::Error(err)).await?;
            Ok(Next::Close)
        }
        Request::Stat { path } => stat::answer(conn, client, context, &path).await,
        Request::Checkpoints { path, first, count } => {
            checkpoints::answer(conn, client, context, &path, first, count).await
        }
        Request::Get { path, offset } => {
            get::batch(conn, client, context, vec![(path, offset)]).await
        }
        Request::List {
            path,
            recursive,
            digests,
        } => list::answer(conn, client, context, &path, recursive, digests).await,
        Request::Range { path, offset, end } => {
            get::range(conn, client, context, &path, (offset, end)).await
        }
    }
}
