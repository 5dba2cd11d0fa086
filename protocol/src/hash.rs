//! SHA-256 with its chaining state in view.
//!
//! SHA-256 compresses the message 64 bytes at a time into an eight-word state;
//! the state after a block commits to every byte before it. [`ChainHasher`]
//! keeps that state by hand around `sha2`'s compression function (which uses the
//! CPU's SHA extensions where present), so the state at any 64-byte boundary can
//! be read, sent, compared, and resumed from. Its digest is the standard
//! SHA-256, exactly what `sha256sum` prints.

use sha2::block_api::compress256;

/// 32 bytes: a SHA-256 digest, or a chaining state written as eight big-endian
/// words (the same way the final digest is written).
pub type Digest = [u8; 32];

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

const BLOCK: usize = 64;

/// Incremental SHA-256 whose state can be read at block boundaries and resumed.
#[derive(Clone)]
pub struct ChainHasher {
    state: [u32; 8],
    /// Bytes fed so far, buffered ones included.
    len: u64,
    buf: [u8; BLOCK],
    buf_len: usize,
}

impl Default for ChainHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainHasher {
    /// A hasher at the start of a message.
    pub fn new() -> Self {
        Self {
            state: IV,
            len: 0,
            buf: [0; BLOCK],
            buf_len: 0,
        }
    }

    /// A hasher that has already consumed `len` bytes and reached `state`.
    /// Returns `None` unless `len` is a multiple of 64.
    pub fn resume(state: &Digest, len: u64) -> Option<Self> {
        if !len.is_multiple_of(BLOCK as u64) {
            return None;
        }
        let mut words = [0u32; 8];
        for (word, bytes) in words.iter_mut().zip(state.as_chunks::<4>().0) {
            *word = u32::from_be_bytes(*bytes);
        }
        Some(Self {
            state: words,
            len,
            buf: [0; BLOCK],
            buf_len: 0,
        })
    }

    /// Feeds more of the message.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let take = (BLOCK - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < BLOCK {
                return;
            }
            compress256(&mut self.state, &[self.buf]);
            self.buf_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        compress256(&mut self.state, blocks);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Bytes of the message so far (counting any it was resumed after).
    pub fn consumed(&self) -> u64 {
        self.len
    }

    /// The chaining state, if the bytes so far end on a 64-byte boundary.
    pub fn state(&self) -> Option<Digest> {
        (self.buf_len == 0).then(|| words_to_bytes(&self.state))
    }

    /// Pads the message and returns its SHA-256.
    pub fn finalize(mut self) -> Digest {
        let bit_len = self.len.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        tail[self.buf_len] = 0x80;
        // The length goes in the last 8 bytes of one block, or of two when the
        // leftover bytes, the 0x80 and the length do not fit in one.
        let tail_len = if self.buf_len < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        tail[tail_len - 8..tail_len].copy_from_slice(&bit_len.to_be_bytes());
        compress256(&mut self.state, tail[..tail_len].as_chunks::<BLOCK>().0);
        words_to_bytes(&self.state)
    }
}

fn words_to_bytes(words: &[u32; 8]) -> Digest {
    let mut out = [0u8; 32];
    for (bytes, word) in out.as_chunks_mut::<4>().0.iter_mut().zip(words) {
        *bytes = word.to_be_bytes();
    }
    out
}

/// Lower-case hex, as `sha256sum` prints a digest.
pub fn to_hex(digest: &Digest) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    #[test]
    fn matches_sha2_for_every_padding_case() {
        for len in (0..300).chain([4095, 4096, 4097, 1 << 20]) {
            let data = pattern(len);
            let mut h = ChainHasher::new();
            h.update(&data);
            assert_eq!(
                h.finalize(),
                <[u8; 32]>::from(Sha256::digest(&data)),
                "len {len}"
            );
        }
    }

    #[test]
    fn split_updates_equal_one_update() {
        let data = pattern(10_000);
        for split in [0, 1, 63, 64, 65, 127, 5000, 9999] {
            let mut h = ChainHasher::new();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(
                h.finalize(),
                <[u8; 32]>::from(Sha256::digest(&data)),
                "split {split}"
            );
        }
    }

    #[test]
    fn resumed_state_reaches_the_same_digest() {
        let data = pattern(3 * 4096 + 17);
        let mut first = ChainHasher::new();
        first.update(&data[..8192]);
        let state = first.state().expect("8192 is a block boundary");
        let mut resumed = ChainHasher::resume(&state, 8192).expect("aligned");
        resumed.update(&data[8192..]);
        assert_eq!(resumed.finalize(), <[u8; 32]>::from(Sha256::digest(&data)));
    }

    #[test]
    fn state_exists_only_on_block_boundaries() {
        let mut h = ChainHasher::new();
        assert!(h.state().is_some());
        h.update(&[1; 63]);
        assert!(h.state().is_none());
        h.update(&[1]);
        assert!(h.state().is_some());
        assert!(ChainHasher::resume(&[0; 32], 65).is_none());
    }

    #[test]
    fn different_bytes_give_different_states() {
        let mut a = ChainHasher::new();
        let mut b = ChainHasher::new();
        a.update(&[0; 128]);
        let mut flipped = [0u8; 128];
        flipped[3] = 1;
        b.update(&flipped);
        assert_ne!(a.state(), b.state());
    }

    #[test]
    fn hex_is_lower_case() {
        let mut d = [0u8; 32];
        d[0] = 0xAB;
        assert!(to_hex(&d).starts_with("ab00"));
        assert_eq!(to_hex(&d).len(), 64);
    }
}
