//! One file over several connections. The front stream (a `Get`, checked
//! by the sink as ever) comes from the first hole upwards; range workers,
//! each on a connection of its own, take chunks from the top of the holes
//! downwards with `Range` requests, two in flight each, and write them in
//! place. Every chunk a range brings is checked the moment it lands against
//! the server's checkpoint states (one `Checkpoints` table per download),
//! or, when it lands before the table, as soon as the table comes. The
//! controller adds connections while each step adds throughput, up to
//! `--connections`, and gives back the last step when it did not.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ft_protocol::{
    ChainHasher, Digest, FileMeta, GetEvent, RangeReply, Request, Response, CHUNK_SIZE,
    MAX_CHECKPOINTS,
};
use tokio::task::JoinSet;

use super::chunks::{self, Chunks};
use crate::error::{Error, ServerError, WorkerError};
use crate::progress::Tracker;
use crate::session::{broken, remote as remote_failure, Failure, Link, Server};

/// Ranges a worker keeps asked for ahead of the one it receives: its
/// connection never idles between two.
const DEPTH: usize = 2;

/// Chunks per range: small enough that the last ranges do not keep the
/// download waiting on one slow connection.
const RANGE_CHUNKS: u64 = 1;

/// The largest file fetched over several connections: its table of
/// states (8 MiB at this size) is asked for whole before any chunk a range
/// brings can be checked, and the size is the server's word. Larger files
/// come over one connection, their states as they stream.
pub const MAX_RANGED: u64 = 1 << 40;

/// How often the controller looks.
const TICK: Duration = Duration::from_millis(50);

/// How often the sidecar hears of the verified chunks.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// A step up in connections is kept when throughput grew by this much.
const GAIN: f64 = 1.15;

/// Bounds of the measuring window (eight round trips in between).
const WINDOW_MIN: Duration = Duration::from_millis(500);
const WINDOW_MAX: Duration = Duration::from_secs(3);

/// The server's checkpoint states of one file version: every boundary,
/// and the file's SHA-256 (a `Checkpoints` reply always carries it).
#[derive(Debug)]
pub(crate) struct Table {
    pub meta: FileMeta,
    pub sha256: Digest,
    states: Vec<Digest>,
}

impl Table {
    /// The states of `meta`'s boundaries `1..`, and its digest.
    pub fn new(meta: FileMeta, sha256: Digest, states: Vec<Digest>) -> Self {
        Self {
            meta,
            sha256,
            states,
        }
    }

    /// Whether it holds every boundary of the file.
    pub fn is_whole(&self) -> bool {
        self.states.len() as u64 == ft_protocol::boundaries(self.meta.size)
    }

    /// Whether it holds the boundaries up to `upto` (or all the file has).
    pub fn covers(&self, upto: u64) -> bool {
        self.states.len() as u64 >= upto.min(ft_protocol::boundaries(self.meta.size))
    }

    /// The state before chunk `k`.
    pub fn start(&self, k: u64) -> Option<Digest> {
        match k {
            0 => ChainHasher::new().state(),
            k => self.states.get(k as usize - 1).copied(),
        }
    }

    /// A hasher positioned at the start of chunk `k`.
    pub fn hasher(&self, k: u64) -> Option<ChainHasher> {
        ChainHasher::resume(&self.start(k)?, k * CHUNK_SIZE)
    }

    /// Whether `hasher`, fed chunk `k` whole, ends where the server says:
    /// on the next boundary's state, and for the last chunk on the digest.
    pub fn accepts(&self, k: u64, hasher: ChainHasher) -> bool {
        let (_, end) = chunks::bytes(k, self.meta.size);
        if hasher.consumed() != end {
            return false;
        }
        if end.is_multiple_of(CHUNK_SIZE) && hasher.state() != self.start(end / CHUNK_SIZE) {
            return false;
        }
        end != self.meta.size || hasher.finalize() == self.sha256
    }

    /// Whether chunk `k` of `file` checks out (read from disk).
    pub fn check_on_disk(&self, file: &File, k: u64) -> std::io::Result<bool> {
        let (start, end) = chunks::bytes(k, self.meta.size);
        let Some(mut hasher) = self.hasher(k) else {
            return Ok(false);
        };
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        hasher.update(&buf);
        Ok(self.accepts(k, hasher))
    }
}

/// What every worker and the controller share.
pub(crate) struct Swarm {
    pub server: Server,
    pub remote: String,
    pub meta: FileMeta,
    pub file: Arc<File>,
    /// The partial's name, for messages.
    pub shown: std::path::PathBuf,
    /// Connections to draw on beyond the front's.
    pub spare: Arc<Spare>,
    /// Whether ranges may fetch chunks (see [`MAX_RANGED`]).
    pub ranged: bool,
    /// Connections lost in a row: the retries allowed bound them.
    lost: std::sync::atomic::AtomicU32,
    /// Bytes the workers moved the progress bar by.
    pub bar_moved: AtomicU64,
    /// Wakes the controller: the front stream has ended.
    pub wake: tokio::sync::Notify,
    state: Mutex<State>,
}

struct State {
    chunks: Chunks,
    table: Option<Arc<Table>>,
    /// Whether a worker has asked for the table.
    table_asked: bool,
    /// Which, until the table comes.
    table_asker: Option<u32>,
    /// Payload bytes the range workers received.
    received: u64,
    /// Chunks that failed to check out, and how often.
    mismatches: HashMap<u64, u32>,
    /// The first failure that ends the download.
    failure: Option<Failure>,
    /// Workers that should stop once their ranges are in.
    retiring: usize,
}

impl Swarm {
    pub fn new(
        server: Server,
        remote: String,
        meta: FileMeta,
        (file, shown): (File, std::path::PathBuf),
        chunks: Chunks,
        table: Option<Arc<Table>>,
        spare: Arc<Spare>,
    ) -> Self {
        Self {
            server,
            remote,
            meta,
            file: Arc::new(file),
            shown,
            spare,
            ranged: meta.size <= MAX_RANGED,
            lost: std::sync::atomic::AtomicU32::new(0),
            bar_moved: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            state: Mutex::new(State {
                chunks,
                // A table of part of the file (a resume's) is no use to
                // the ranges.
                table_asked: table.as_ref().is_some_and(|table| table.is_whole()),
                table: table.filter(|table| table.is_whole()),
                table_asker: None,
                received: 0,
                mismatches: HashMap::new(),
                failure: None,
                retiring: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked holding the lock left consistent slots:
        // every change is one assignment.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The front stream is about to receive chunk `k`; `false`: stop.
    pub fn front_enters(&self, k: u64) -> bool {
        self.lock().chunks.front_enters(k)
    }

    /// The front stream stopped with the bytes before `verified` verified.
    pub fn front_stopped(&self, verified: u64) {
        let chunks = if verified >= self.meta.size {
            chunks::count(self.meta.size)
        } else {
            verified / CHUNK_SIZE
        };
        self.lock().chunks.front_stopped(chunks);
    }

    /// The chunk at `offset` failed to check out on the front stream.
    pub fn front_mismatch(&self, offset: u64) {
        self.mismatch(offset / CHUNK_SIZE, None);
    }

    /// The verified chunks.
    pub fn done(&self) -> Vec<u64> {
        self.lock().chunks.done()
    }

    /// The server's modification time, then the bytes on disk, before the
    /// final name.
    pub fn settle(&self, mtime: Option<std::time::SystemTime>) -> Result<(), Error> {
        if let Some(mtime) = mtime {
            // A courtesy; failing to set it loses nothing.
            let _ = self.file.set_modified(mtime);
        }
        self.file
            .sync_all()
            .map_err(Error::local(self.shown.clone()))
    }

    /// The table, when it has come.
    pub fn table(&self) -> Option<Arc<Table>> {
        self.lock().table.clone()
    }

    /// Bytes the range workers received.
    pub fn received(&self) -> u64 {
        self.lock().received
    }

    /// The verified runs, for the sidecar; `front_written` bytes of the
    /// front's own are on disk too.
    pub fn runs(&self, front_written: u64) -> Vec<[u64; 2]> {
        self.lock().chunks.runs(front_written / CHUNK_SIZE)
    }

    pub fn complete(&self) -> bool {
        self.lock().chunks.complete()
    }

    /// Worker `id` is gone: what it had not landed is missing again, and a
    /// table it asked for and never got is asked for again.
    fn forget(&self, id: u32) {
        let mut state = self.lock();
        state.chunks.release(id);
        if state.table.is_none() && state.table_asker == Some(id) {
            state.table_asked = false;
            state.table_asker = None;
        }
    }

    /// One more connection lost; whether that is more than `retries`
    /// allow.
    pub fn lost_one(&self, retries: u32) -> (u32, bool) {
        let lost = self.lost.fetch_add(1, AtomicOrdering::AcqRel) + 1;
        (lost, lost > retries)
    }

    pub fn take_failure(&self) -> Option<Failure> {
        self.lock().failure.take()
    }

    /// Chunk `k` failed to check out: fetched again once, then the
    /// download ends with a verification error naming it.
    fn mismatch(&self, k: u64, id: Option<u32>) {
        let mut state = self.lock();
        let seen = state.mismatches.entry(k).or_insert(0);
        *seen += 1;
        if *seen >= 2 {
            let failure = Failure::Fatal(Error::Verification {
                path: self.remote.clone(),
                offset: k * CHUNK_SIZE,
                partial: self.shown.clone(),
            });
            state.failure.get_or_insert(failure);
        }
        match id {
            Some(id) => state.chunks.give_back(k, id),
            None => state.chunks.checked(k, false),
        }
    }
}

/// A range worker: connects, asks for ranges (and, the first to come, the
/// table), writes what lands and checks it, until nothing is left to take.
pub(crate) async fn worker(swarm: Arc<Swarm>, id: u32, tracker: Tracker) -> Result<(), Failure> {
    let server = swarm.server.clone();
    let _release = Release(Arc::clone(&swarm), id);
    let mut link = Link::new(&server);
    work(&swarm, &mut link, id, tracker).await
}

/// Gives a worker's chunks back however it ends: returned, failed, or
/// aborted by the controller. An abort lands at the worker's next await,
/// so it may claim chunks after the controller has released its others;
/// these are released here, when its future is dropped, or no one would
/// ever fetch them.
struct Release(Arc<Swarm>, u32);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// What a worker awaits, in the order it asked.
enum Awaited {
    Range(u64, u64),
    Table { first: u64, count: u32 },
}

async fn work(
    swarm: &Swarm,
    link: &mut Link<'_>,
    id: u32,
    mut tracker: Tracker,
) -> Result<(), Failure> {
    let mut awaited: VecDeque<Awaited> = VecDeque::new();
    let mut table_pages: Vec<Digest> = Vec::new();
    let mut counted = 0u64;
    loop {
        let mut requests = Vec::new();
        let mut ranges = awaited
            .iter()
            .filter(|a| matches!(a, Awaited::Range(..)))
            .count();
        while ranges < DEPTH {
            let claimed = {
                let mut state = swarm.lock();
                if state.failure.is_some() {
                    None
                } else if state.retiring > 0 {
                    if awaited.is_empty() {
                        state.retiring -= 1;
                        return Ok(());
                    }
                    None
                } else {
                    state.chunks.claim(id, RANGE_CHUNKS)
                }
            };
            let Some((first, end)) = claimed else { break };
            requests.push(Request::Range {
                path: swarm.remote.clone(),
                offset: first * CHUNK_SIZE,
                end: end * CHUNK_SIZE,
            });
            awaited.push_back(Awaited::Range(first, end));
            ranges += 1;
            // The table goes right after the first range: that range's
            // bytes need not wait for a cold server's hashing.
            ask_table(swarm, id, &mut requests, &mut awaited);
        }
        // A worker with no range to take still asks for the table when
        // chunks wait for it and nobody else is asking.
        ask_table(swarm, id, &mut requests, &mut awaited);
        if !requests.is_empty() {
            link.send_all(&requests).await?;
        }
        let Some(next) = awaited.pop_front() else {
            return Ok(());
        };
        match next {
            Awaited::Range(first, end) => {
                receive(swarm, link, id, (first, end), &mut tracker, &mut counted).await?;
            }
            Awaited::Table { first, count } => {
                let last = first + u64::from(count) > ft_protocol::boundaries(swarm.meta.size);
                let sha256 = table_page(swarm, link, first, count, &mut table_pages).await?;
                if last {
                    let states = std::mem::take(&mut table_pages);
                    let table = Table::new(swarm.meta, sha256, states);
                    swarm.lock().table = Some(Arc::new(table));
                }
            }
        }
    }
}

/// Asks for the table, in pages, if nobody has asked yet: the asker is
/// this worker until its table comes or it ends.
fn ask_table(swarm: &Swarm, id: u32, requests: &mut Vec<Request>, awaited: &mut VecDeque<Awaited>) {
    {
        let mut state = swarm.lock();
        if state.table_asked {
            return;
        }
        state.table_asked = true;
        state.table_asker = Some(id);
    }
    let boundaries = ft_protocol::boundaries(swarm.meta.size);
    let mut first = 1;
    loop {
        let count = (boundaries + 1 - first).min(u64::from(MAX_CHECKPOINTS)) as u32;
        requests.push(Request::Checkpoints {
            path: swarm.remote.clone(),
            first,
            count,
        });
        awaited.push_back(Awaited::Table { first, count });
        first += u64::from(count);
        if count == 0 || first > boundaries {
            break;
        }
    }
}

/// One page of the table: its states appended to `pages`; the digest.
async fn table_page(
    swarm: &Swarm,
    link: &mut Link<'_>,
    first: u64,
    count: u32,
    pages: &mut Vec<Digest>,
) -> Result<Digest, Failure> {
    match link.read().await? {
        Response::Checkpoints { meta, .. } if !meta.same_version(&swarm.meta) => {
            Err(Failure::Changed)
        }
        Response::Checkpoints {
            meta,
            first: got,
            states,
        } if got == first && states.len() == count as usize => {
            pages.extend(states);
            meta.sha256
                .ok_or_else(|| broken(&swarm.server, ServerError::CheckpointsReply))
        }
        Response::Error(err) => Err(remote_failure(&swarm.server, err)),
        _ => {
            link.reset();
            Err(broken(&swarm.server, ServerError::CheckpointsReply))
        }
    }
}

/// Receives one range into the file, checking each chunk as it completes.
async fn receive(
    swarm: &Swarm,
    link: &mut Link<'_>,
    id: u32,
    (first, end): (u64, u64),
    tracker: &mut Tracker,
    counted: &mut u64,
) -> Result<(), Failure> {
    let size = swarm.meta.size;
    let mut reply = RangeReply::new(first * CHUNK_SIZE, end * CHUNK_SIZE);
    let mut hasher: Option<ChainHasher> = None;
    while !reply.is_done() {
        let pos = reply.position();
        let frame = link.read().await?;
        let event = reply.feed(frame).map_err(|err| {
            link.reset();
            broken(&swarm.server, err.into())
        })?;
        let data = match event {
            GetEvent::Meta(meta) if meta.same_version(&swarm.meta) => continue,
            GetEvent::Meta(_) => return Err(Failure::Changed),
            // A server from before `Range` refuses it: the connection is
            // lost to the download, as a dropped one, not the download.
            GetEvent::Failed(err) if err.code == ft_protocol::ErrorCode::BadRequest => {
                link.reset();
                return Err(Failure::Retry(Error::Server {
                    server: swarm.server.label.clone(),
                    source: ServerError::Remote(err),
                }));
            }
            GetEvent::Failed(err) => return Err(remote_failure(&swarm.server, err)),
            GetEvent::Data(data) => data,
            GetEvent::Checkpoint { .. } | GetEvent::End { .. } => continue,
        };
        let k = pos / CHUNK_SIZE;
        if pos.is_multiple_of(CHUNK_SIZE) {
            hasher = swarm.table().and_then(|table| table.hasher(k));
        }
        let file = Arc::clone(&swarm.file);
        let written = tokio::task::block_in_place(|| {
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&data);
            }
            file.write_all_at(&data, pos)
        });
        written.map_err(|err| Failure::Fatal(Error::local(swarm.shown.clone())(err)))?;
        swarm.lock().received += data.len() as u64;
        let now = reply.position();
        let (start, end) = chunks::bytes(k, size);
        if now == end {
            // The bar moves by whole chunks landed: a worker stopped midway
            // leaves nothing on it to take back.
            let landed = match hasher.take() {
                Some(done) => {
                    let table = swarm.table();
                    let good = table.is_some_and(|table| table.accepts(k, done));
                    if good {
                        swarm.lock().chunks.landed(k, id, true);
                    } else {
                        swarm.mismatch(k, Some(id));
                    }
                    good
                }
                None => {
                    swarm.lock().chunks.landed(k, id, false);
                    true
                }
            };
            if landed {
                *counted += end - start;
                tracker.set(*counted);
                swarm
                    .bar_moved
                    .fetch_add(end - start, AtomicOrdering::AcqRel);
            }
        }
    }
    Ok(())
}

/// Checks, on a blocking thread, the chunks that landed before the table.
pub(crate) async fn check_waiting(swarm: &Arc<Swarm>) -> Result<(), Failure> {
    let Some(table) = swarm.table() else {
        return Ok(());
    };
    let waiting = swarm.lock().chunks.waiting();
    if waiting.is_empty() {
        return Ok(());
    }
    let checker = Arc::clone(swarm);
    let results = tokio::task::spawn_blocking(move || {
        waiting
            .into_iter()
            .map(|k| table.check_on_disk(&checker.file, k).map(|good| (k, good)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|err| Failure::Fatal(Error::Worker(WorkerError::from(err))))?
    .map_err(|err| Failure::Fatal(Error::local(swarm.shown.clone())(err)))?;
    for (k, good) in results {
        if good {
            swarm.lock().chunks.checked(k, true);
        } else {
            swarm.mismatch(k, None);
        }
    }
    Ok(())
}

/// Connections that files may add beside their own, shared by all the
/// files of a run: for one file, `--connections` less its own; for a batch,
/// those its workers leave when the queue runs dry.
#[derive(Debug, Default)]
pub struct Spare(AtomicUsize);

impl Spare {
    /// `n` connections to share.
    pub fn new(n: usize) -> Self {
        Self(AtomicUsize::new(n))
    }

    /// Takes up to `n`; how many it got.
    pub fn take(&self, n: usize) -> usize {
        let mut got = 0;
        let _ = self
            .0
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |have| {
                got = have.min(n);
                Some(have - got)
            });
        got
    }

    /// Gives `n` back.
    pub fn give(&self, n: usize) {
        self.0.fetch_add(n, AtomicOrdering::AcqRel);
    }
}

/// Adds connections while each step adds throughput: the rates before and
/// after a step are measured over a window of about eight round trips.
#[derive(Debug)]
pub(crate) struct Adapt {
    window: Duration,
    /// (when, bytes in all) samples, oldest first.
    samples: VecDeque<(Instant, u64)>,
    /// Connections wanted now.
    pub target: usize,
    /// The last step: when, from how many, and the rate before it.
    step: Option<(Instant, usize, f64)>,
    settled: bool,
    started: Instant,
}

impl Adapt {
    /// A controller for a link whose round trip is about `rtt`, starting
    /// with one connection at `now`.
    pub fn new(rtt: Duration, now: Instant) -> Self {
        Self {
            window: (rtt * 8).clamp(WINDOW_MIN, WINDOW_MAX),
            samples: VecDeque::new(),
            target: 1,
            step: None,
            settled: false,
            started: now,
        }
    }

    /// A connection added was lost: one fewer, and no more steps.
    pub fn step_back(&mut self) {
        self.target = self.target.saturating_sub(1).max(1);
        self.settled = true;
    }

    /// The rate over the last window, in bytes per second.
    fn rate(&self, now: Instant) -> Option<f64> {
        let (_, last) = *self.samples.back()?;
        let since = now.checked_sub(self.window)?;
        let (when, then) = self.samples.iter().find(|(when, _)| *when >= since)?;
        let secs = now.duration_since(*when).as_secs_f64();
        (secs >= self.window.as_secs_f64() * 0.8).then(|| (last - then) as f64 / secs)
    }

    /// Takes a sample of `bytes` received in all, with `left` bytes still
    /// to fetch, and says how many connections to run now. `grant(n)` is
    /// asked for `n` more and says how many it gives; connections let go
    /// are the caller's to give back.
    pub fn sample(
        &mut self,
        now: Instant,
        bytes: u64,
        left: u64,
        grant: impl FnOnce(usize) -> usize,
    ) -> usize {
        self.samples.push_back((now, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(when, _)| now.duration_since(*when) > self.window * 3)
        {
            self.samples.pop_front();
        }
        if self.settled || now.duration_since(self.started) < self.window * 2 {
            return self.target;
        }
        let Some(rate) = self.rate(now) else {
            return self.target;
        };
        match self.step {
            // Measure only once the new connections had a window to start.
            Some((at, _, _)) if now.duration_since(at) < self.window * 2 => {}
            Some((_, from, before)) if rate < before * GAIN => {
                self.target = from;
                self.settled = true;
            }
            _ => {
                // Not worth a connection when the rest will be in within
                // two windows at this rate.
                let soon = rate * self.window.as_secs_f64() * 2.0;
                let got = if (left as f64) < soon {
                    0
                } else {
                    grant(self.target)
                };
                if got == 0 {
                    self.settled = true;
                } else {
                    self.step = Some((now, self.target, rate));
                    self.target += got;
                }
            }
        }
        self.target
    }
}

/// Runs range workers beside the front stream (running while `front.0`
/// says so; `front.1` counts its bytes) until every chunk is verified, or
/// the download fails. The most connections it ran at once.
pub(crate) async fn control(
    swarm: &Arc<Swarm>,
    rtt: Duration,
    (front_running, front_received): (&AtomicBool, &AtomicU64),
    partial: &super::Partial,
    tracker: Tracker,
    retries: u32,
) -> Result<usize, Failure> {
    let mut adapt = Adapt::new(rtt, Instant::now());
    // Connections taken from the spare ones, given back at the end.
    let mut held = 0usize;
    let mut workers: JoinSet<Result<(), Failure>> = JoinSet::new();
    // The workers by age, to stop the newest when a step is given back.
    let mut started: Vec<(u32, tokio::task::AbortHandle)> = Vec::new();
    let mut next_id = 0u32;
    let mut most = 1;
    let mut recorded = Instant::now();
    let mut pause_until = None::<Instant>;
    let outcome = loop {
        if let Some(failure) = swarm.take_failure() {
            break Err(failure);
        }
        let front = front_running.load(AtomicOrdering::Acquire);
        if !front && swarm.complete() {
            break Ok(most);
        }
        if !front && !swarm.ranged {
            // Only the front may fetch this file, and it has stopped.
            break Err(broken(&swarm.server, ServerError::StoppedEarly));
        }
        let now = Instant::now();
        let received = front_received.load(AtomicOrdering::Acquire) + swarm.received();
        let left = swarm
            .meta
            .size
            .saturating_sub(swarm.lock().chunks.done_bytes());
        let target = adapt.sample(now, received, left, |n| {
            let got = swarm.spare.take(n);
            held += got;
            got
        });
        // A step given back: its connections go back to the others.
        if target < held + 1 {
            let extra = held + 1 - target;
            swarm.spare.give(extra);
            held -= extra;
        }
        // Without the front, at least one worker, so the holes get filled.
        let wanted = match swarm.ranged {
            true => target.max(usize::from(!front)),
            false => usize::from(front),
        };
        // Workers stopped by the controller still wait in the set to be
        // joined: count those not stopped.
        started.retain(|(_, handle)| !handle.is_finished());
        let running = started.len() + usize::from(front);
        let (missing, waiting, unasked) = {
            let state = swarm.lock();
            (
                state.chunks.has_missing(),
                state.chunks.has_waiting(),
                state.table.is_none() && !state.table_asked,
            )
        };
        // Work for a worker: chunks to fetch, or chunks waiting for a table
        // nobody is asking for.
        let work = missing || (waiting && unasked);
        if running > wanted && front {
            // A step given back while the front runs: the newest workers
            // stop now, and their chunks go back to the front, the stream
            // with the open window, rather than finish on a young one.
            let keep = started.len().saturating_sub(running - wanted);
            for (id, handle) in started.split_off(keep) {
                handle.abort();
                swarm.forget(id);
            }
        } else if running > wanted {
            swarm.lock().retiring = running - wanted;
        } else if running < wanted && work && pause_until.is_none_or(|until| now >= until) {
            swarm.lock().retiring = 0;
            for _ in running..wanted {
                next_id += 1;
                let handle = workers.spawn(worker(Arc::clone(swarm), next_id, tracker.share(0)));
                started.push((next_id, handle));
            }
        }
        most = most.max(started.len() + usize::from(front));
        if waiting {
            check_waiting(swarm).await?;
        }
        if recorded.elapsed() >= RECORD_EVERY {
            recorded = Instant::now();
            let written = front_received.load(AtomicOrdering::Acquire);
            let _ = partial.record_chunks(&swarm.runs(written));
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = swarm.wake.notified() => {}
            Some(joined) = workers.join_next() => match joined {
                Ok(Ok(())) => {}
                // A connection added beside others that still run, lost
                // (refused, say): the others go on, and no more are added.
                Ok(Err(Failure::Retry(_)))
                    if front_running.load(AtomicOrdering::Acquire) || !workers.is_empty() =>
                {
                    adapt.step_back();
                }
                Ok(Err(Failure::Retry(err))) => {
                    // The last connection lost: its chunks are missing
                    // again, and another worker takes them after a pause
                    // that grows with each loss in a row.
                    let (lost, spent) = swarm.lost_one(retries);
                    if spent {
                        break Err(Failure::Retry(err));
                    }
                    pause_until = Some(Instant::now() + backoff(lost));
                }
                Ok(Err(failure)) => break Err(failure),
                // Stopped by the controller (above).
                Err(err) if err.is_cancelled() => {}
                Err(err) => break Err(Failure::Fatal(Error::Worker(WorkerError::from(err)))),
            },
        }
    };
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    swarm.spare.give(held);
    let _ = partial.record_chunks(&swarm.runs(0));
    outcome
}

/// The pause before a worker replaces one lost `n` times in a row.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(250).saturating_mul(1 << n.min(6))
}

/// The server's checkpoint states of `remote` at the boundaries of `meta`
/// up to `upto`, and its digest: the pages `Link::checkpoints` asks for,
/// or for a file of no whole chunk, the digest alone.
pub(crate) async fn table(
    link: &mut Link<'_>,
    remote: &str,
    meta: &FileMeta,
    upto: u64,
) -> Result<Table, Failure> {
    let (states, sha256) = match ft_protocol::boundaries(meta.size).min(upto) {
        0 => match link.digest(remote).await? {
            now if !now.same_version(meta) => return Err(Failure::Changed),
            now => (Vec::new(), now.sha256),
        },
        count => link.checkpoints(remote, meta, count).await?,
    };
    let Some(sha256) = sha256 else {
        link.reset();
        return Err(broken(link.server, ServerError::CheckpointsReply));
    };
    Ok(Table::new(*meta, sha256, states))
}
