//! The accept loop: connection limit, accept backoff, graceful drain; and
//! the TLS handshake every connection starts with, off the loop, which
//! turns away in plain words what is not a TLS client.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ft_protocol::codec;
use ft_protocol::connection::ServerTlsConnection;
use ft_protocol::{ErrorCode, RemoteError, Response, MAGIC, MAX_REQUEST, VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
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
    (tls, congestion): (Arc<rustls::ServerConfig>, Option<String>),
    context: Arc<Context<B>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
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
                // A route's own congestion control (`ip route … congctl`)
                // overrides the listener's for the connections it accepts;
                // the chosen one is set again on each.
                if let Some(name) = &congestion {
                    let _ = ft_protocol::connection::set_congestion(&accepted.0, name);
                }
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
        // A client that never finishes its TLS handshake holds a slot no
        // longer than one that never says hello.
        let handshake_limit = limits.handshake_timeout.min(limits.idle_timeout);
        if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            let (acceptor, context) = (acceptor.clone(), Arc::clone(&context));
            let stop = stop.child_token();
            let idle = limits.idle_timeout;
            tracker.spawn(async move {
                let Some(conn) = secure(&acceptor, stream, peer, handshake_limit, idle).await
                else {
                    return;
                };
                handler::serve(conn, peer, context, stop, Some(permit)).await;
            });
        } else if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
            let (acceptor, limits) = (acceptor.clone(), limits.clone());
            tracker.spawn(async move {
                let limit = limits.busy_hello_timeout;
                if let Some(conn) = secure(&acceptor, stream, peer, limit, limit).await {
                    handler::refuse_busy(conn, peer, &limits).await;
                }
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

/// What a connection's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// A TLS handshake record.
    Tls,
    /// An ft client of version 1, in plain text.
    PlainFt,
    /// Anything else.
    Other,
}

/// Tells a TLS ClientHello from a version-1 ft hello (a length prefix, then
/// variant 0 and the magic) from anything else.
fn opening(first: &[u8]) -> Opening {
    match first {
        [0x16, 0x03, ..] => Opening::Tls,
        [_, _, _, _, 0, 0, 0, 0, m0, m1, m2, m3, ..] if [*m0, *m1, *m2, *m3] == MAGIC => {
            Opening::PlainFt
        }
        _ => Opening::Other,
    }
}

/// The TLS handshake, within `limit`: the connection it gives, its frames
/// capped at a request's size. A plain-text ft client of an older version
/// hears, in its own framing, which version this server speaks; anything
/// else that is not TLS is closed. Either way one line is logged and the
/// server goes on.
async fn secure(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    limit: Duration,
    idle: Duration,
) -> Option<ServerTlsConnection> {
    ft_protocol::connection::without_delay(&stream);
    let work = async {
        let mut first = [0u8; 12];
        // Peeking waits for bytes; a peer that sends fewer than 12, not a
        // TLS record, and then waits is not an ft client of any version: it
        // is looked at again every 50 ms (bytes already there would wake a
        // wait for more at once), and meets the limit.
        let seen = loop {
            let seen = stream.peek(&mut first).await?;
            if seen == 0 || seen == first.len() || opening(&first[..seen]) == Opening::Tls {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match opening(&first[..seen]) {
            // Closed before a byte: a load balancer's health check, or a
            // port scan. Nothing was refused; it is only a debug line.
            _ if seen == 0 => {
                tracing::debug!(client = %peer, "closed without a byte");
                Ok(None)
            }
            Opening::Tls => acceptor.accept(stream).await.map(Some),
            Opening::PlainFt => {
                refuse_plain(stream).await;
                tracing::info!(client = %peer, "refused: a version-1 client, without TLS");
                Ok(None)
            }
            Opening::Other => {
                tracing::info!(client = %peer, "refused: not a TLS client");
                Ok(None)
            }
        }
    };
    match tokio::time::timeout(limit, work).await {
        // rustls refuses a client offering other protocols, but not one
        // offering none: that one is no ft client either.
        Ok(Ok(Some(tls))) if tls.get_ref().1.alpn_protocol() != Some(ft_protocol::tls::ALPN) => {
            tracing::info!(client = %peer, "refused: a TLS client that does not speak ft/2");
            None
        }
        Ok(Ok(Some(tls))) => Some(ServerTlsConnection::new(tls, idle).cap_frames(MAX_REQUEST)),
        Ok(Ok(None)) => None,
        Ok(Err(err)) => {
            tracing::info!(client = %peer, "TLS handshake failed: {err}");
            None
        }
        Err(_) => {
            tracing::info!(client = %peer, "no TLS handshake within {} s; closing", limit.as_secs());
            None
        }
    }
}

/// Answers a version-1 client in its own plain framing, as a server of
/// that version answers a version it does not speak, so its user reads why.
async fn refuse_plain(mut stream: TcpStream) {
    let refusal = Response::Error(RemoteError::new(
        ErrorCode::UnsupportedVersion,
        format!(
            "this server speaks ft protocol version {VERSION}, over TLS; upgrade ftget to talk to it"
        ),
    ));
    if let Ok(frame) = codec::encode(&refusal) {
        let _ = stream.write_all(&frame).await;
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_an_old_ft_client_from_anything_else() {
        assert_eq!(opening(&[0x16, 0x03, 0x01, 0x02, 0x00]), Opening::Tls);
        let v1_hello = [0, 0, 0, 12, 0, 0, 0, 0, b'F', b'T', b'X', b'F'];
        assert_eq!(opening(&v1_hello), Opening::PlainFt);
        assert_eq!(opening(b"GET / HTTP/1.1\r\n"), Opening::Other);
        assert_eq!(opening(b""), Opening::Other);
        assert_eq!(opening(&v1_hello[..11]), Opening::Other);
    }
}
