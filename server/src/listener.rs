//! The accept loop: connection limit, accept backoff, graceful drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::handler::{self, Context};
use crate::Config;

/// Clients over the limit being told "busy" at once (each holds a small task
/// for at most a second); past that they are simply closed, so a flood
/// cannot grow the refusals without bound.
const MAX_REFUSALS: usize = 256;

/// Backoff after a failed accept (out of file descriptors, say), doubling up
/// to the maximum, so the loop does not spin on an error that persists.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    listener: TcpListener,
    config: &Config,
    context: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(err) => {
                warn!(
                    "accept failed: {err}; retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            let context = Arc::clone(&context);
            tracker.spawn(handler::serve(
                stream,
                peer,
                context,
                stop.child_token(),
                permit,
            ));
        } else if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
            let limit = config.max_connections;
            tracker.spawn(async move {
                handler::refuse_busy(stream, peer, limit).await;
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
            config.shutdown_grace.as_secs()
        );
    }
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
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
