//! The engine under the verification: hashing threads fed chunks by a
//! [`Feeder`] (bytes as they arrive, or ranges of a file each thread reads
//! itself), and a tally that accepts their findings in file order only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};

use bytes::Bytes;
use ft_protocol::{ChainHasher, Digest, MAX_DATA};

/// Frames queued for hashing, across all hashing threads: up to this many
/// jobs (a MiB of data each, at most) in flight between the feeder and the
/// hashers (the frames are shared, not copied).
const HASH_AHEAD: usize = 8;

/// Most hashing threads per check.
const MAX_HASHERS: usize = 4;

/// Threads to hash with: one per core, up to [`MAX_HASHERS`]. Asked of
/// the system once: the answer reads cgroup files, which a check of
/// thousands of small files would otherwise pay for each time.
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_HASHERS)
    })
}

/// Verified progress: the first `offset` bytes hash to `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Bytes verified, a multiple of the chunk size (or the whole file).
    pub offset: u64,
    /// The SHA-256 chaining state after them.
    pub state: Digest,
}

impl Verified {
    /// Nothing verified yet.
    pub fn start() -> Self {
        Self {
            offset: 0,
            state: ChainHasher::new().state().unwrap_or_default(),
        }
    }
}

/// Why a check stopped short of the end.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The chunk starting at `offset` did not hash to the claimed state.
    #[error("the chunk at byte {offset} does not match")]
    Mismatch {
        /// Where the chunk starts.
        offset: u64,
    },
    /// The check could not be carried out.
    #[error(transparent)]
    Failed(#[from] Unchecked),
}

/// A check that could not be carried out (a mismatch is an answer, not this).
#[derive(Debug, thiserror::Error)]
pub enum Unchecked {
    /// Reading the file being checked failed.
    #[error("cannot read the file being checked")]
    Read(#[source] io::Error),
    /// A hashing thread panicked.
    #[error("a hashing thread panicked")]
    Panicked,
}

/// How a check ended.
pub struct Checked {
    /// How far the accepted chunks reach.
    pub verified: Verified,
    /// The digest of the whole file, if its end was reached and matched;
    /// why not, if a chunk failed; `None` if the feeder stopped first.
    pub outcome: Option<Result<Digest, Stop>>,
}

/// What the feeder tells a hashing thread about one chunk, in file order.
enum Job<'f> {
    /// A chunk begins at `offset`, with this chaining state before it.
    Start { offset: u64, state: Digest },
    /// Its next bytes.
    Data(Bytes),
    /// A whole chunk on disk: `len` bytes of `file` at `offset`, hashed
    /// from `state` to `until`, read by the hashing thread itself. One job,
    /// so a thread's queue holds several chunks ahead without holding their
    /// bytes.
    Chunk {
        file: &'f File,
        offset: u64,
        len: u64,
        state: Digest,
        until: Digest,
    },
    /// The chunk ends on this checkpoint.
    Point(Digest),
    /// The chunk ends the file, with this digest.
    End(Digest),
}

/// A hashing thread's finding for the chunk that starts at `start`.
struct Finding {
    start: u64,
    found: Found,
}

enum Found {
    /// The chunk reached the checkpoint: everything up to here is verified,
    /// provided the chunk's start was.
    Point(Verified),
    /// The chunk reached the digest of the whole file.
    End(Digest),
    Mismatch,
    Read(io::Error),
}

/// The feeder's side of a check: deals chunks to the hashing threads in
/// turn, and hears what they found.
pub struct Feeder<'f> {
    queues: Vec<SyncSender<Job<'f>>>,
    /// The thread hashing the current chunk, if one is open.
    open: Option<usize>,
    next: usize,
    /// The claimed state at `pos`, where the next chunk starts.
    state: Digest,
    pos: u64,
    findings: Receiver<Finding>,
    tally: Tally,
}

/// The hashing thread a job was for has stopped (it found a failure):
/// feed no more, the findings say why.
#[derive(Debug)]
pub struct HashersGone;

impl<'f> Feeder<'f> {
    /// The next bytes of the current chunk.
    pub fn data(&mut self, data: Bytes) -> Result<(), HashersGone> {
        let len = data.len() as u64;
        self.send(Job::Data(data), false)?;
        self.pos += len;
        Ok(())
    }

    /// A whole chunk of `len` bytes at the current position of `file`,
    /// which must end on the server's checkpoint `until`; the next one
    /// starts from it. The hashing thread reads it itself.
    pub(super) fn chunk(
        &mut self,
        file: &'f File,
        len: u64,
        until: Digest,
    ) -> Result<(), HashersGone> {
        let job = Job::Chunk {
            file,
            offset: self.pos,
            len,
            state: self.state,
            until,
        };
        // To whichever thread has room first, so that a slow one does not
        // hold the others up; to the next in turn when none has.
        let threads = self.queues.len();
        let mut pending = Some(job);
        for queue in self.queues.iter().cycle().skip(self.next).take(threads) {
            let Some(job) = pending.take() else { break };
            match queue.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(back)) => pending = Some(back),
                Err(TrySendError::Disconnected(_)) => return Err(HashersGone),
            }
        }
        if let Some(job) = pending {
            self.queue(self.next, job)?;
        }
        self.next = (self.next + 1) % threads;
        self.pos += len;
        self.state = until;
        Ok(())
    }

    /// The current chunk ends on the server's checkpoint `state`; the next
    /// one starts from it.
    pub fn point(&mut self, state: Digest) -> Result<(), HashersGone> {
        self.send(Job::Point(state), true)?;
        self.state = state;
        Ok(())
    }

    /// The current chunk ends the file, whose digest the server gave.
    pub fn end(&mut self, sha256: Digest) -> Result<(), HashersGone> {
        self.send(Job::End(sha256), true)
    }

    /// Whether a chunk has already failed (so feeding more is wasted).
    pub fn failed(&mut self) -> bool {
        for finding in self.findings.try_iter() {
            self.tally.add(finding);
        }
        self.tally.failed()
    }

    fn send(&mut self, job: Job<'f>, closes: bool) -> Result<(), HashersGone> {
        let index = match self.open {
            Some(index) => index,
            None => {
                let index = self.next;
                self.next = (index + 1) % self.queues.len();
                let start = Job::Start {
                    offset: self.pos,
                    state: self.state,
                };
                self.queue(index, start)?;
                self.open = Some(index);
                index
            }
        };
        if closes {
            self.open = None;
        }
        self.queue(index, job)
    }

    fn queue(&self, index: usize, job: Job<'f>) -> Result<(), HashersGone> {
        let queue = self.queues.get(index).ok_or(HashersGone)?;
        queue.send(job).map_err(|_| HashersGone)
    }
}

/// Runs a check from `start` on `threads` hashing threads (at least one):
/// `feed` deals the chunks through the [`Feeder`], then the threads finish
/// what they were given. Returns what `feed` returned and how far the
/// chunks check out.
pub fn check<'f, T>(
    start: Verified,
    threads: usize,
    checked: &(dyn Fn(u64) + Sync),
    feed: impl FnOnce(&mut Feeder<'f>) -> T,
) -> (T, Checked) {
    let threads = threads.max(1);
    let (found, findings) = mpsc::channel();
    std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (queue, jobs) = mpsc::sync_channel((HASH_AHEAD / threads).max(1));
            let found = found.clone();
            handles.push(scope.spawn(move || hash_chunks(&jobs, &found, checked)));
            queues.push(queue);
        }
        drop(found);
        let mut feeder = Feeder {
            queues,
            open: None,
            next: 0,
            state: start.state,
            pos: start.offset,
            findings,
            tally: Tally::new(start),
        };
        let fed = feed(&mut feeder);
        let Feeder {
            queues,
            findings,
            mut tally,
            ..
        } = feeder;
        drop(queues);
        let mut panicked = false;
        for handle in handles {
            panicked |= handle.join().is_err();
        }
        for finding in findings.try_iter() {
            tally.add(finding);
        }
        if panicked && tally.settled.is_none() {
            tally.settled = Some(Err(Unchecked::Panicked.into()));
        }
        (fed, tally.finish())
    })
}

/// One hashing thread: hashes each chunk it is given from its claimed start
/// and reports whether it reached the claimed end. Stops at a failure.
fn hash_chunks(jobs: &Receiver<Job<'_>>, findings: &Sender<Finding>, checked: &dyn Fn(u64)) {
    let mut chunk: Option<(u64, ChainHasher)> = None;
    let mut buf = Vec::new();
    while let Ok(job) = jobs.recv() {
        let end = match job {
            Job::Start { offset, state } => {
                chunk = ChainHasher::resume(&state, offset).map(|hasher| (offset, hasher));
                continue;
            }
            Job::Data(data) => {
                if let Some((_, hasher)) = &mut chunk {
                    hasher.update(&data);
                }
                continue;
            }
            Job::Chunk {
                file,
                offset,
                len,
                state,
                until,
            } => {
                let found = match ChainHasher::resume(&state, offset) {
                    Some(mut hasher) => {
                        match read_into(&mut hasher, file, offset, len, &mut buf, checked) {
                            Ok(()) => Until::Point(until).reached(hasher),
                            Err(spoiled) => spoiled,
                        }
                    }
                    None => Found::Mismatch,
                };
                let stop = !matches!(found, Found::Point(_));
                let finding = Finding {
                    start: offset,
                    found,
                };
                if findings.send(finding).is_err() || stop {
                    return;
                }
                continue;
            }
            Job::Point(state) => Until::Point(state),
            Job::End(sha256) => Until::End(sha256),
        };
        // A chunk end without a start cannot be checked: the feeder never
        // sends one, so treat it as the mismatch it would hide.
        let (start, found) = match chunk.take() {
            Some((start, hasher)) => (start, end.reached(hasher)),
            None => (u64::MAX, Found::Mismatch),
        };
        let stop = !matches!(found, Found::Point(_) | Found::End(_));
        if findings.send(Finding { start, found }).is_err() || stop {
            return;
        }
    }
}

/// Where a chunk must end.
enum Until {
    Point(Digest),
    End(Digest),
}

impl Until {
    fn reached(self, hasher: ChainHasher) -> Found {
        match self {
            Until::Point(state) => match hasher.state() {
                Some(reached) if reached == state => Found::Point(Verified {
                    offset: hasher.consumed(),
                    state,
                }),
                _ => Found::Mismatch,
            },
            Until::End(sha256) if hasher.finalize() == sha256 => Found::End(sha256),
            Until::End(_) => Found::Mismatch,
        }
    }
}

/// Reads `len` bytes of `file` at `offset` into `hasher`, a piece at a
/// time. A file that ends early does not have the chunk: a mismatch.
fn read_into(
    hasher: &mut ChainHasher,
    file: &File,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
    checked: &dyn Fn(u64),
) -> Result<(), Found> {
    let mut at = offset;
    while at < offset + len {
        let step = (offset + len - at).min(MAX_DATA as u64) as usize;
        buf.resize(step, 0);
        match file.read_exact_at(buf, at) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Err(Found::Mismatch),
            Err(err) => return Err(Found::Read(err)),
        }
        hasher.update(buf);
        checked(step as u64);
        at += step as u64;
    }
    Ok(())
}

/// The hashing threads' findings, put back in file order.
struct Tally {
    verified: Verified,
    /// Findings for chunks after the first unsettled one.
    waiting: BTreeMap<u64, Found>,
    /// The end reached in file order: the whole file's digest, or the first
    /// failure.
    settled: Option<Result<Digest, Stop>>,
}

impl Tally {
    fn new(start: Verified) -> Self {
        Self {
            verified: start,
            waiting: BTreeMap::new(),
            settled: None,
        }
    }

    fn add(&mut self, finding: Finding) {
        self.waiting.insert(finding.start, finding.found);
        while self.settled.is_none() {
            let Some(found) = self.waiting.remove(&self.verified.offset) else {
                break;
            };
            self.settled = match found {
                Found::Point(verified) => {
                    self.verified = verified;
                    None
                }
                Found::End(sha256) => Some(Ok(sha256)),
                Found::Mismatch => Some(Err(Stop::Mismatch {
                    offset: self.verified.offset,
                })),
                Found::Read(err) => Some(Err(Unchecked::Read(err).into())),
            };
        }
    }

    /// Whether a chunk failed anywhere, even one after some still being
    /// hashed: enough to stop feeding. The chunks before it are still
    /// accepted as their findings come.
    fn failed(&self) -> bool {
        matches!(self.settled, Some(Err(_)))
            || self
                .waiting
                .values()
                .any(|found| matches!(found, Found::Mismatch | Found::Read(_)))
    }

    /// The end, once every finding is in: what was reached in file order,
    /// or, if the chunks stopped short of a failure further on, that
    /// failure (its offset is only a hint then).
    fn finish(mut self) -> Checked {
        if self.settled.is_none() {
            let failed = self
                .waiting
                .iter()
                .find(|(_, found)| matches!(found, Found::Mismatch | Found::Read(_)))
                .map(|(start, _)| *start);
            if let Some(start) = failed {
                self.settled = Some(Err(match self.waiting.remove(&start) {
                    Some(Found::Read(err)) => Unchecked::Read(err).into(),
                    _ => Stop::Mismatch {
                        offset: self.verified.offset,
                    },
                }));
            }
        }
        Checked {
            verified: self.verified,
            outcome: self.settled,
        }
    }
}

/// What tests of the verification need: data, and what an honest server
/// claims of it.
#[cfg(test)]
pub(crate) mod testing {
    use ft_protocol::{ChainHasher, Digest, CHUNK_SIZE};

    /// `len` bytes of a pattern.
    pub fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    /// The checkpoint states an honest server gives for `data`.
    pub fn states(data: &[u8]) -> Vec<Digest> {
        let mut hasher = ChainHasher::new();
        data.chunks_exact(CHUNK_SIZE as usize)
            .filter_map(|chunk| {
                hasher.update(chunk);
                hasher.state()
            })
            .collect()
    }

    /// The SHA-256 of `data`.
    pub fn sha256(data: &[u8]) -> Digest {
        let mut hasher = ChainHasher::new();
        hasher.update(data);
        hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{data, sha256, states};
    use super::*;
    use ft_protocol::CHUNK_SIZE;

    /// Feeds `data` as a download would: 1 MiB frames, each chunk's claimed
    /// end from `claims`, then the claimed digest.
    fn stream(data: &[u8], claims: &[Digest], end: Digest, threads: usize) -> Checked {
        let ((), checked) = check(Verified::start(), threads, &|_| {}, |feeder| {
            let mut pos = 0;
            for piece in data.chunks(MAX_DATA) {
                pos += piece.len();
                if feeder.data(Bytes::copy_from_slice(piece)).is_err() {
                    return;
                }
                if (pos as u64).is_multiple_of(CHUNK_SIZE) {
                    let k = pos / CHUNK_SIZE as usize - 1;
                    if feeder.point(claims[k]).is_err() {
                        return;
                    }
                }
            }
            let _ = feeder.end(end);
        });
        checked
    }

    #[test]
    fn a_stream_checks_out_on_any_number_of_threads() {
        let chunk = CHUNK_SIZE as usize;
        for len in [0, 65, chunk, 2 * chunk + 1] {
            let data = data(len);
            for threads in 1..=3 {
                let checked = stream(&data, &states(&data), sha256(&data), threads);
                assert!(
                    matches!(checked.outcome, Some(Ok(d)) if d == sha256(&data)),
                    "{len} bytes, {threads} threads"
                );
                assert_eq!(checked.verified.offset, (len / chunk * chunk) as u64);
            }
        }
    }

    #[test]
    fn a_false_state_or_digest_is_caught_and_nothing_after_it_accepted() {
        let data = data(4 * CHUNK_SIZE as usize);
        let mut claims = states(&data);
        claims[1][0] ^= 1;
        for threads in 1..=3 {
            let checked = stream(&data, &claims, sha256(&data), threads);
            assert!(
                matches!(checked.outcome, Some(Err(Stop::Mismatch { offset })) if offset <= CHUNK_SIZE),
                "{threads} threads"
            );
            assert!(checked.verified.offset <= CHUNK_SIZE, "{threads} threads");
        }
        let checked = stream(&data, &states(&data), [0; 32], 2);
        assert!(matches!(checked.outcome, Some(Err(Stop::Mismatch { .. }))));
        assert_eq!(checked.verified.offset, 4 * CHUNK_SIZE);
    }
}
