//! Work that blocks, next to a connection that must not: run it on a
//! blocking thread, and while waiting for it, tell the client the server is
//! alive. [`relay`] streams what a blocking producer makes (listing batches)
//! to the socket; [`keep_alive`] waits for one result (a hashing pass's);
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

/// How a relayed reply ended.
pub struct Relayed {
    /// Whether the connection is still usable.
    pub result: Result<(), ConnectionError>,
    /// The `Error` the reply ended with, if it did.
    pub failure: Option<RemoteError>,
}

impl Relayed {
    /// What the request's log line says of it: the error the client was
    /// sent, or the connection's failure.
    pub fn outcome(&self) -> Option<RemoteError> {
        match &self.result {
            Err(err) => Some(lost(err)),
            Ok(()) => self.failure.clone(),
        }
    }
}

/// Runs `produce` on a blocking thread with a channel of `ahead` slots, and
/// sends the response `reply` makes of each item it hands over, keeping the
/// client informed while it works. Ends when the producer is done, or at
/// once when a send fails (the producer, its channel closed, stops on its
/// own at its next item). A producer that panics ends the reply with `Internal`,
/// so the client is told rather than left waiting.
pub async fn relay<S, T>(
    conn: &mut Connection<S>,
    interval: Duration,
    ahead: usize,
    produce: impl FnOnce(mpsc::Sender<T>) + Send + 'static,
    mut reply: impl FnMut(T) -> Response,
) -> Relayed
where
    S: Transport,
    T: Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(ahead.max(1));
    let producer = tokio::task::spawn_blocking(move || produce(tx));
    let mut failure = None;
    let mut result = Ok(());
    loop {
        let step = match keep_alive(conn, interval, rx.recv()).await {
            Ok(None) => break,
            Ok(Some(item)) => {
                let response = reply(item);
                if let Response::Error(err) = &response {
                    failure = Some(err.clone());
                }
                conn.send_response(response).await
            }
            Err(err) => Err(err),
        };
        if let Err(err) = step {
            result = Err(err);
            break;
        }
    }
    // Dropping the receiver stops the producer at its next item. A lost
    // connection gives its slot back now rather than wait for that.
    drop(rx);
    if result.is_err() {
        return Relayed { result, failure };
    }
    if let Err(panicked) = producer.await {
        if result.is_ok() && failure.is_none() {
            let err = RemoteError::new(ErrorCode::Internal, format!("worker failed: {panicked}"));
            result = conn.send(&Response::Error(err.clone())).await;
            failure = Some(err);
        }
    }
    Relayed { result, failure }
}

/// The outcome to log for a reply cut short because the connection failed.
pub fn lost(err: &ConnectionError) -> RemoteError {
    RemoteError::new(ErrorCode::Internal, format!("connection lost: {err}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use ft_protocol::connection::Connection;

    #[tokio::test]
    async fn a_producer_that_panics_ends_the_reply_with_an_error() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let mut conn = Connection::new(ours, Duration::from_secs(5));
        let mut client = Connection::new(theirs, Duration::from_secs(5));
        let relayed = relay(
            &mut conn,
            Duration::from_secs(5),
            1,
            |tx: mpsc::Sender<u64>| {
                let _ = tx.blocking_send(7);
                panic!("a producer that breaks");
            },
            |skipped| Response::ListEnd { skipped },
        )
        .await;
        assert!(relayed.result.is_ok());
        let failure = relayed.outcome().map(|err| err.code);
        assert_eq!(failure, Some(ErrorCode::Internal), "logged as a failure");
        assert_eq!(
            client.read_response().await.ok(),
            Some(Response::ListEnd { skipped: 7 })
        );
        match client.read_response().await {
            Ok(Response::Error(err)) => {
                assert_eq!(err.code, ErrorCode::Internal);
                assert!(err.message.contains("worker failed"), "{}", err.message);
            }
            other => panic!("the client is told: {other:?}"),
        }
    }
}
