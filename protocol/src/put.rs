//! The rules of an upload that both sides share: how a file is cut into
//! chunks, the check of one chunk against the states its sender claims, and
//! the check that the chunks' states chain into the whole file's SHA-256.
//! Plain functions and types over bytes; nothing here does I/O.

use crate::hash::{ChainHasher, Digest};
use crate::CHUNK_SIZE;

/// Chunks of a file of `size` bytes: one per `CHUNK_SIZE` bytes, the last
/// one possibly shorter; none for an empty file.
pub fn chunks(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE)
}

/// Bytes of chunk `index` of a file of `size` bytes (0 past the end).
pub fn chunk_len(size: u64, index: u64) -> u64 {
    let start = index.saturating_mul(CHUNK_SIZE);
    size.saturating_sub(start).min(CHUNK_SIZE)
}

/// The state at boundary 0: SHA-256's initial value.
pub fn initial_state() -> Digest {
    // A fresh hasher has consumed nothing, so it stands on a boundary.
    ChainHasher::new().state().unwrap_or_default()
}

/// One chunk being checked as its bytes arrive: it must hash from the
/// state its sender gave for its start to the one given for its end, or,
/// for the last chunk, to the whole file's SHA-256.
#[derive(Clone)]
pub struct ChunkCheck {
    hasher: ChainHasher,
    end: Digest,
    last: bool,
    left: u64,
}

/// Why a chunk was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The index lies past the file's last chunk.
    #[error("chunk {index} is past the end of a file of {size} bytes")]
    OutOfRange {
        /// The chunk.
        index: u64,
        /// The file's size.
        size: u64,
    },
    /// More bytes than the chunk holds.
    #[error("more bytes than chunk {index} holds")]
    TooLong {
        /// The chunk.
        index: u64,
    },
    /// The bytes do not hash to the state given for the chunk's end.
    #[error("chunk {index} does not hash to the state given for its end")]
    Mismatch {
        /// The chunk.
        index: u64,
    },
}

impl ChunkCheck {
    /// The check of chunk `index` of a file of `size` bytes, from `start`
    /// to `end`.
    pub fn new(size: u64, index: u64, start: &Digest, end: Digest) -> Result<Self, ChunkError> {
        let count = chunks(size);
        let out_of_range = ChunkError::OutOfRange { index, size };
        if index >= count {
            return Err(out_of_range);
        }
        // index < count <= size / CHUNK_SIZE + 1: the product fits.
        let hasher = ChainHasher::resume(start, index * CHUNK_SIZE).ok_or(out_of_range)?;
        Ok(Self {
            hasher,
            end,
            last: index + 1 == count,
            left: chunk_len(size, index),
        })
    }

    /// Bytes still to come.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Feeds the next bytes of the chunk.
    pub fn feed(&mut self, index: u64, bytes: &[u8]) -> Result<(), ChunkError> {
        if bytes.len() as u64 > self.left {
            return Err(ChunkError::TooLong { index });
        }
        self.left -= bytes.len() as u64;
        self.hasher.update(bytes);
        Ok(())
    }

    /// Whether the whole chunk came and hashed to its end state.
    pub fn finish(self, index: u64) -> Result<(), ChunkError> {
        let reached = match (self.left, self.last) {
            (0, true) => Some(self.hasher.finalize()),
            (0, false) => self.hasher.state(),
            _ => None,
        };
        match reached {
            Some(state) if state == self.end => Ok(()),
            _ => Err(ChunkError::Mismatch { index }),
        }
    }
}

/// Whether the `(start, end)` states of every chunk of a file of `size`
/// bytes, in order, chain from the initial state into `sha256`: each
/// chunk starts where the one before it ended, and the last ends on the
/// file's digest. With each chunk checked against its own states, this
/// proves the file hashes to `sha256`, as one sequential pass would.
pub fn chain_holds(
    size: u64,
    sha256: &Digest,
    states: impl IntoIterator<Item = (Digest, Digest)>,
) -> bool {
    if size == 0 {
        return ChainHasher::new().finalize() == *sha256;
    }
    let mut expected = initial_state();
    let mut seen = 0u64;
    for (start, end) in states {
        if start != expected {
            return false;
        }
        expected = end;
        seen += 1;
    }
    seen == chunks(size) && expected == *sha256
}

/// Bincode's variant indices of `Chunk`, `Data` and `Commit` among the
/// requests, and the bytes before a `Data` payload in its body.
const CHUNK_TAG: u32 = 7;
const DATA_TAG: u32 = 8;
const COMMIT_TAG: u32 = 9;
const DATA_BODY_HEADER: usize = 12;

/// Whether the frames a client sent ahead of a `Put` of `size` bytes (one
/// chunk at most), given as (variant index, body length), are the whole
/// rest of that upload: its `Chunk`, `Data` that carries exactly `size`
/// bytes, and `Commit` (for an empty file, `Commit` alone). How many frames
/// that is, so a server can take the upload in one step.
pub fn whole_upload_ahead(ahead: &[(u32, usize)], size: u64) -> Option<usize> {
    if size > CHUNK_SIZE {
        return None;
    }
    let mut frames = ahead.iter();
    let mut count = 0;
    if size > 0 {
        if frames.next()?.0 != CHUNK_TAG {
            return None;
        }
        count += 1;
        let mut carried = 0u64;
        while carried < size {
            let &(tag, len) = frames.next()?;
            if tag != DATA_TAG || len <= DATA_BODY_HEADER {
                return None;
            }
            carried += (len - DATA_BODY_HEADER) as u64;
            count += 1;
        }
        if carried != size {
            return None;
        }
    }
    (frames.next()?.0 == COMMIT_TAG).then_some(count + 1)
}

/// The states a sender gives for every chunk of `data`: what a client
/// computes in one pass over its file, here over bytes in memory.
pub fn states_of(data: &[u8]) -> Vec<(Digest, Digest)> {
    let size = data.len() as u64;
    let mut hasher = ChainHasher::new();
    let mut out = Vec::new();
    for (index, chunk) in data.chunks(CHUNK_SIZE as usize).enumerate() {
        let start = hasher.state().unwrap_or_default();
        hasher.update(chunk);
        let end = if index as u64 + 1 == chunks(size) {
            hasher.clone().finalize()
        } else {
            hasher.state().unwrap_or_default()
        };
        out.push((start, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn sha(bytes: &[u8]) -> Digest {
        let mut hasher = ChainHasher::new();
        hasher.update(bytes);
        hasher.finalize()
    }

    #[test]
    fn a_whole_small_upload_sent_ahead_is_recognised() {
        use crate::codec::encode;
        use crate::message::Request;
        let tag_and_len = |request: &Request| {
            let frame = encode(request).expect("encodes");
            let tag = u32::from_le_bytes(frame[4..8].try_into().expect("a tag"));
            (tag, frame.len() - 4)
        };
        let chunk = tag_and_len(&Request::Chunk {
            index: 0,
            start: [0; 32],
            end: [0; 32],
        });
        let data = |n: usize| tag_and_len(&Request::Data(bytes::Bytes::from(vec![0; n])));
        let commit = tag_and_len(&Request::Commit { sha256: [0; 32] });
        assert_eq!(
            whole_upload_ahead(&[chunk, data(3), data(4), commit], 7),
            Some(4)
        );
        assert_eq!(whole_upload_ahead(&[commit], 0), Some(1));
        assert_eq!(
            whole_upload_ahead(&[chunk, data(3), commit], 7),
            None,
            "short"
        );
        assert_eq!(
            whole_upload_ahead(&[chunk, data(8), commit], 7),
            None,
            "long"
        );
        assert_eq!(
            whole_upload_ahead(&[chunk, data(7)], 7),
            None,
            "no commit yet"
        );
        assert_eq!(whole_upload_ahead(&[data(7), commit], 7), None);
        assert_eq!(
            whole_upload_ahead(&[chunk, data(7), commit], CHUNK_SIZE + 1),
            None
        );
    }

    #[test]
    fn files_are_cut_into_chunks() {
        assert_eq!(chunks(0), 0);
        assert_eq!(chunks(1), 1);
        assert_eq!(chunks(CHUNK_SIZE), 1);
        assert_eq!(chunks(CHUNK_SIZE + 1), 2);
        assert_eq!(chunk_len(CHUNK_SIZE + 1, 1), 1);
        assert_eq!(chunk_len(CHUNK_SIZE + 1, 2), 0);
        assert_eq!(chunks(u64::MAX), u64::MAX / CHUNK_SIZE + 1);
    }

    #[test]
    fn honest_chunks_pass_and_chain_into_the_digest() {
        for len in [1, CHUNK_SIZE, 2 * CHUNK_SIZE + 3] {
            let bytes = data(len);
            let states = states_of(&bytes);
            for (index, (start, end)) in states.iter().enumerate() {
                let index = index as u64;
                let mut check = ChunkCheck::new(len, index, start, *end).expect("in range");
                let from = (index * CHUNK_SIZE) as usize;
                let to = from + chunk_len(len, index) as usize;
                check.feed(index, &bytes[from..to]).expect("fits");
                assert_eq!(check.left(), 0);
                check.finish(index).expect("hashes to its end");
            }
            assert!(chain_holds(len, &sha(&bytes), states.clone()), "{len}");
            // Any state changed breaks the chain.
            let mut broken = states.clone();
            broken[0].1[0] ^= 1;
            assert!(!chain_holds(len, &sha(&bytes), broken), "{len}");
            assert!(!chain_holds(len, &[0; 32], states), "{len}");
        }
        assert!(chain_holds(0, &sha(b""), []));
        assert!(!chain_holds(0, &[1; 32], []));
    }

    #[test]
    fn a_changed_byte_a_short_chunk_or_a_long_one_fails() {
        let len = 2 * CHUNK_SIZE;
        let bytes = data(len);
        let states = states_of(&bytes);
        let (start, end) = states[1];
        let mut bad = bytes[CHUNK_SIZE as usize..].to_vec();
        bad[10] ^= 1;
        let mut check = ChunkCheck::new(len, 1, &start, end).expect("in range");
        check.feed(1, &bad).expect("fits");
        assert_eq!(check.finish(1), Err(ChunkError::Mismatch { index: 1 }));

        let mut short = ChunkCheck::new(len, 1, &start, end).expect("in range");
        short
            .feed(1, &bytes[CHUNK_SIZE as usize..][..5])
            .expect("fits");
        assert_eq!(short.finish(1), Err(ChunkError::Mismatch { index: 1 }));

        let mut long = ChunkCheck::new(len, 1, &start, end).expect("in range");
        long.feed(1, &bytes[CHUNK_SIZE as usize..]).expect("fits");
        assert_eq!(long.feed(1, b"x"), Err(ChunkError::TooLong { index: 1 }));
        assert!(matches!(
            ChunkCheck::new(len, 2, &start, end),
            Err(ChunkError::OutOfRange { .. })
        ));
        assert!(ChunkCheck::new(u64::MAX, u64::MAX / CHUNK_SIZE, &start, end).is_ok());
    }
}
