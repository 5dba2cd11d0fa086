//! The requests of a connection, each answered in a module of its own:
//! `stat`, `checkpoints`, `get` (with `Range`), `list`, `put` (with
//! `Chunk`, `Data` and `Commit`); what they share is in `shared`.
//! This module sends each request to its answer.

mod checkpoints;
pub(crate) mod get;
mod list;
pub(crate) mod put;
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
    upload: &mut put::Current,
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
        Request::Put {
            path,
            size,
            version,
            mtime_secs,
            mtime_nanos,
            overwrite,
        } => {
            let request = put::PutRequest {
                path,
                size,
                version,
                mtime: (mtime_secs, mtime_nanos),
                overwrite,
            };
            put::put(conn, client, context, upload, request).await
        }
        Request::Chunk { index, start, end } => {
            put::chunk(conn, client, context, upload, (index, start, end)).await
        }
        Request::Commit { sha256 } => put::commit(conn, client, context, upload, sha256).await,
        Request::Data(_) => {
            let err = RemoteError::new(ErrorCode::BadRequest, "Data without a Chunk before it");
            conn.send(&ft_protocol::Response::Error(err)).await?;
            Ok(Next::Close)
        }
    }
}
