//! Work that blocks, next to a connection that must not: run it on a
//! blocking thread, and while waiting for it, tell the client the server is
//! alive. [`relay`] streams what a blocking producer makes (file pieces,
//! listing batches) to the socket; [`keep_alive`] waits for one result;
//! [`blocking`] runs one job.

use std::future::Future;
use std::time::Duration;

use ft_protocol::{Connection, ConnectionError, ErrorCode, RemoteError, Response, Transport};
use tokio::sync::mpsc;

/// Waits for `work`, sending `KeepAlive` after every `interval` it takes, so
/// that the client can tell a server busy hashing from a dead one. A
/// keep-alive that cannot be sent fails like any other write.
pub async fn keep_alive<S: Transport, T>(
    conn: &mut Connection<S>,
    interval: Duration,
    work: impl Future<Output = T>,
) -> Result<T, ConnectionError> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            () = tokio::time::sleep(interval) => conn.send(&Response::KeepAlive).await?,
        }
    }
}

/// Runs `produce` on a blocking thread with a channel of `ahead` slots, and
/// sends the response `reply` makes of each item it hands over, keeping the
/// client informed while it works. Ends when the producer is done or a send
/// fails; either way the producer has stopped (its channel closed) before
/// this returns.
pub async fn relay<S, T>(
    conn: &mut Connection<S>,
    interval: Duration,
    ahead: usize,
    produce: impl FnOnce(mpsc::Sender<T>) + Send + 'static,
    mut reply: impl FnMut(T) -> Response,
) -> Result<(), ConnectionError>
where
    S: Transport,
    T: Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(ahead.max(1));
    let producer = tokio::task::spawn_blocking(move || produce(tx));
    let mut result = Ok(());
    loop {
        let step = match keep_alive(conn, interval, rx.recv()).await {
            Ok(None) => break,
            Ok(Some(item)) => conn.send_response(reply(item)).await,
            Err(err) => Err(err),
        };
        if let Err(err) = step {
            result = Err(err);
            break;
        }
    }
    // Dropping the receiver stops the producer at its next item.
    drop(rx);
    let _ = producer.await;
    result
}

/// Runs blocking work off the async workers; a worker that panics is an
/// `Internal` error for the request, not a lost connection.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| {
            Err(RemoteError::new(
                ErrorCode::Internal,
                format!("worker failed: {err}"),
            ))
        })
}
