//! The accept loop: connection limit, accept backoff, graceful drain.

use std::future::Future;
use std::sync::Arc;

use ft_protocol::connection::TcpConnection;
use ft_protocol::MAX_REQUEST;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::Backend;
use crate::handler;
use crate::ops::Context;

/// Serves `listener` until `shutdown` completes, then stops accepting and
/// gives the connections in flight up to the grace period to finish.
pub(crate) async fn run<B: Backend>(
    listener: TcpListener,
    context: Arc<Context<B>>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = context.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(limits.max_refusals));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut backoff = limits.accept_backoff_min;
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = limits.accept_backoff_min;
                accepted
            }
            Err(err) => {
                warn!(
                    "accept failed: {err}; retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(limits.accept_backoff_max);
                continue;
            }
        };
        if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            let conn = TcpConnection::tcp(stream, limits.idle_timeout).cap_frames(MAX_REQUEST);
            tracker.spawn(handler::serve(
                conn,
                peer,
                Arc::clone(&context),
                stop.child_token(),
                Some(permit),
            ));
        } else if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
            let conn =
                TcpConnection::tcp(stream, limits.busy_hello_timeout).cap_frames(MAX_REQUEST);
            let limits = limits.clone();
            tracker.spawn(async move {
                handler::refuse_busy(conn, peer, &limits).await;
                drop(refusal);
            });
        } else {
            warn!(client = %peer, "dropped: over the connection limit");
        }
    }

    drop(listener);
    stop.cancel();
    tracker.close();
    let in_flight = tracker.len();
    if in_flight > 0 {
        info!(
            "shutting down: waiting up to {} s for {in_flight} connection(s)",
            limits.shutdown_grace.as_secs()
        );
    }
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            "shutting down: {} connection(s) cut after the grace period",
            tracker.len()
        );
    }
    info!("stopped");
}
