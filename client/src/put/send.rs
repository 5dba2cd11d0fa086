//! One file up: its chunk states from one pass over it, then the
//! conversation that stores it (`Put`, the chunks the server lacks,
//! `Commit`), over one connection or, for a large file, over several: the
//! chunks go to whichever connection is free, and more connections are
//! added while each step makes the upload faster. A lost connection costs
//! the chunks it had in flight; a round that ends with chunks missing is
//! retried from what the server says it holds.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ft_protocol::put::{chunk_len, chunks};
use ft_protocol::{ChainHasher, Digest, ErrorCode, Request, Response, CHUNK_SIZE, MAX_PUT_DATA};

use crate::error::{Error, ServerError};
use crate::progress::Tracker;
use crate::session::{broken, remote, Failure, Link, Retries, Server};
use crate::transfer::Adapt;

/// Chunks sent ahead of their answers on one connection.
const DEPTH: usize = 2;

/// Times a local file may be found changed before the upload gives up.
const MAX_RESTARTS: u32 = 3;

/// One version of a local file, as the upload names it.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub size: u64,
    pub mtime: (i64, u32),
    /// What the upload calls this version: a hash of the stamp.
    pub tag: Digest,
    /// Device, inode, size and modification time, to notice a change.
    stamp: (u64, u64, u64, i64, i64),
}

impl Version {
    /// The version of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let stamp = stamp(meta);
        let mut hasher = ChainHasher::new();
        for word in [stamp.0, stamp.1, stamp.2, stamp.3 as u64, stamp.4 as u64] {
            hasher.update(&word.to_le_bytes());
        }
        Self {
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec().clamp(0, 999_999_999) as u32),
            tag: hasher.finalize(),
            stamp,
        }
    }
}

/// What to upload where, and how.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub local: PathBuf,
    pub remote: String,
}

/// How uploads go.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub retries: u32,
    pub overwrite: bool,
    /// Connections one file may use, its own included.
    pub connections: usize,
}

/// How one upload ended.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub size: u64,
    pub sha256: Digest,
    /// The server had this very file under its name already.
    pub up_to_date: bool,
    pub resumed_from: u64,
    pub bytes_sent: u64,
    pub connections: usize,
}

fn stamp(meta: &std::fs::Metadata) -> (u64, u64, u64, i64, i64) {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// Whether the file at `path` is still `version`.
fn unchanged(path: &Path, version: &Version) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| stamp(&meta) == version.stamp)
}

/// How far the hashing pass over a file has come.
#[derive(Debug, Clone, Default)]
struct Hashed {
    /// Chunks whose states are known, from the first.
    chunks: u64,
    /// The end: the file's SHA-256, or why there is none.
    done: Option<Result<Digest, HashFailure>>,
}

#[derive(Debug, Clone)]
enum HashFailure {
    /// The file changed while it was read.
    Changed,
    Io(Arc<std::io::Error>),
}

/// The chunk states of one version of a file, filled in order by one
/// pass over it on a blocking thread while the chunks already hashed go
/// out: chunk k can be sent once the pass is past it.
pub(crate) struct Table {
    states: Mutex<Vec<(Digest, Digest)>>,
    progress: tokio::sync::watch::Receiver<Hashed>,
}

impl Table {
    /// Starts the pass over `file`, which is `version` of `path`.
    fn start(path: PathBuf, file: Arc<File>, version: &Version) -> Arc<Self> {
        let (tx, progress) = tokio::sync::watch::channel(Hashed::default());
        let table = Arc::new(Self {
            states: Mutex::new(Vec::new()),
            progress,
        });
        let (filling, version) = (Arc::clone(&table), version.clone());
        tokio::task::spawn_blocking(move || {
            let done = filling.fill(&file, &version, &tx);
            let done = match done {
                Ok(_) if !unchanged(&path, &version) => Err(HashFailure::Changed),
                other => other,
            };
            tx.send_modify(|hashed| hashed.done = Some(done));
        });
        table
    }

    /// Hashes every chunk of `file` in order, publishing each one's states.
    fn fill(
        &self,
        file: &File,
        version: &Version,
        tx: &tokio::sync::watch::Sender<Hashed>,
    ) -> Result<Digest, HashFailure> {
        let size = version.size;
        let count = chunks(size);
        let mut hasher = ChainHasher::new();
        // Zeroed once, then read into again and again.
        let mut buf = vec![0u8; CHUNK_SIZE.min(size) as usize];
        for index in 0..count {
            if tx.is_closed() {
                // No one waits for the rest.
                return Err(HashFailure::Changed);
            }
            let len = chunk_len(size, index) as usize;
            let piece = &mut buf[..len];
            file.read_exact_at(piece, index * CHUNK_SIZE)
                .map_err(|err| match err.kind() {
                    std::io::ErrorKind::UnexpectedEof => HashFailure::Changed,
                    _ => HashFailure::Io(Arc::new(err)),
                })?;
            let start = hasher.state().unwrap_or_default();
            hasher.update(piece);
            let end = match index + 1 == count {
                true => hasher.clone().finalize(),
                false => hasher.state().unwrap_or_default(),
            };
            self.states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((start, end));
            tx.send_modify(|hashed| hashed.chunks = index + 1);
        }
        Ok(
            match self.states.lock().unwrap_or_else(|e| e.into_inner()).last() {
                Some((_, end)) => *end,
                None => hasher.finalize(),
            },
        )
    }

    /// The states of chunk `index`, once the pass is past it.
    async fn states(&self, index: u64) -> Result<(Digest, Digest), HashFailure> {
        let mut progress = self.progress.clone();
        let hashed = progress
            .wait_for(|hashed| hashed.chunks > index || hashed.done.is_some())
            .await
            .map_err(|_| HashFailure::Changed)?
            .clone();
        if hashed.chunks > index {
            let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(found) = states.get(index as usize) {
                return Ok(*found);
            }
        }
        match hashed.done {
            Some(Err(failure)) => Err(failure),
            _ => Err(HashFailure::Changed),
        }
    }

    /// The file's SHA-256, once the pass has ended.
    async fn sha256(&self) -> Result<Digest, HashFailure> {
        let mut progress = self.progress.clone();
        let hashed = progress
            .wait_for(|hashed| hashed.done.is_some())
            .await
            .map_err(|_| HashFailure::Changed)?
            .clone();
        hashed.done.unwrap_or(Err(HashFailure::Changed))
    }
}

/// What the hashing pass means for the upload.
fn hash_failure(path: &Path, failure: HashFailure) -> Failure {
    match failure {
        HashFailure::Changed => Failure::Changed,
        HashFailure::Io(err) => Failure::Fatal(Error::Local {
            path: path.to_path_buf(),
            source: std::io::Error::new(err.kind(), err.to_string()),
        }),
    }
}

/// A small file read whole and hashed, for a run of pipelined files.
pub(crate) struct Whole {
    pub version: Version,
    /// The states of its one chunk; none for an empty file.
    pub states: Option<(Digest, Digest)>,
    pub sha256: Digest,
    pub bytes: Vec<u8>,
}

/// Reads the small file (one chunk at most) at `path` whole and hashes it;
/// `None` if it has grown past one chunk since it was planned (it then
/// goes the way of a large file).
pub(crate) fn hash_whole(path: &Path) -> Result<Option<Whole>, Error> {
    let file = File::open(path).map_err(Error::local(path))?;
    let meta = file.metadata().map_err(Error::local(path))?;
    let version = Version::of(&meta);
    if version.size > CHUNK_SIZE {
        return Ok(None);
    }
    let mut bytes = vec![0u8; version.size as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(Error::local(path))?;
    let states = ft_protocol::put::states_of(&bytes).first().copied();
    let sha256 = match states {
        Some((_, end)) => end,
        None => ChainHasher::new().finalize(),
    };
    Ok(Some(Whole {
        version,
        states,
        sha256,
        bytes,
    }))
}

/// Chunk `index` of `file`: its bytes in pieces of at most
/// [`MAX_PUT_DATA`], one `Data` request each.
fn read_chunk(file: &File, size: u64, index: u64) -> std::io::Result<Vec<Bytes>> {
    let len = chunk_len(size, index) as usize;
    // Read into the new buffer's spare room, not zeroed first:
    // `with_capacity` gives exactly the room asked for.
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = index * CHUNK_SIZE + buf.len() as u64;
        if rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(pieces(Bytes::from(buf)))
}

/// `bytes` cut into `Data` payloads of at most [`MAX_PUT_DATA`].
pub(crate) fn pieces(bytes: Bytes) -> Vec<Bytes> {
    let len = bytes.len();
    (0..len)
        .step_by(MAX_PUT_DATA)
        .map(|at| bytes.slice(at..(at + MAX_PUT_DATA).min(len)))
        .collect()
}

/// The `Put` for `remote` at `version`.
pub(crate) fn put_request(remote: &str, version: &Version, overwrite: bool) -> Request {
    Request::Put {
        path: remote.to_owned(),
        size: version.size,
        version: version.tag,
        mtime_secs: version.mtime.0,
        mtime_nanos: version.mtime.1,
        overwrite,
    }
}

/// One version of one file being sent: what every connection of it needs.
struct Job {
    server: Arc<Server>,
    local: PathBuf,
    version: Arc<Version>,
    file: Arc<File>,
    table: Arc<Table>,
    put: Request,
}

/// What the chunks of a round share across its connections.
struct Round {
    queue: Mutex<VecDeque<u64>>,
    /// Chunk bytes stored by the server in this round.
    stored: AtomicU64,
    /// Chunk bytes written to the connections.
    sent: AtomicU64,
    /// Chunks that failed their check once, to tell a second time.
    mismatched: Mutex<Vec<u64>>,
    /// Connections wanted now; a worker whose number is past it stops.
    wanted: AtomicUsize,
    failure: Mutex<Option<Failure>>,
}

impl Round {
    fn claim(&self) -> Option<u64> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn give_back(&self, chunks: impl IntoIterator<Item = u64>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in chunks {
            queue.push_front(chunk);
        }
    }

    fn left(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn fail(&self, failure: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        // A final failure wins over one worth a retry.
        if slot.is_none() || matches!(failure, Failure::Fatal(_)) {
            *slot = Some(failure);
        }
    }
}

/// Uploads `item` to `server`, retrying as `options` allow; `link` is the
/// connection to use first.
pub(crate) async fn send(
    server: &Arc<Server>,
    link: &mut Link<'_>,
    item: &Item,
    options: &Options,
    tracker: &mut Tracker,
) -> Result<Sent, Error> {
    let mut restarts = 0;
    // Every file byte sent, for whichever version of the file.
    let mut bytes_sent = 0;
    let mut changed = || {
        restarts += 1;
        match restarts > MAX_RESTARTS {
            true => Err(Error::Changing {
                path: item.local.clone(),
            }),
            false => Ok(()),
        }
    };
    'version: loop {
        let file = File::open(&item.local).map_err(Error::local(&item.local))?;
        let version = Version::of(&file.metadata().map_err(Error::local(&item.local))?);
        let file = Arc::new(file);
        let table = Table::start(item.local.clone(), Arc::clone(&file), &version);
        let job = Job {
            server: Arc::clone(server),
            local: item.local.clone(),
            put: put_request(&item.remote, &version, options.overwrite),
            version: Arc::new(version),
            table,
            file,
        };
        let mut retries = Retries::new(options.retries);
        let mut resumed_from = None;
        let mut most = 1;
        let mut mismatched: Vec<u64> = Vec::new();
        loop {
            let (outcome, held, sent, used) =
                round(&job, link, options, tracker, &mut mismatched).await;
            bytes_sent += sent;
            most = most.max(used);
            if resumed_from.is_none() {
                resumed_from = held;
            }
            let failure = match outcome {
                Ok((sha256, up_to_date)) => {
                    return Ok(Sent {
                        size: job.version.size,
                        sha256,
                        up_to_date,
                        resumed_from: resumed_from.unwrap_or(0),
                        bytes_sent,
                        connections: most,
                    })
                }
                Err(failure) => failure,
            };
            link.reset();
            match failure {
                Failure::Fatal(err) => return Err(err),
                Failure::Changed => {
                    changed()?;
                    continue 'version;
                }
                Failure::Mismatch(offset) => {
                    return Err(Error::Sent {
                        path: item.local.clone(),
                        offset,
                    })
                }
                Failure::Retry(err) => {
                    if sent > 0 {
                        retries.progressed();
                    }
                    retries.failed(err).await?;
                }
            }
        }
    }
}

/// One round: `Put`, the chunks the server lacks over as many connections
/// as help, `Commit`. How it ended, the bytes the server held at its start,
/// the chunk bytes sent, and the most connections it used.
async fn round(
    job: &Job,
    link: &mut Link<'_>,
    options: &Options,
    tracker: &mut Tracker,
    mismatched: &mut Vec<u64>,
) -> (Result<(Digest, bool), Failure>, Option<u64>, u64, usize) {
    let server = &job.server;
    let version = &job.version;
    let asked = Instant::now();
    let held = match link.ask(&job.put).await {
        Ok(Response::Held { chunks }) => chunks,
        Ok(Response::Error(err)) if err.code == ErrorCode::AlreadyExists => {
            // Perhaps this very file, stored by an earlier run.
            let there = already_there(job, link, err)
                .await
                .map(|sha256| (sha256, true));
            let held = there.is_ok().then_some(version.size);
            return (there, held, 0, 1);
        }
        Ok(Response::Error(err)) => return (Err(remote(server, err)), None, 0, 1),
        Ok(_) => return (Err(link_broken(link, server)), None, 0, 1),
        Err(failure) => return (Err(failure), None, 0, 1),
    };
    let rtt = asked.elapsed();
    let count = chunks(version.size);
    let mut have = vec![false; count as usize];
    // Runs come in order; any a server sends out of order or overlapping
    // costs a resend, never more than one pass over the chunks.
    let mut covered = 0;
    for (first, end) in held {
        for index in first.max(covered)..end.min(count) {
            have[index as usize] = true;
        }
        covered = covered.max(end.min(count));
    }
    let held_bytes: u64 = (0..count)
        .filter(|&index| have[index as usize])
        .map(|index| chunk_len(version.size, index))
        .sum();
    tracker.start(version.size, held_bytes);
    let missing: VecDeque<u64> = (0..count).filter(|&i| !have[i as usize]).collect();
    let shared = Arc::new(Round {
        queue: Mutex::new(missing),
        stored: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        mismatched: Mutex::new(std::mem::take(mismatched)),
        wanted: AtomicUsize::new(1),
        failure: Mutex::new(None),
    });
    let most = run_workers(job, link, options, &shared, tracker, held_bytes, rtt).await;
    *mismatched = std::mem::take(&mut *shared.mismatched.lock().unwrap_or_else(|e| e.into_inner()));
    let sent = shared.sent.load(Ordering::Relaxed);
    let failure = shared
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(failure) = failure {
        return (Err(failure), Some(held_bytes), sent, most);
    }
    if shared.left() > 0 {
        // The connections that had them were lost after the first ended.
        let err = Error::Server {
            server: server.label.clone(),
            source: ServerError::Lost,
        };
        return (Err(Failure::Retry(err)), Some(held_bytes), sent, most);
    }
    let sha256 = match job.table.sha256().await {
        Ok(sha256) => sha256,
        Err(failure) => {
            return (
                Err(hash_failure(&job.local, failure)),
                Some(held_bytes),
                sent,
                most,
            )
        }
    };
    let outcome = match link.ask(&Request::Commit { sha256 }).await {
        Ok(Response::Meta(meta)) if meta.sha256 == Some(sha256) && meta.size == version.size => {
            Ok((sha256, false))
        }
        Ok(Response::Meta(_)) => Err(link_broken(link, server)),
        Ok(Response::Error(err)) if err.code == ErrorCode::Mismatch => {
            // The chain of states broke: only a file read as two versions
            // does that; the server has dropped what it held.
            Err(Failure::Changed)
        }
        Ok(Response::Error(err)) => Err(remote(server, err)),
        Ok(_) => Err(link_broken(link, server)),
        Err(failure) => Err(failure),
    };
    (outcome, Some(held_bytes), sent, most)
}

/// Whether the file at the upload's name is this very file (its size and
/// SHA-256, which the server computes if need be): its digest if so, the
/// server's refusal `exists` if not.
async fn already_there(
    job: &Job,
    link: &mut Link<'_>,
    exists: ft_protocol::RemoteError,
) -> Result<Digest, Failure> {
    let Request::Put { path, .. } = &job.put else {
        return Err(remote(&job.server, exists));
    };
    let sha256 = job
        .table
        .sha256()
        .await
        .map_err(|failure| hash_failure(&job.local, failure))?;
    match link.digest(path).await {
        Ok(meta) if meta.size == job.version.size && meta.sha256 == Some(sha256) => Ok(sha256),
        Ok(_) | Err(Failure::Fatal(_)) => Err(remote(&job.server, exists)),
        Err(failure) => Err(failure),
    }
}

fn link_broken(link: &mut Link<'_>, server: &Server) -> Failure {
    link.reset();
    broken(server, ServerError::UploadReply)
}

/// Runs the chunk workers of a round: the first on `link`, more on their
/// own connections while adding them helps. The most it ran at once.
async fn run_workers(
    job: &Job,
    link: &mut Link<'_>,
    options: &Options,
    round: &Arc<Round>,
    tracker: &mut Tracker,
    held_bytes: u64,
    rtt: Duration,
) -> usize {
    let size = job.version.size;
    let first = work(job, link, 0, round);
    tokio::pin!(first);
    let mut extra = tokio::task::JoinSet::new();
    let mut adapt = Adapt::new(rtt, Instant::now());
    let mut running = 1;
    let mut most = 1;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut first_done = false;
    loop {
        tokio::select! {
            () = &mut first, if !first_done => first_done = true,
            Some(_) = extra.join_next(), if !extra.is_empty() => running -= 1,
            _ = tick.tick() => {
                let stored = round.stored.load(Ordering::Relaxed);
                tracker.set(held_bytes + stored);
                let left = size.saturating_sub(held_bytes + stored);
                let sent = round.sent.load(Ordering::Relaxed);
                let wanted = adapt.sample(Instant::now(), sent, left, |more| {
                    more.min(options.connections.saturating_sub(running))
                });
                round.wanted.store(wanted, Ordering::Relaxed);
                while running < wanted && round.left() > 0 && !first_done {
                    let extra_job = Job {
                        server: Arc::clone(&job.server),
                        local: job.local.clone(),
                        version: Arc::clone(&job.version),
                        file: Arc::clone(&job.file),
                        table: Arc::clone(&job.table),
                        put: job.put.clone(),
                    };
                    let (round, number) = (Arc::clone(round), running);
                    extra.spawn(async move {
                        let mut link = Link::new(&extra_job.server);
                        work(&extra_job, &mut link, number, &round).await;
                    });
                    running += 1;
                    most = most.max(running);
                }
            }
        }
        if first_done && extra.is_empty() {
            break;
        }
    }
    tracker.set(held_bytes + round.stored.load(Ordering::Relaxed));
    most
}

/// One connection's share of a round: numbered `number` (0 is the first,
/// on the round's own link, which opened the upload); any other sends the
/// `Put` first. It sends chunks from the queue, `DEPTH` ahead of their
/// answers, until the queue is empty or it is no longer wanted.
async fn work(job: &Job, link: &mut Link<'_>, number: usize, round: &Round) {
    let server = &job.server;
    // A lost added connection costs its chunks only; the first one's loss
    // ends the round.
    let lost = |failure: Failure| {
        if number == 0 || matches!(failure, Failure::Fatal(_)) {
            round.fail(failure);
        }
    };
    if number > 0 {
        match link.ask(&job.put).await {
            Ok(Response::Held { .. }) => {}
            Ok(Response::Error(err)) => return round.fail(remote(server, err)),
            Ok(_) => return round.fail(link_broken(link, server)),
            Err(failure) => return lost(failure),
        }
    }
    let mut inflight: VecDeque<u64> = VecDeque::new();
    loop {
        while inflight.len() < DEPTH && number < round.wanted.load(Ordering::Relaxed).max(1) {
            let Some(index) = round.claim() else {
                break;
            };
            let (start, end) = match job.table.states(index).await {
                Ok(states) => states,
                Err(failure) => {
                    round.give_back(inflight.into_iter().chain([index]));
                    return round.fail(hash_failure(&job.local, failure));
                }
            };
            let (file, size) = (Arc::clone(&job.file), job.version.size);
            let read = tokio::task::spawn_blocking(move || read_chunk(&file, size, index));
            let chunk = Request::Chunk { index, start, end };
            let pieces = match read.await {
                Ok(Ok(read)) => read,
                Ok(Err(source)) => {
                    round.give_back(inflight.into_iter().chain([index]));
                    return round.fail(Failure::Fatal(Error::Local {
                        path: job.local.clone(),
                        source,
                    }));
                }
                Err(_) => {
                    round.give_back(inflight.into_iter().chain([index]));
                    return round.fail(Failure::Fatal(Error::Worker(
                        crate::error::WorkerError::Hasher,
                    )));
                }
            };
            if let Err(failure) = link.send_chunk(&chunk, &pieces).await {
                round.give_back(inflight.into_iter().chain([index]));
                return lost(failure);
            }
            round
                .sent
                .fetch_add(chunk_len(job.version.size, index), Ordering::Relaxed);
            inflight.push_back(index);
        }
        let Some(&index) = inflight.front() else {
            return;
        };
        match link.read().await {
            Ok(Response::Stored { index: got }) if got == index => {
                inflight.pop_front();
                round
                    .stored
                    .fetch_add(chunk_len(job.version.size, index), Ordering::Relaxed);
            }
            Ok(Response::Error(err)) if err.code == ErrorCode::Mismatch => {
                inflight.pop_front();
                if !unchanged(&job.local, &job.version) {
                    round.give_back(inflight);
                    return round.fail(Failure::Changed);
                }
                let mut twice = round.mismatched.lock().unwrap_or_else(|e| e.into_inner());
                if twice.contains(&index) {
                    drop(twice);
                    round.give_back(inflight);
                    return round.fail(Failure::Mismatch(index * CHUNK_SIZE));
                }
                twice.push(index);
                drop(twice);
                round.give_back([index]);
            }
            Ok(Response::Error(err)) => {
                round.give_back(inflight);
                return round.fail(remote(server, err));
            }
            Ok(_) => {
                round.give_back(inflight);
                return round.fail(link_broken(link, server));
            }
            Err(failure) => {
                round.give_back(inflight);
                return lost(failure);
            }
        }
    }
}
