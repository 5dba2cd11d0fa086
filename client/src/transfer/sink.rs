//! Where a download's bytes go: each frame of the `Get` reply is checked in
//! order by the protocol's [`GetReply`], its data written to the partial
//! and handed to the verification engine, which checks each chunk against
//! its checkpoint on other threads. Runs on a blocking thread, beside the
//! socket reads, so hashing and disk writes never stall the network.

use std::fs::File;
use std::io::{self, Write};
use std::time::SystemTime;

use ft_protocol::{Digest, FileMeta, GetError, GetEvent, GetReply, RemoteError, Response};
use tokio::sync::mpsc;

use crate::progress::Tracker;
use crate::verify::{self, Feeder, Stop, Unchecked, Verified};

/// Why a transfer stopped short of a verified file.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The chunk starting at this offset did not hash to the server's state.
    #[error("the chunk at byte {offset} does not match the server's checkpoint")]
    Mismatch {
        /// Where the chunk starts.
        offset: u64,
    },
    /// The server broke the protocol.
    #[error(transparent)]
    Protocol(#[from] GetError),
    /// The server reported an error in the middle of the transfer.
    #[error(transparent)]
    Remote(RemoteError),
    /// Writing the partial failed.
    #[error("cannot write the partial")]
    Local(#[source] io::Error),
    /// A hashing thread panicked.
    #[error("a hashing thread panicked")]
    Hasher,
    /// The stream ended before the transfer did (the connection was lost).
    #[error("the transfer was cut short")]
    Incomplete,
}

/// How far a transfer got, whatever its outcome.
pub struct SinkReport {
    /// What is verified on disk now.
    pub verified: Verified,
    /// The digest of the whole file, or why there is none.
    pub result: Result<Digest, SinkError>,
}

/// Writes one transfer into the partial while the verification engine
/// checks what arrives: writing and hashing, the two costs of a byte, run
/// side by side, and the hashing itself is spread over the cores.
pub struct Sink {
    file: File,
    /// Checks where each frame sits.
    reply: GetReply,
    /// Where this transfer starts, verified already.
    start: Verified,
    mtime: Option<SystemTime>,
    received: u64,
    tracker: Tracker,
    /// Hashing threads for this transfer.
    hashers: usize,
}

impl Sink {
    /// A sink writing to `file` (positioned at `verified.offset`) the reply
    /// to a `Get` from there, whose `Meta` said `meta`. `None` unless
    /// `verified` ends on a 64-byte block within the file.
    pub fn new(file: File, verified: Verified, meta: &FileMeta, tracker: Tracker) -> Option<Self> {
        ft_protocol::ChainHasher::resume(&verified.state, verified.offset)?;
        let reply = GetReply::after_meta(verified.offset, meta).ok()?;
        Some(Self {
            file,
            reply,
            start: verified,
            mtime: meta.modified(),
            received: 0,
            tracker,
            hashers: verify::threads(),
        })
    }

    /// The same sink with `hashers` hashing threads (at least one) instead of
    /// one per core.
    pub fn with_hashers(mut self, hashers: usize) -> Self {
        self.hashers = hashers.max(1);
        self
    }

    /// Consumes frames until the transfer ends, fails, or the channel closes.
    pub fn run(mut self, mut rx: mpsc::Receiver<Response>) -> SinkReport {
        let (written, checked) = verify::check(self.start, self.hashers, &|_| {}, |feeder| loop {
            let Some(frame) = rx.blocking_recv() else {
                break Err(SinkError::Incomplete);
            };
            match self.take(frame, feeder) {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(err) => break Err(err),
            }
            if feeder.failed() {
                break Err(SinkError::Incomplete);
            }
        });
        // A failed chunk explains whatever stopped the writer.
        let result = match (written, checked.outcome) {
            (_, Some(Err(Stop::Mismatch { offset }))) => Err(SinkError::Mismatch { offset }),
            (_, Some(Err(Stop::Failed(Unchecked::Read(err))))) => Err(SinkError::Local(err)),
            (_, Some(Err(Stop::Failed(Unchecked::Panicked)))) => Err(SinkError::Hasher),
            (Err(err), _) => Err(err),
            (Ok(()), Some(Ok(sha256))) => self.settle().map(|()| sha256),
            (Ok(()), None) => Err(SinkError::Incomplete),
        };
        SinkReport {
            verified: checked.verified,
            result,
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

    /// Takes one frame; `Ok(true)` at the end of the transfer. Where the
    /// frame sits is the reply checker's part; whether it hashes right is
    /// the engine's.
    fn take(&mut self, frame: Response, feeder: &mut Feeder<'_>) -> Result<bool, SinkError> {
        // A hashing thread stopped at a failure: the engine says which.
        let stopped = |_| SinkError::Incomplete;
        match self.reply.feed(frame)? {
            GetEvent::Data(data) => {
                // Counted before the write: these bytes crossed the network
                // whether or not the disk takes them.
                self.received += data.len() as u64;
                feeder.data(data.clone()).map_err(stopped)?;
                self.file.write_all(&data).map_err(SinkError::Local)?;
                self.tracker.set(self.reply.position());
                Ok(false)
            }
            GetEvent::Checkpoint { state, .. } => {
                feeder.point(state).map_err(stopped)?;
                Ok(false)
            }
            GetEvent::End { sha256 } => {
                feeder.end(sha256).map_err(stopped)?;
                Ok(true)
            }
            GetEvent::Failed(err) => Err(SinkError::Remote(err)),
            // `Meta` came before the sink was made: a second one is out of place.
            GetEvent::Meta(_) => Err(GetError::Unexpected { kind: "Meta" }.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ft_protocol::{ChainHasher, CHUNK_SIZE};

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
                assert_eq!(
                    report.verified.offset, at,
                    "the chunks before stay verified, on any number of threads"
                );
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
