//! What the harness's own servers ([`Relay`](crate::Relay),
//! [`MisbehavingServer`](crate::MisbehavingServer)) share: a loopback
//! listener, and a [`Stop`] that ends their threads when the owner drops
//! them or at a deadline, whichever comes first.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{wait_until, POLL};

/// When a background server's threads end: once [`Stop::set`] is called
/// (by the owner's `Drop`) or at the deadline. Clones share the flag.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    flag: Arc<AtomicBool>,
    deadline: Instant,
}

impl Stop {
    /// A stop that falls due `limit` from now at the latest.
    pub(crate) fn after(limit: Duration) -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
            deadline: Instant::now() + limit,
        }
    }

    /// Tells every thread holding a clone to end.
    pub(crate) fn set(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether the threads should end now.
    pub(crate) fn is_due(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    /// Sleeps until `until`, or less if the stop falls due first.
    pub(crate) fn sleep_until(&self, until: Instant) {
        let limit = until
            .min(self.deadline)
            .saturating_duration_since(Instant::now());
        wait_until(limit, || self.flag.load(Ordering::Relaxed));
    }

    /// Sleeps until the stop falls due.
    pub(crate) fn sleep(&self) {
        self.sleep_until(self.deadline);
    }
}

/// A listener on 127.0.0.1 at a free port, which never blocks in `accept`.
pub(crate) fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

/// The next connection to `listener` (from [`listen`]), as a blocking
/// stream; `None` once `stop` is due. The listener does not block, so this
/// polls, and checks `stop` between tries.
pub(crate) fn accept(listener: &TcpListener, stop: &Stop) -> Option<TcpStream> {
    while !stop.is_due() {
        if let Ok((stream, _)) = listener.accept() {
            stream.set_nonblocking(false).expect("blocking");
            return Some(stream);
        }
        thread::sleep(POLL);
    }
    None
}
