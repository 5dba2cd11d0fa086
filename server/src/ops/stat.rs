//! `Stat`: a file's description.

use std::sync::Arc;

use ft_protocol::{Connection, ConnectionError, Response, Transport};

use super::shared::{log_outcome, open, Client, Context, Next};
use crate::backend::Backend;

/// Answers `Stat { path }` with `Meta`, or an error.
pub(crate) async fn answer<S: Transport, B: Backend>(
    conn: &mut Connection<S>,
    client: &Client,
    context: &Arc<Context<B>>,
    path: &str,
) -> Result<Next, ConnectionError> {
    let result = open(context, client, path).await.map(|opened| opened.meta);
    log_outcome(client, "stat", path, 0, 0, result.as_ref().err());
    let next = Next::after(result.as_ref().err());
    conn.send(&result.map_or_else(Response::Error, Response::Meta))
        .await?;
    Ok(next)
}
