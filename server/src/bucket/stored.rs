//! An object's digests as kept in the bucket beside it, under the hidden
//! folder [`FOLDER`] of the served prefix, named by the object's version
//! (a hash of its key and ETag). The bytes are a function of the version
//! alone, so two servers that race to write them write the same bytes, and
//! repeating the write is harmless: the store need not honour
//! `If-None-Match`. A record that does not match the version it is read
//! for, to the byte, is not used.

use ft_protocol::{boundaries, Digest};

use crate::backend::Digests;

/// The hidden folder, never listed or served.
pub const FOLDER: &str = ".ftserve-digests";

/// What a record starts with: the format and its version.
const MAGIC: &[u8; 12] = b"ft-digests1\n";

/// Bytes before the states: magic, version id, size, digest.
const HEADER: usize = MAGIC.len() + 32 + 8 + 32;

/// The key of the record of version `id`, under the served prefix `prefix`
/// (empty, or ending in `/`).
pub fn key(prefix: &str, id: &[u8; 32]) -> String {
    format!("{prefix}{FOLDER}/{}", hex::encode(id))
}

/// The length of the record of an object of `size` bytes.
pub fn len(size: u64) -> u64 {
    HEADER as u64 + 32 * boundaries(size)
}

/// The record of version `id` (`size` bytes) with `digests`.
pub fn encode(id: &[u8; 32], size: u64, digests: &Digests) -> bytes::Bytes {
    let mut out = Vec::with_capacity(HEADER + 32 * digests.checkpoints.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(id);
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&digests.sha256);
    for state in &digests.checkpoints {
        out.extend_from_slice(state);
    }
    out.into()
}

/// The digests in `record`, if it is the record of version `id` of `size`
/// bytes, whole.
pub fn decode(record: &[u8], id: &[u8; 32], size: u64) -> Option<Digests> {
    if record.len() as u64 != len(size) {
        return None;
    }
    let (magic, rest) = record.split_at(MAGIC.len());
    let (found_id, rest) = rest.split_at(32);
    let (found_size, rest) = rest.split_at(8);
    let (sha256, states) = rest.split_at(32);
    if magic != MAGIC || found_id != id || found_size != size.to_le_bytes() {
        return None;
    }
    let state = |bytes: &[u8]| Digest::try_from(bytes).ok();
    Some(Digests {
        sha256: state(sha256)?,
        checkpoints: states.chunks_exact(32).map(state).collect::<Option<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ft_protocol::CHUNK_SIZE;

    #[test]
    fn a_record_reads_back_only_for_its_own_version() {
        let size = 3 * CHUNK_SIZE + 5;
        let digests = Digests {
            sha256: [7; 32],
            checkpoints: vec![[1; 32], [2; 32], [3; 32]],
        };
        let record = encode(&[9; 32], size, &digests);
        assert_eq!(record.len() as u64, len(size));
        let back = decode(&record, &[9; 32], size).expect("its own version");
        assert_eq!(back.sha256, digests.sha256);
        assert_eq!(back.checkpoints, digests.checkpoints);
        assert!(decode(&record, &[8; 32], size).is_none(), "another object");
        assert!(
            decode(&record, &[9; 32], size + 1).is_none(),
            "another size"
        );
        assert!(decode(&record[..record.len() - 1], &[9; 32], size).is_none());
        let mut damaged = record.to_vec();
        damaged[0] ^= 1;
        assert!(decode(&damaged, &[9; 32], size).is_none());
        assert_eq!(
            encode(&[9; 32], size, &digests),
            record,
            "every writer writes the same bytes"
        );
        assert_eq!(
            key("data/", &[0xab; 32]),
            format!("data/.ftserve-digests/{}", "ab".repeat(32))
        );
    }
}
