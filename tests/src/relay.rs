//! `Relay`: a TCP relay in front of a server that carries a byte budget and
//! then stalls, cuts or pauses the link, to fail a transfer on purpose.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::background::{accept, listen, Stop};
use crate::process::RUN_TIMEOUT;
use crate::raw::IO_TIMEOUT;

/// How long one read of a relayed socket blocks before the relay looks at
/// its [`Stop`] again.
const READ_SLICE: Duration = Duration::from_millis(100);

/// What a [`Relay`] does to its first connection once the budget is spent.
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

/// A TCP relay on 127.0.0.1 in front of a server. Its first connection (or
/// every one) carries `budget` bytes from the server and then stalls, is cut
/// or pauses; other connections pass through untouched. The budget counts
/// bytes on the wire, TLS and all: its handshake (about 1 KiB from the
/// server) and about 22 bytes a record of up to 16 KiB, so some 0.2% less
/// of the file's bytes get through than the budget says.
pub struct Relay {
    pub addr: SocketAddr,
    stop: Stop,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Budget and `after` for the first connection only.
    pub fn start(target: SocketAddr, budget: u64, after: AfterBudget) -> Self {
        Self::spawn(target, budget, after, false)
    }

    /// Budget and `after` for every connection: a link that keeps failing.
    pub fn start_every(target: SocketAddr, budget: u64, after: AfterBudget) -> Self {
        Self::spawn(target, budget, after, true)
    }

    fn spawn(target: SocketAddr, budget: u64, after: AfterBudget, every: bool) -> Self {
        let (listener, addr) = listen();
        let stop = Stop::after(RUN_TIMEOUT);
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (stop2, streams2) = (stop.clone(), Arc::clone(&streams));
        thread::spawn(move || {
            let mut budget = Some(budget);
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
                let limit = if every {
                    budget.unwrap_or(u64::MAX)
                } else {
                    budget.take().unwrap_or(u64::MAX)
                };
                let stop3 = stop2.clone();
                thread::spawn(move || relay_one(client, server, limit, after, &stop3));
            }
        });
        Self {
            addr,
            stop,
            streams,
        }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

/// Relays one connection: everything upstream, `limit` bytes downstream, then
/// `after`. Every read and wait ends once `stop` is due.
fn relay_one(client: TcpStream, server: TcpStream, limit: u64, after: AfterBudget, stop: &Stop) {
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
    let up_stop = stop.clone();
    thread::spawn(move || forward(&mut up_from, &mut up_to, &up_stop));
    let (mut down_from, mut down_to) = (server, client);
    let mut left = limit;
    let mut buf = vec![0u8; 64 * 1024];
    // What was read past the budget: held back, and sent after a pause.
    let mut held_back = Vec::new();
    while left > 0 {
        let Some(n) = read_some(&mut down_from, &mut buf, stop) else {
            break;
        };
        let send = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        if down_to.write_all(&buf[..send]).is_err() {
            break;
        }
        left -= send as u64;
        held_back = buf[send..n].to_vec();
    }
    if left == 0 {
        match after {
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
