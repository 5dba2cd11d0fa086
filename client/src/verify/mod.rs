//! The verification engine: a file's chunks checked against the server's
//! checkpoint chain on several threads, and accepted in file order only.
//! It checks chunks as they arrive during a download, a partial on disk
//! before a resume, and a file already present before a re-run leaves it
//! alone.
//!
//! SHA-256 is sequential, but the server's checkpoints make it parallel to
//! *check*: chunk `k` is hashed starting from checkpoint `k` as the server
//! claimed it, and must end on checkpoint `k + 1` (or, for the last chunk,
//! on the digest of the whole file). Chunks are accepted in order only,
//! starting from a state this client computed or verified itself, so each
//! accepted chunk's starting state has been checked by the one before: the
//! accepted bytes hash to exactly what one sequential pass would give.

mod engine;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use ft_protocol::{ChainHasher, Digest, CHUNK_SIZE, MAX_DATA};

#[cfg(test)]
pub(crate) use engine::testing;
pub use engine::{check, threads, Feeder, Stop, Unchecked, Verified};

/// How much of `file` checks out against a server's checkpoint `states`
/// (boundaries 1, 2, …): the longest run of whole chunks from the start
/// that each hash from the state before them to the state after, checked
/// on `threads` threads that read the file themselves. `checked` hears of
/// the bytes as they are read.
pub fn check_file(
    file: &File,
    states: &[Digest],
    threads: usize,
    checked: &(dyn Fn(u64) + Sync),
) -> Result<Verified, Unchecked> {
    let on_disk = file.metadata().map_err(Unchecked::Read)?.len();
    let chunks = states.len().min((on_disk / CHUNK_SIZE) as usize);
    if chunks == 0 {
        return Ok(Verified::start());
    }
    let ((), checked) = check(Verified::start(), threads, checked, |feeder| {
        for state in &states[..chunks] {
            // Chunks past the first bad one are not worth reading.
            if feeder.failed() || feeder.chunk(file, CHUNK_SIZE, *state).is_err() {
                return;
            }
        }
    });
    match checked.outcome {
        Some(Err(Stop::Failed(unchecked))) => Err(unchecked),
        _ => Ok(checked.verified),
    }
}

/// The SHA-256 of `file` (read from its start), checked chunk by chunk against a
/// server's checkpoint `states` on `threads` threads, and only the bytes
/// after the last of them hashed in one pass. `None` as soon as a chunk
/// disagrees: the file is not the server's. With no states, the file's
/// plain SHA-256, on this thread.
pub fn hash_file(
    mut file: File,
    states: &[Digest],
    threads: usize,
) -> Result<Option<Digest>, Unchecked> {
    let mut verified = Verified::start();
    if !states.is_empty() {
        verified = check_file(&file, states, threads, &|_| {})?;
        if verified.offset != states.len() as u64 * CHUNK_SIZE {
            return Ok(None);
        }
        let at = file.seek(SeekFrom::Start(verified.offset));
        at.map_err(Unchecked::Read)?;
    }
    let Some(mut hasher) = ChainHasher::resume(&verified.state, verified.offset) else {
        return Ok(None);
    };
    // A small file is read in one piece, into a buffer no larger than it.
    let size = file.metadata().map_err(Unchecked::Read)?.len();
    let rest = size.saturating_sub(verified.offset);
    let mut buf = vec![0u8; rest.clamp(1, MAX_DATA as u64) as usize];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(Some(hasher.finalize())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Unchecked::Read(err)),
        }
    }
}

/// Whether `data` is, whole, what `sha256` says.
pub fn matches(data: &[u8], sha256: &Digest) -> bool {
    let mut hasher = ChainHasher::new();
    hasher.update(data);
    hasher.finalize() == *sha256
}

#[cfg(test)]
mod tests {
    use super::testing::{data, sha256, states};
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn file_with(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().expect("tempfile");
        std::io::Write::write_all(&mut file, data).expect("write");
        file
    }

    #[test]
    fn a_file_on_disk_keeps_its_good_chunks_up_to_the_first_bad_one() {
        let chunk = CHUNK_SIZE as usize;
        let data = data(5 * chunk + 10);
        let server = states(&data);
        for threads in 1..=3 {
            let read = AtomicUsize::new(0);
            let count = |bytes: u64| {
                read.fetch_add(bytes as usize, Ordering::Relaxed);
            };
            let all = check_file(&file_with(&data), &server, threads, &count).expect("reads");
            assert_eq!(all.offset, 5 * CHUNK_SIZE, "{threads} threads");
            assert_eq!(all.state, server[4]);
            assert_eq!(read.into_inner(), 5 * chunk, "every whole chunk read once");

            // Bad chunks at 1 and 3: only chunk 0 is kept.
            let mut corrupt = data.clone();
            corrupt[chunk + 5] ^= 1;
            corrupt[3 * chunk + 5] ^= 1;
            let upto = check_file(&file_with(&corrupt), &server, threads, &|_| {}).expect("reads");
            assert_eq!(upto.offset, CHUNK_SIZE, "{threads} threads");
            assert_eq!(upto.state, server[0]);

            let short = &data[..2 * chunk + 100];
            let kept = check_file(&file_with(short), &server, threads, &|_| {}).expect("reads");
            assert_eq!(
                kept.offset,
                2 * CHUNK_SIZE,
                "a short file keeps its whole chunks"
            );

            corrupt[0] ^= 1;
            let none = check_file(&file_with(&corrupt), &server, threads, &|_| {}).expect("reads");
            assert_eq!(none, Verified::start());
        }
    }

    #[test]
    fn a_file_on_disk_accepts_no_chunk_after_a_false_state() {
        let data = data(4 * CHUNK_SIZE as usize);
        let mut server = states(&data);
        server[1][0] ^= 1;
        for threads in 1..=3 {
            let verified = check_file(&file_with(&data), &server, threads, &|_| {}).expect("reads");
            assert_eq!(verified.offset, CHUNK_SIZE, "{threads} threads");
        }
    }

    #[test]
    fn a_hashed_file_is_its_sha256_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let chunk = CHUNK_SIZE as usize;
        let data = data(3 * chunk + 100);
        let server = states(&data);
        let digest = sha256(&data);
        for threads in 1..=3 {
            std::fs::write(&path, &data).expect("write");
            assert_eq!(
                hash_file(File::open(&path).expect("open"), &server, threads).expect("reads"),
                Some(digest)
            );
            assert_eq!(
                hash_file(File::open(&path).expect("open"), &[], threads).expect("reads"),
                Some(digest)
            );

            let mut changed = data.clone();
            changed[2 * chunk + 1] ^= 1;
            std::fs::write(&path, &changed).expect("write");
            assert_eq!(
                hash_file(File::open(&path).expect("open"), &server, threads).expect("reads"),
                None
            );

            let mut changed = data.clone();
            changed[3 * chunk + 50] ^= 1;
            std::fs::write(&path, &changed).expect("write");
            let other =
                hash_file(File::open(&path).expect("open"), &server, threads).expect("reads");
            assert!(
                other.is_some() && other != Some(digest),
                "{threads} threads"
            );
        }
        std::fs::write(&path, b"").expect("write");
        assert_eq!(
            hash_file(File::open(&path).expect("open"), &[], 1).expect("reads"),
            Some(sha256(b""))
        );
        assert!(matches(b"abc", &sha256(b"abc")) && !matches(b"abd", &sha256(b"abc")));
    }
}
