//! Where received bytes go: written to the partial, hashed, and checked against
//! each checkpoint as it arrives. Runs on a blocking thread, beside the socket
//! reads, so hashing and disk writes never stall the network.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::time::SystemTime;

use ft_protocol::{ChainHasher, Digest, FileMeta, RemoteError, Response, CHUNK_SIZE};
use tokio::sync::mpsc;

use crate::partial::Verified;
use crate::progress::Tracker;

/// Why a transfer stopped short of a verified file.
#[derive(Debug)]
pub enum SinkError {
    /// The chunk starting at this offset did not hash to the server's state.
    Mismatch {
        /// Where the chunk starts.
        offset: u64,
    },
    /// The server broke the protocol.
    Protocol(String),
    /// The server reported an error in the middle of the transfer.
    Remote(RemoteError),
    /// Writing the partial failed.
    Local(io::Error),
    /// The stream ended before the transfer did (the connection was lost).
    Incomplete,
}

/// How far a transfer got, whatever its outcome.
pub struct SinkReport {
    /// What is verified on disk now.
    pub verified: Verified,
    /// Payload bytes that arrived.
    pub received: u64,
    /// The digest of the whole file, or why there is none.
    pub result: Result<Digest, SinkError>,
    /// The file's progress, handed back.
    pub tracker: Tracker,
}

/// Frames queued for hashing, across all hashing threads: up to this many MiB
/// in flight between the writer and the hashers (the frames are shared, not
/// copied).
const HASH_AHEAD: usize = 8;

/// Most hashing threads per transfer.
const MAX_HASHERS: usize = 4;

/// Threads to hash with: one per core, up to [`MAX_HASHERS`].
pub(crate) fn hashing_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_HASHERS)
}

/// Writes one transfer into the partial while hashing threads check what
/// arrives against the checkpoints: writing and hashing, the two costs of a
/// byte, run side by side, and the hashing itself is spread over the cores.
///
/// SHA-256 is sequential, but the server's checkpoints make it parallel to
/// *check*: chunk `k` is hashed starting from checkpoint `k` as the server
/// claimed it, and must end on checkpoint `k + 1`. Chunks are accepted in
/// order only, starting from a state this client computed or verified
/// itself, so each accepted chunk's starting state has been checked by the
/// one before: the accepted bytes hash to exactly what one sequential pass
/// would give, and the last chunk must end on the server's digest.
pub struct Sink {
    file: File,
    /// Where this transfer starts, verified already.
    start: Verified,
    pos: u64,
    /// Where the last checkpoint (or the start) was.
    marked: u64,
    size: u64,
    mtime: Option<SystemTime>,
    received: u64,
    tracker: Tracker,
    /// Hashing threads for this transfer.
    hashers: usize,
}

/// What the writer tells a hashing thread about one chunk, in stream order.
enum Job {
    /// A chunk begins at `offset`, with this chaining state before it.
    Start {
        offset: u64,
        state: Digest,
    },
    Data(bytes::Bytes),
    /// The chunk ends on this checkpoint.
    Point(Digest),
    /// The chunk ends the file, with this digest.
    End(Digest),
}

/// A hashing thread's finding for the chunk that starts at `start`.
struct Outcome {
    start: u64,
    found: Found,
}

enum Found {
    /// The chunk reached the checkpoint: everything up to here is verified,
    /// provided the chunk's start was.
    Point(Verified),
    /// The chunk reached the server's digest of the whole file.
    End(Digest),
    Mismatch,
}

/// One hashing thread: hashes each chunk it is given from its claimed start
/// and reports whether it reached the claimed end. Stops at a mismatch.
fn hash_chunks(jobs: &std::sync::mpsc::Receiver<Job>, outcomes: &std::sync::mpsc::Sender<Outcome>) {
    let mut chunk: Option<(u64, ChainHasher)> = None;
    while let Ok(job) = jobs.recv() {
        let found = match job {
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
            Job::Point(state) => chunk.take().map(|(start, hasher)| {
                let found = match hasher.state() {
                    Some(reached) if reached == state => Found::Point(Verified {
                        offset: hasher.consumed(),
                        state,
                    }),
                    _ => Found::Mismatch,
                };
                (start, found)
            }),
            Job::End(sha256) => chunk.take().map(|(start, hasher)| {
                let found = if hasher.finalize() == sha256 {
                    Found::End(sha256)
                } else {
                    Found::Mismatch
                };
                (start, found)
            }),
        };
        // A chunk end without a start cannot be checked: the writer never
        // sends one, so treat it as the mismatch it would hide.
        let (start, found) = found.unwrap_or((u64::MAX, Found::Mismatch));
        let stop = matches!(found, Found::Mismatch);
        if outcomes.send(Outcome { start, found }).is_err() || stop {
            return;
        }
    }
}

/// The writer's side of the hashing threads: deals chunks out in turn.
struct Hashers {
    queues: Vec<std::sync::mpsc::SyncSender<Job>>,
    /// The thread hashing the current chunk, if one is open.
    open: Option<usize>,
    next: usize,
    /// The claimed state at `pos`, where the next chunk starts.
    state: Digest,
    pos: u64,
}

impl Hashers {
    fn send(&mut self, job: Job) -> Result<(), SinkError> {
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
        if let Job::Data(data) = &job {
            self.pos += data.len() as u64;
        }
        if let Job::Point(state) = &job {
            self.state = *state;
        }
        if matches!(job, Job::Point(_) | Job::End(_)) {
            self.open = None;
        }
        self.queue(index, job)
    }

    fn queue(&self, index: usize, job: Job) -> Result<(), SinkError> {
        // A hashing thread stopped (a mismatch): the tally says why.
        self.queues
            .get(index)
            .ok_or(SinkError::Incomplete)?
            .send(job)
            .map_err(|_| SinkError::Incomplete)
    }
}

/// The hashing threads' findings, put back in file order.
struct Tally {
    verified: Verified,
    /// Findings for chunks after the first unsettled one.
    waiting: BTreeMap<u64, Found>,
    /// The end: the whole file's digest, or the first bad chunk.
    settled: Option<Result<Digest, SinkError>>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.waiting.insert(outcome.start, outcome.found);
        while self.settled.is_none() {
            let Some(found) = self.waiting.remove(&self.verified.offset) else {
                break;
            };
            match found {
                Found::Point(verified) => self.verified = verified,
                Found::End(sha256) => self.settled = Some(Ok(sha256)),
                Found::Mismatch => {
                    self.settled = Some(Err(SinkError::Mismatch {
                        offset: self.verified.offset,
                    }))
                }
            }
        }
        // A mismatch anywhere stops the transfer, even one whose chunk
        // comes after some still being hashed: its offset is only a hint.
        if self.settled.is_none() && self.waiting.values().any(|f| matches!(f, Found::Mismatch)) {
            self.settled = Some(Err(SinkError::Mismatch {
                offset: self.verified.offset,
            }));
        }
    }

    fn mismatched(&self) -> bool {
        matches!(self.settled, Some(Err(_)))
    }
}

impl Sink {
    /// A sink continuing from `verified` in `file`, which is positioned
    /// there, for the file version `meta` describes. `None` unless
    /// `verified` ends on a 64-byte block.
    pub fn new(file: File, verified: Verified, meta: &FileMeta, tracker: Tracker) -> Option<Self> {
        ChainHasher::resume(&verified.state, verified.offset)?;
        Some(Self {
            file,
            start: verified,
            pos: verified.offset,
            marked: verified.offset,
            size: meta.size,
            mtime: crate::download::mtime(meta),
            received: 0,
            tracker,
            hashers: hashing_threads(),
        })
    }

    /// The same sink with `hashers` hashing threads (at least one) instead of
    /// one per core.
    pub fn with_hashers(mut self, hashers: usize) -> Self {
        self.hashers = hashers.max(1);
        self
    }

    /// Consumes responses until the transfer ends, fails, or the channel closes.
    pub fn run(mut self, mut rx: mpsc::Receiver<Response>) -> SinkReport {
        let threads = self.hashers;
        let (found, findings) = std::sync::mpsc::channel();
        let mut tally = Tally {
            verified: self.start,
            waiting: BTreeMap::new(),
            settled: None,
        };
        let written = std::thread::scope(|scope| {
            let mut queues = Vec::with_capacity(threads);
            let mut handles = Vec::with_capacity(threads);
            for _ in 0..threads {
                let (queue, jobs) = std::sync::mpsc::sync_channel((HASH_AHEAD / threads).max(1));
                let found = found.clone();
                handles.push(scope.spawn(move || hash_chunks(&jobs, &found)));
                queues.push(queue);
            }
            drop(found);
            let mut hashers = Hashers {
                queues,
                open: None,
                next: 0,
                state: self.start.state,
                pos: self.start.offset,
            };
            let written = loop {
                let Some(response) = rx.blocking_recv() else {
                    break Err(SinkError::Incomplete);
                };
                match self.take(response, &mut hashers) {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(err) => break Err(err),
                }
                findings.try_iter().for_each(|outcome| tally.add(outcome));
                if tally.mismatched() {
                    break Err(SinkError::Incomplete);
                }
            };
            drop(hashers);
            let mut failed = false;
            for handle in handles {
                failed |= handle.join().is_err();
            }
            findings.try_iter().for_each(|outcome| tally.add(outcome));
            if failed && tally.settled.is_none() {
                tally.settled = Some(Err(SinkError::Local(io::Error::other(
                    "a hashing thread failed",
                ))));
            }
            written
        });
        // A mismatch explains whatever stopped the writer.
        let result = match (written, tally.settled) {
            (_, Some(Err(err))) => Err(err),
            (Err(err), _) => Err(err),
            (Ok(()), Some(Ok(sha256))) => self.settle().map(|()| sha256),
            (Ok(()), None) => Err(SinkError::Incomplete),
        };
        SinkReport {
            verified: tally.verified,
            received: self.received,
            result,
            tracker: self.tracker,
        }
    }

    /// The server's mtime, then the bytes on disk, before the final name.
    fn settle(&mut self) -> Result<(), SinkError> {
        if let Some(mtime) = self.mtime {
            // The server's time is a courtesy; failing to set it loses nothing.
            let _ = self.file.set_modified(mtime);
        }
        self.file.sync_all().map_err(SinkError::Local)
    }

    /// Takes one response; `Ok(true)` at the end of the transfer. The checks
    /// here are about where things are; whether they hash right is the
    /// verifier's part.
    fn take(&mut self, response: Response, hashers: &mut Hashers) -> Result<bool, SinkError> {
        // A checkpoint must follow the data that reaches each boundary.
        let owed = self.pos.is_multiple_of(CHUNK_SIZE) && self.pos > self.marked;
        if owed && !matches!(response, Response::Checkpoint { .. } | Response::Error(_)) {
            return Err(SinkError::Protocol(format!(
                "no checkpoint at byte {}",
                self.pos
            )));
        }
        match response {
            Response::Data(data) => {
                let end = self.pos + data.len() as u64;
                if data.is_empty() {
                    return Err(SinkError::Protocol("empty data frame".into()));
                }
                if end > self.size {
                    return Err(SinkError::Protocol(format!(
                        "sent more bytes than the {} it announced",
                        self.size
                    )));
                }
                if self.pos / CHUNK_SIZE != (end - 1) / CHUNK_SIZE {
                    return Err(SinkError::Protocol(
                        "data frame crosses a checkpoint".into(),
                    ));
                }
                // Counted before the write: these bytes crossed the network
                // whether or not the disk takes them.
                self.received += data.len() as u64;
                hashers.send(Job::Data(data.clone()))?;
                self.file.write_all(&data).map_err(SinkError::Local)?;
                self.pos = end;
                self.tracker.set(end);
                Ok(false)
            }
            Response::Checkpoint { index, state } => {
                if self.pos <= self.marked || index.checked_mul(CHUNK_SIZE) != Some(self.pos) {
                    return Err(SinkError::Protocol(format!(
                        "checkpoint {index} arrived at byte {}",
                        self.pos
                    )));
                }
                self.marked = self.pos;
                hashers.send(Job::Point(state))?;
                Ok(false)
            }
            Response::End { sha256 } => {
                if self.pos != self.size {
                    return Err(SinkError::Protocol(format!(
                        "transfer ended at byte {} of {}",
                        self.pos, self.size
                    )));
                }
                hashers.send(Job::End(sha256))?;
                Ok(true)
            }
            Response::Error(err) => Err(SinkError::Remote(err)),
            other => Err(SinkError::Protocol(format!(
                "unexpected {} frame during a transfer",
                name(&other)
            ))),
        }
    }
}

fn name(response: &Response) -> &'static str {
    match response {
        Response::Error(_) => "Error",
        Response::Welcome { .. } => "Welcome",
        Response::Meta(_) => "Meta",
        Response::Checkpoints { .. } => "Checkpoints",
        Response::Data(_) => "Data",
        Response::Checkpoint { .. } => "Checkpoint",
        Response::End { .. } => "End",
        Response::Entries(_) => "Entries",
        Response::ListEnd { .. } => "ListEnd",
        Response::KeepAlive => "KeepAlive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// What an honest server sends for `data` from byte 0, in 1 MiB frames.
    fn honest(data: &[u8]) -> Vec<Response> {
        let mut hasher = ChainHasher::new();
        let mut out = Vec::new();
        let mut pos = 0usize;
        for piece in data.chunks(1 << 20) {
            hasher.update(piece);
            pos += piece.len();
            out.push(Response::Data(Bytes::copy_from_slice(piece)));
            if (pos as u64).is_multiple_of(CHUNK_SIZE) {
                out.push(Response::Checkpoint {
                    index: pos as u64 / CHUNK_SIZE,
                    state: hasher.state().unwrap_or_default(),
                });
            }
        }
        out.push(Response::End {
            sha256: hasher.finalize(),
        });
        out
    }

    fn feed(data_len: usize, responses: Vec<Response>) -> (SinkReport, Vec<u8>) {
        feed_with(data_len, responses, 2)
    }

    fn feed_with(
        data_len: usize,
        responses: Vec<Response>,
        hashers: usize,
    ) -> (SinkReport, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part");
        let file = File::create(&path).expect("create");
        let meta = FileMeta {
            size: data_len as u64,
            mtime_secs: 0,
            mtime_nanos: 0,
            sha256: None,
        };
        let tracker = crate::progress::Progress::new("t", false).tracker();
        let sink = Sink::new(file, Verified::start(), &meta, tracker)
            .expect("aligned")
            .with_hashers(hashers);
        let (tx, rx) = mpsc::channel(responses.len() + 1);
        for response in responses {
            tx.try_send(response).expect("room");
        }
        drop(tx);
        let report = sink.run(rx);
        (report, std::fs::read(&path).expect("read"))
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 241) as u8).collect()
    }

    #[test]
    fn honest_stream_is_written_and_verified() {
        let data = data(2 * CHUNK_SIZE as usize + 3);
        let (report, written) = feed(data.len(), honest(&data));
        assert!(report.result.is_ok());
        assert_eq!(written, data);
        assert_eq!(report.verified.offset, 2 * CHUNK_SIZE);
        assert_eq!(report.received, data.len() as u64);
    }

    #[test]
    fn any_number_of_hashing_threads_verifies_any_length() {
        let chunk = CHUNK_SIZE as usize;
        for len in [0, 65, chunk, 2 * chunk + 1] {
            let data = data(len);
            for hashers in 1..=3 {
                let (report, written) = feed_with(len, honest(&data), hashers);
                assert!(
                    report.result.is_ok(),
                    "{len} bytes, {hashers} threads: {:?}",
                    report.result.err()
                );
                assert_eq!(written, data, "{len} bytes, {hashers} threads");
                assert_eq!(
                    report.verified.offset,
                    (len / chunk * chunk) as u64,
                    "{len} bytes, {hashers} threads"
                );
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_at_its_chunk() {
        let data = data(4 * CHUNK_SIZE as usize);
        // Corrupt the first frame after checkpoint `after`.
        for after in 1..=3u64 {
            let mut stream = honest(&data);
            let first = stream
                .iter()
                .position(|r| matches!(r, Response::Checkpoint { index, .. } if *index == after))
                .expect("checkpoint")
                + 1;
            if let Response::Data(d) = &stream[first] {
                let mut bad = d.to_vec();
                bad[0] ^= 0x80;
                stream[first] = Response::Data(Bytes::from(bad));
            }
            for hashers in 1..=3 {
                let (report, _) = feed_with(data.len(), stream.clone(), hashers);
                let at = after * CHUNK_SIZE;
                assert!(
                    matches!(report.result, Err(SinkError::Mismatch { offset }) if offset <= at),
                    "chunk {after}, {hashers} threads: {:?}",
                    report.result.as_ref().err()
                );
                assert!(
                    report.verified.offset <= at,
                    "nothing past the bad chunk is verified"
                );
                if hashers == 1 {
                    assert_eq!(
                        report.verified.offset, at,
                        "the chunks before stay verified"
                    );
                }
            }
        }
    }

    #[test]
    fn a_wrong_checkpoint_fails_even_when_the_next_chunk_starts_from_it() {
        // The bytes are right, but checkpoint 2 is not their state: chunk 1
        // cannot end on it, and chunk 2, hashed from it, cannot end on 3.
        let data = data(4 * CHUNK_SIZE as usize);
        let mut stream = honest(&data);
        for response in &mut stream {
            if let Response::Checkpoint { index: 2, state } = response {
                state[0] ^= 1;
            }
        }
        for hashers in 1..=3 {
            let (report, _) = feed_with(data.len(), stream.clone(), hashers);
            assert!(
                matches!(report.result, Err(SinkError::Mismatch { offset }) if offset <= CHUNK_SIZE),
                "{hashers} threads: {:?}",
                report.result.as_ref().err()
            );
            assert!(report.verified.offset <= CHUNK_SIZE, "{hashers} threads");
        }
    }

    #[test]
    fn wrong_end_digest_is_a_mismatch() {
        let data = data(1000);
        let mut stream = honest(&data);
        stream.pop();
        stream.push(Response::End { sha256: [0; 32] });
        let (report, _) = feed(data.len(), stream);
        assert!(matches!(
            report.result,
            Err(SinkError::Mismatch { offset: 0 })
        ));
    }

    #[test]
    fn hostile_streams_are_protocol_errors() {
        let small = data(1000);
        let mut too_long = honest(&small);
        too_long.insert(1, Response::Data(Bytes::from_static(b"extra")));
        assert!(matches!(
            feed(small.len(), too_long).0.result,
            Err(SinkError::Protocol(_))
        ));

        let too_short = vec![Response::End { sha256: [0; 32] }];
        assert!(matches!(
            feed(small.len(), too_short).0.result,
            Err(SinkError::Protocol(_))
        ));

        let misplaced = vec![Response::Checkpoint {
            index: 1,
            state: [0; 32],
        }];
        assert!(matches!(
            feed(small.len(), misplaced).0.result,
            Err(SinkError::Protocol(_))
        ));

        // A checkpoint left out, in the middle and at the very end.
        let big = data(2 * CHUNK_SIZE as usize);
        for missing in [1, 2] {
            let skipped: Vec<Response> = honest(&big)
                .into_iter()
                .filter(|r| !matches!(r, Response::Checkpoint { index, .. } if *index == missing))
                .collect();
            assert!(
                matches!(
                    feed(big.len(), skipped).0.result,
                    Err(SinkError::Protocol(_))
                ),
                "checkpoint {missing} left out"
            );
        }

        let stray = vec![Response::Welcome { version: 1 }];
        assert!(matches!(
            feed(small.len(), stray).0.result,
            Err(SinkError::Protocol(_))
        ));

        let cut = honest(&small)[..1].to_vec();
        assert!(matches!(
            feed(small.len(), cut).0.result,
            Err(SinkError::Incomplete)
        ));
    }
}
