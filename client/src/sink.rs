//! Where received bytes go: written to the partial, hashed, and checked against
//! each checkpoint as it arrives. Runs on a blocking thread, beside the socket
//! reads, so hashing and disk writes never stall the network.

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

/// Frames handed to the verifier ahead of its hashing: up to this many
/// MiB in flight between the two threads (the frames are shared, not copied).
const HASH_AHEAD: usize = 8;

/// Writes one transfer into the partial, while a second thread hashes what
/// arrives and checks it against each checkpoint: writing and hashing, the
/// two costs of a byte, run side by side.
pub struct Sink {
    file: File,
    verifier: Verifier,
    pos: u64,
    /// Where the last checkpoint (or the start) was.
    marked: u64,
    size: u64,
    mtime: Option<SystemTime>,
    received: u64,
    tracker: Tracker,
}

/// What the writer tells the verifier, in stream order.
enum Check {
    Data(bytes::Bytes),
    Point(Digest),
    End(Digest),
}

/// The hashing side: a running hash and what it has verified so far.
struct Verifier {
    hasher: ChainHasher,
    verified: Verified,
    pos: u64,
}

impl Verifier {
    /// Hashes and checks until the end (`Ok(Some(digest))`), a mismatch, or
    /// the writer hanging up (`Ok(None)`).
    fn run(&mut self, rx: &std::sync::mpsc::Receiver<Check>) -> Result<Option<Digest>, SinkError> {
        while let Ok(check) = rx.recv() {
            match check {
                Check::Data(data) => {
                    self.hasher.update(&data);
                    self.pos += data.len() as u64;
                }
                Check::Point(state) => {
                    if self.hasher.state() != Some(state) {
                        return Err(self.mismatch());
                    }
                    self.verified = Verified {
                        offset: self.pos,
                        state,
                    };
                }
                Check::End(sha256) => {
                    if self.hasher.clone().finalize() != sha256 {
                        return Err(self.mismatch());
                    }
                    return Ok(Some(sha256));
                }
            }
        }
        Ok(None)
    }

    fn mismatch(&self) -> SinkError {
        SinkError::Mismatch {
            offset: self.verified.offset,
        }
    }
}

impl Sink {
    /// A sink continuing from `verified` in `file`, which is positioned
    /// there, for the file version `meta` describes.
    pub fn new(file: File, verified: Verified, meta: &FileMeta, tracker: Tracker) -> Option<Self> {
        Some(Self {
            file,
            verifier: Verifier {
                hasher: ChainHasher::resume(&verified.state, verified.offset)?,
                verified,
                pos: verified.offset,
            },
            pos: verified.offset,
            marked: verified.offset,
            size: meta.size,
            mtime: crate::download::mtime(meta),
            received: 0,
            tracker,
        })
    }

    /// Consumes responses until the transfer ends, fails, or the channel closes.
    pub fn run(mut self, mut rx: mpsc::Receiver<Response>) -> SinkReport {
        let mut verifier = std::mem::replace(
            &mut self.verifier,
            Verifier {
                hasher: ChainHasher::new(),
                verified: Verified::start(),
                pos: 0,
            },
        );
        let (checks, to_check) = std::sync::mpsc::sync_channel(HASH_AHEAD);
        let (written, verdict) = std::thread::scope(|scope| {
            let hashing = scope.spawn(move || {
                let verdict = verifier.run(&to_check);
                (verifier, verdict)
            });
            let written = loop {
                let Some(response) = rx.blocking_recv() else {
                    break Err(SinkError::Incomplete);
                };
                match self.take(response, &checks) {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(err) => break Err(err),
                }
            };
            drop(checks);
            let verdict = match hashing.join() {
                Ok((done, verdict)) => {
                    self.verifier = done;
                    verdict
                }
                Err(_) => Err(SinkError::Local(io::Error::other(
                    "the hashing thread failed",
                ))),
            };
            (written, verdict)
        });
        // A mismatch explains whatever stopped the writer.
        let result = match (written, verdict) {
            (_, Err(err)) => Err(err),
            (Err(err), Ok(_)) => Err(err),
            (Ok(()), Ok(Some(sha256))) => self.settle().map(|()| sha256),
            (Ok(()), Ok(None)) => Err(SinkError::Incomplete),
        };
        SinkReport {
            verified: self.verifier.verified,
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
    fn take(
        &mut self,
        response: Response,
        checks: &std::sync::mpsc::SyncSender<Check>,
    ) -> Result<bool, SinkError> {
        // The verifier stopped (a mismatch): its verdict says why.
        let hung_up = |_| SinkError::Incomplete;
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
                checks.send(Check::Data(data.clone())).map_err(hung_up)?;
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
                checks.send(Check::Point(state)).map_err(hung_up)?;
                Ok(false)
            }
            Response::End { sha256 } => {
                if self.pos != self.size {
                    return Err(SinkError::Protocol(format!(
                        "transfer ended at byte {} of {}",
                        self.pos, self.size
                    )));
                }
                checks.send(Check::End(sha256)).map_err(hung_up)?;
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
        let sink = Sink::new(file, Verified::start(), &meta, tracker).expect("aligned");
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
    fn a_flipped_byte_is_caught_at_its_chunk() {
        let data = data(2 * CHUNK_SIZE as usize);
        let mut stream = honest(&data);
        // Corrupt the first frame of the second chunk (after checkpoint 1).
        let second = stream
            .iter()
            .position(|r| matches!(r, Response::Checkpoint { index: 1, .. }))
            .expect("checkpoint 1")
            + 1;
        if let Response::Data(d) = &stream[second] {
            let mut bad = d.to_vec();
            bad[0] ^= 0x80;
            stream[second] = Response::Data(Bytes::from(bad));
        }
        let (report, _) = feed(data.len(), stream);
        assert!(
            matches!(report.result, Err(SinkError::Mismatch { offset }) if offset == CHUNK_SIZE)
        );
        assert_eq!(
            report.verified.offset, CHUNK_SIZE,
            "the first chunk stays verified"
        );
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
