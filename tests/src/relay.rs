//! `Relay`: a TCP relay in front of a server that fails or slows a transfer
//! on purpose: a byte budget after which a connection stalls, is cut or
//! pauses, and a cap on the rate it passes from the server, for each
//! connection or shared by all; towards the server (an upload), a cap for
//! each connection or one flipped byte; and a count of what it relayed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::background::{accept, listen, Stop};
use crate::process::RUN_TIMEOUT;
use crate::raw::IO_TIMEOUT;

/// How long one read of a relayed socket blocks before the relay looks at
/// its [`Stop`] again.
const READ_SLICE: Duration = Duration::from_millis(100);

/// The most a capped connection reads from the server at once: the burst
/// it passes on before the cap makes it wait (a few ms at the rates the
/// tests use).
const CAPPED_READ: usize = 16 * 1024;

/// What a [`Relay`] does to a connection once its budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBudget {
    /// Forward nothing more but keep the connection open: a stalled link.
    Stall,
    /// Close the connection: a dropped link.
    Cut,
    /// Forward nothing for this long, then everything: a link that hangs
    /// for a while and recovers.
    Pause(Duration),
}

/// Which connections a budget applies to.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// The `n`th accepted, counting from 1.
    Nth(usize),
    Every,
}

/// A budget: how many bytes from the server, for which connections, and
/// what then.
#[derive(Debug, Clone, Copy)]
struct Budget {
    which: Which,
    bytes: u64,
    after: AfterBudget,
}

/// A cap on the bytes per second passed from the server.
#[derive(Debug, Clone, Copy)]
enum Cap {
    /// Each connection on its own: a path whose every flow is policed.
    Each(u64),
    /// All connections together: one narrow link.
    Shared(u64),
}

/// What happens to the bytes a client sends.
#[derive(Debug, Clone, Copy)]
enum Up {
    /// At most this many bytes per second on each connection.
    Capped(u64),
    /// The byte at this offset of the `nth` connection (from 1) is flipped.
    Flip { nth: usize, at: u64 },
}

/// Lets bytes through at a rate: each batch waits until the batches before
/// it have had their time. A batch that comes late may make up for at
/// most [`CATCH_UP`], so an idle spell earns no burst, but a sleep that
/// overran costs the rate nothing.
#[derive(Debug)]
struct Pacer {
    bytes_per_sec: u64,
    /// When the next batch may go.
    next: Mutex<Instant>,
}

/// How far behind its schedule a [`Pacer`] may fall and still catch up:
/// more than a sleep overruns by.
const CATCH_UP: Duration = Duration::from_millis(5);

impl Pacer {
    fn new(bytes_per_sec: u64) -> Arc<Self> {
        Arc::new(Self {
            bytes_per_sec,
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits until `n` more bytes may go. Bounded: by the time the batches
    /// already scheduled take, one per relayed connection at most, each of
    /// at most [`CAPPED_READ`] bytes (milliseconds at the rates tests use).
    fn wait(&self, n: usize) {
        let at = {
            let mut next = self.next.lock().unwrap();
            let now = Instant::now();
            let at = (*next).max(now.checked_sub(CATCH_UP).unwrap_or(now));
            *next = at + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
            at
        };
        // A plain sleep: the stop's polls are too coarse for a pace.
        thread::sleep(at.saturating_duration_since(Instant::now()));
    }
}

/// What a [`Relay`] has seen so far.
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicUsize,
    /// Connections whose client side is still open.
    open: AtomicUsize,
    peak: AtomicUsize,
    spent: AtomicUsize,
}

/// A TCP relay on 127.0.0.1 in front of a server. A budget makes chosen
/// connections carry that many bytes from the server and then stall, be
/// cut or pause; a cap slows what the server sends. The budget and the cap
/// count bytes on the wire, TLS and all: its handshake (about 1 KiB from
/// the server) and about 22 bytes a record of up to 16 KiB, so some 0.2%
/// less of the file's bytes get through than they say.
pub struct Relay {
    pub addr: SocketAddr,
    stop: Stop,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    counts: Arc<Counts>,
}

impl Relay {
    /// Budget and `after` for the first connection only.
    pub fn start(target: SocketAddr, budget: u64, after: AfterBudget) -> Self {
        let budget = Budget {
            which: Which::Nth(1),
            bytes: budget,
            after,
        };
        Self::spawn(target, Some(budget), None, None)
    }

    /// Each connection passes at most `bytes_per_sec` from the client: an
    /// upload over one connection is slow, over several it is not.
    pub fn capped_up(target: SocketAddr, bytes_per_sec: u64) -> Self {
        Self::spawn(target, None, None, Some(Up::Capped(bytes_per_sec)))
    }

    /// The byte at offset `at` of what the client sends on its `nth`
    /// connection (from 1) is flipped on its way: inside TLS, the server
    /// finds a record that fails its check and drops the connection.
    pub fn flipping_up(target: SocketAddr, nth: usize, at: u64) -> Self {
        Self::spawn(target, None, None, Some(Up::Flip { nth, at }))
    }

    /// Budget and `after` for every connection: a link that keeps failing.
    pub fn start_every(target: SocketAddr, budget: u64, after: AfterBudget) -> Self {
        let budget = Budget {
            which: Which::Every,
            bytes: budget,
            after,
        };
        Self::spawn(target, Some(budget), None, None)
    }

    /// Each connection passes at most `bytes_per_sec` from the server: one
    /// connection is slow, several together are not.
    pub fn capped(target: SocketAddr, bytes_per_sec: u64) -> Self {
        Self::spawn(target, None, Some(Cap::Each(bytes_per_sec)), None)
    }

    /// All connections together pass at most `bytes_per_sec` from the
    /// server: more connections share the same rate.
    pub fn shared_cap(target: SocketAddr, bytes_per_sec: u64) -> Self {
        Self::spawn(target, None, Some(Cap::Shared(bytes_per_sec)), None)
    }

    /// [`Relay::capped`], and the `nth` connection (counting from 1) is cut
    /// once it has carried `budget` bytes from the server.
    pub fn capped_cutting(target: SocketAddr, bytes_per_sec: u64, nth: usize, budget: u64) -> Self {
        let budget = Budget {
            which: Which::Nth(nth),
            bytes: budget,
            after: AfterBudget::Cut,
        };
        Self::spawn(target, Some(budget), Some(Cap::Each(bytes_per_sec)), None)
    }

    fn spawn(target: SocketAddr, budget: Option<Budget>, cap: Option<Cap>, up: Option<Up>) -> Self {
        let (listener, addr) = listen();
        let stop = Stop::after(RUN_TIMEOUT);
        let streams = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(Counts::default());
        let (stop2, streams2, counts2) = (stop.clone(), Arc::clone(&streams), Arc::clone(&counts));
        let shared = match cap {
            Some(Cap::Shared(rate)) => Some(Pacer::new(rate)),
            _ => None,
        };
        thread::spawn(move || {
            while let Some(client) = accept(&listener, &stop2) {
                // A server that is down (being restarted) refuses: so does the relay.
                let Ok(server) = TcpStream::connect_timeout(&target, IO_TIMEOUT) else {
                    continue;
                };
                {
                    let mut held = streams2.lock().unwrap();
                    held.push(client.try_clone().expect("clone"));
                    held.push(server.try_clone().expect("clone"));
                }
                let nth = counts2.accepted.fetch_add(1, Ordering::AcqRel) + 1;
                let open = counts2.open.fetch_add(1, Ordering::AcqRel) + 1;
                counts2.peak.fetch_max(open, Ordering::AcqRel);
                let budget = budget.filter(|budget| match budget.which {
                    Which::Nth(n) => n == nth,
                    Which::Every => true,
                });
                let pacer = match cap {
                    Some(Cap::Each(rate)) => Some(Pacer::new(rate)),
                    Some(Cap::Shared(_)) => shared.clone(),
                    None => None,
                };
                let up = match up {
                    Some(Up::Flip { nth: n, .. }) if n != nth => None,
                    other => other,
                };
                let (stop3, counts3) = (stop2.clone(), Arc::clone(&counts2));
                thread::spawn(move || {
                    relay_one(client, server, (budget, pacer, up), &stop3, &counts3)
                });
            }
        });
        Self {
            addr,
            stop,
            streams,
            counts,
        }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counts.accepted.load(Ordering::Acquire)
    }

    /// The most connections open at once so far (open: until the client
    /// closes its side, or the relay cuts it).
    pub fn peak_connections(&self) -> usize {
        self.counts.peak.load(Ordering::Acquire)
    }

    /// Connections whose budget ran out so far.
    pub fn budgets_spent(&self) -> usize {
        self.counts.spent.load(Ordering::Acquire)
    }
}

/// Relays one connection: everything upstream; downstream, at the pace of
/// `pacer` if there is one, the budget's bytes and then what it says, or
/// everything if there is none. Every read and wait ends once `stop` is
/// due.
fn relay_one(
    client: TcpStream,
    server: TcpStream,
    (budget, pacer, up): (Option<Budget>, Option<Arc<Pacer>>, Option<Up>),
    stop: &Stop,
    counts: &Arc<Counts>,
) {
    // The timeout is the socket's, so the clones below share it.
    for stream in [&client, &server] {
        stream
            .set_read_timeout(Some(READ_SLICE))
            .expect("read timeout");
    }
    let (mut up_from, mut up_to) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let (up_stop, up_counts) = (stop.clone(), Arc::clone(counts));
    thread::spawn(move || {
        match up {
            None => forward(&mut up_from, &mut up_to, &up_stop),
            Some(up) => forward_up(&mut up_from, &mut up_to, up, &up_stop),
        }
        // As a network would: the server hears that the client is gone.
        let _ = up_to.shutdown(Shutdown::Write);
        // The client has closed its side (or the relay has): no longer open.
        up_counts.open.fetch_sub(1, Ordering::AcqRel);
    });
    let (mut down_from, mut down_to) = (server, client);
    let mut left = budget.map_or(u64::MAX, |budget| budget.bytes);
    let mut buf = vec![
        0u8;
        if pacer.is_some() {
            CAPPED_READ
        } else {
            64 * 1024
        }
    ];
    // What was read past the budget: held back, and sent after a pause.
    let mut held_back = Vec::new();
    while left > 0 {
        let Some(n) = read_some(&mut down_from, &mut buf, stop) else {
            break;
        };
        let send = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        if let Some(pacer) = &pacer {
            pacer.wait(send);
        }
        if down_to.write_all(&buf[..send]).is_err() {
            break;
        }
        left -= send as u64;
        held_back = buf[send..n].to_vec();
    }
    if let (0, Some(budget)) = (left, budget) {
        counts.spent.fetch_add(1, Ordering::AcqRel);
        match budget.after {
            AfterBudget::Stall => stop.sleep(),
            AfterBudget::Cut => {}
            AfterBudget::Pause(pause) => {
                stop.sleep_until(Instant::now() + pause);
                if down_to.write_all(&held_back).is_ok() {
                    forward(&mut down_from, &mut down_to, stop);
                }
            }
        }
    }
    let _ = down_to.shutdown(Shutdown::Both);
    let _ = down_from.shutdown(Shutdown::Both);
}

/// Copies `from` to `to` until either closes or `stop` is due.
fn forward(from: &mut TcpStream, to: &mut TcpStream, stop: &Stop) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(n) = read_some(from, &mut buf, stop) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Copies what a client sends to the server, capped or with one byte
/// flipped, until either closes or `stop` is due.
fn forward_up(from: &mut TcpStream, to: &mut TcpStream, up: Up, stop: &Stop) {
    let (pacer, mut flip_at) = match up {
        Up::Capped(rate) => (Some(Pacer::new(rate)), None),
        Up::Flip { at, .. } => (None, Some(at)),
    };
    let mut buf = vec![0u8; CAPPED_READ];
    let mut passed = 0u64;
    while let Some(n) = read_some(from, &mut buf, stop) {
        if let Some(pacer) = &pacer {
            pacer.wait(n);
        }
        if let Some(at) = flip_at.filter(|at| *at < passed + n as u64) {
            buf[(at - passed) as usize] ^= 0x20;
            flip_at = None;
        }
        passed += n as u64;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// The next bytes from `from` into `buf`: their count, or `None` at the
/// end, on an error or once `stop` is due. Bounded: `from` has a read
/// timeout ([`READ_SLICE`]), after which `stop` is looked at again.
fn read_some(from: &mut TcpStream, buf: &mut [u8], stop: &Stop) -> Option<usize> {
    while !stop.is_due() {
        match from.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
    None
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.set();
        // Also ends any write blocked on a peer that no longer reads.
        for stream in self.streams.lock().unwrap().iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
