//! The partial download beside the output: `NAME.part` holds the bytes,
//! `NAME.part.json` says which remote file version they belong to. Neither is
//! trusted: a resume re-reads the bytes and checks them against the server's
//! checkpoints before keeping any of them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ft_protocol::{hash, ChainHasher, Digest, FileMeta, CHUNK_SIZE, MAX_DATA};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Sidecar format version, bumped if its fields change meaning.
const SIDECAR_FORMAT: u32 = 1;

/// Where a download lives until it is verified.
#[derive(Debug, Clone)]
pub struct Partial {
    /// The final name.
    pub output: PathBuf,
    /// The bytes so far.
    pub data: PathBuf,
    /// What remote file version they are.
    pub sidecar: PathBuf,
}

/// The sidecar's contents.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sidecar {
    format: u32,
    remote: String,
    size: u64,
    mtime_secs: i64,
    mtime_nanos: u32,
    sha256: Option<String>,
}

/// Verified progress: the first `offset` bytes on disk hash to `state`.
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

impl Partial {
    /// The partial files for `output`.
    pub fn for_output(output: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut name = output.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        Self {
            output: output.to_owned(),
            data: with_suffix(".part"),
            sidecar: with_suffix(".part.json"),
        }
    }

    /// Whether the sidecar says the partial belongs to this version of `remote`.
    pub fn matches(&self, remote: &str, meta: &FileMeta) -> bool {
        let Ok(text) = fs::read_to_string(&self.sidecar) else {
            return false;
        };
        let Ok(saved) = serde_json::from_str::<Sidecar>(&text) else {
            return false;
        };
        let saved_sha = saved.sha256.as_deref();
        let sha_agrees = match (saved_sha, meta.sha256) {
            (Some(saved), Some(now)) => saved == hash::to_hex(&now),
            _ => true,
        };
        saved.format == SIDECAR_FORMAT
            && saved.remote == remote
            && saved.size == meta.size
            && saved.mtime_secs == meta.mtime_secs
            && saved.mtime_nanos == meta.mtime_nanos
            && sha_agrees
            && self.data.is_file()
    }

    /// Starts a fresh partial for this version of `remote`: sidecar first, so a
    /// crash at any later moment leaves a partial a resume can identify.
    pub fn begin(&self, remote: &str, meta: &FileMeta) -> Result<(), Error> {
        let sidecar = Sidecar {
            format: SIDECAR_FORMAT,
            remote: remote.to_owned(),
            size: meta.size,
            mtime_secs: meta.mtime_secs,
            mtime_nanos: meta.mtime_nanos,
            sha256: meta.sha256.as_ref().map(hash::to_hex),
        };
        let text = serde_json::to_string_pretty(&sidecar)
            .map_err(|err| io::Error::other(err.to_string()))
            .map_err(Error::local(&self.sidecar))?;
        fs::write(&self.sidecar, text + "\n").map_err(Error::local(&self.sidecar))?;
        File::create(&self.data).map_err(Error::local(&self.data))?;
        Ok(())
    }

    /// Bytes in the partial now; 0 when there is none.
    pub fn bytes_on_disk(&self) -> u64 {
        fs::metadata(&self.data).map_or(0, |m| m.len())
    }

    /// Opens the partial for writing at `offset`, dropping anything after it.
    pub fn open_at(&self, offset: u64) -> Result<File, Error> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.data)
            .map_err(Error::local(&self.data))?;
        file.set_len(offset).map_err(Error::local(&self.data))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(Error::local(&self.data))?;
        Ok(file)
    }

    /// How much of the partial checks out against the server's checkpoint
    /// `states` (boundaries 1, 2, …), checked as [`check_chunks`] does, on
    /// `threads` threads. Bytes after the last whole chunk are not kept:
    /// they cost less than a chunk to fetch again. `checked` hears of the
    /// bytes as they are read.
    pub fn verify(
        &self,
        states: &[Digest],
        threads: usize,
        checked: &(dyn Fn(u64) + Sync),
    ) -> Result<Verified, Error> {
        let file = File::open(&self.data).map_err(Error::local(&self.data))?;
        check_chunks(&file, states, threads, checked).map_err(Error::local(&self.data))
    }

    /// Removes the partial and its sidecar, if they exist.
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.data);
        let _ = fs::remove_file(&self.sidecar);
    }
}

/// How much of `file` checks out against a server's checkpoint `states`
/// (boundaries 1, 2, …): the longest run of chunks from the start in which
/// chunk k hashes from state k (the initial state for the first) to state
/// k + 1. Each chunk is checked on its own, so the chunks are spread over
/// `threads` threads; since the run is accepted from the start only, every
/// accepted chunk began from a state the one before it proved. `checked`
/// hears of the bytes as they are read.
pub fn check_chunks(
    file: &File,
    states: &[Digest],
    threads: usize,
    checked: &(dyn Fn(u64) + Sync),
) -> io::Result<Verified> {
    let on_disk = file.metadata()?.len();
    let chunks = states.len().min((on_disk / CHUNK_SIZE) as usize);
    // Chunks are taken in order; any at or past the first bad one are
    // not worth reading.
    let next = AtomicUsize::new(0);
    let first_bad = AtomicUsize::new(chunks);
    let check = |k: usize, piece: &mut [u8]| -> io::Result<bool> {
        let start = match k.checked_sub(1) {
            None => Verified::start().state,
            Some(before) => states[before],
        };
        let offset = k as u64 * CHUNK_SIZE;
        let Some(mut hasher) = ChainHasher::resume(&start, offset) else {
            return Ok(false);
        };
        let mut at = offset;
        while at < offset + CHUNK_SIZE {
            match file.read_exact_at(piece, at) {
                Ok(()) => {}
                // Shortened since it was measured: this chunk is not there.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(err) => return Err(err),
            }
            hasher.update(piece);
            checked(piece.len() as u64);
            at += piece.len() as u64;
        }
        Ok(hasher.state() == Some(states[k]))
    };
    let outcome = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    let mut piece = vec![0u8; MAX_DATA];
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= first_bad.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        if !check(k, &mut piece)? {
                            first_bad.fetch_min(k, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a checking thread failed")))
            })
            .collect::<io::Result<Vec<()>>>()
    });
    outcome?;
    Ok(match first_bad.into_inner().checked_sub(1) {
        None => Verified::start(),
        Some(last_good) => Verified {
            offset: (last_good as u64 + 1) * CHUNK_SIZE,
            state: states[last_good],
        },
    })
}

/// The SHA-256 of the file at `path`, checked chunk by chunk against a
/// server's checkpoint `states` on `threads` threads, and only the bytes
/// after the last of them hashed in one pass. `None` as soon as a chunk
/// disagrees: the file is not the server's.
pub fn hash_file_checked(
    path: &Path,
    states: &[Digest],
    threads: usize,
) -> io::Result<Option<Digest>> {
    let mut file = File::open(path)?;
    let verified = check_chunks(&file, states, threads, &|_| {})?;
    if verified.offset != states.len() as u64 * CHUNK_SIZE {
        return Ok(None);
    }
    let Some(hasher) = ChainHasher::resume(&verified.state, verified.offset) else {
        return Ok(None);
    };
    file.seek(SeekFrom::Start(verified.offset))?;
    hash_rest(&mut file, hasher, MAX_DATA).map(Some)
}

/// The SHA-256 of a whole local file.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let buf_len = CHUNK_SIZE.min(file.metadata()?.len().max(1)) as usize;
    hash_rest(&mut file, ChainHasher::new(), buf_len)
}

/// Feeds what is left of `file` to `hasher`, `buf_len` bytes at a time, and
/// returns the digest.
fn hash_rest(file: &mut File, mut hasher: ChainHasher, buf_len: usize) -> io::Result<Digest> {
    let mut buf = vec![0u8; buf_len];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            size,
            mtime_secs: 1_700_000_000,
            mtime_nanos: 42,
            sha256: None,
        }
    }

    fn states(data: &[u8]) -> Vec<Digest> {
        let mut hasher = ChainHasher::new();
        data.chunks_exact(CHUNK_SIZE as usize)
            .filter_map(|chunk| {
                hasher.update(chunk);
                hasher.state()
            })
            .collect()
    }

    #[test]
    fn sidecar_identifies_the_remote_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = Partial::for_output(&dir.path().join("f.bin"));
        assert!(partial.data.ends_with("f.bin.part"));
        assert!(!partial.matches("f.bin", &meta(10)), "nothing on disk yet");
        partial.begin("f.bin", &meta(10)).expect("begins");
        assert!(partial.matches("f.bin", &meta(10)));
        assert!(!partial.matches("g.bin", &meta(10)));
        assert!(!partial.matches("f.bin", &meta(11)));
        let mut touched = meta(10);
        touched.mtime_nanos += 1;
        assert!(!partial.matches("f.bin", &touched));
        fs::write(&partial.sidecar, "{ not json").expect("write");
        assert!(
            !partial.matches("f.bin", &meta(10)),
            "a torn sidecar means start over"
        );
    }

    #[test]
    fn verify_stops_at_the_first_bad_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = Partial::for_output(&dir.path().join("f"));
        let chunk = CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..5 * chunk + 10).map(|i| (i % 253) as u8).collect();
        let server = states(&data);
        for threads in 1..=3 {
            fs::write(&partial.data, &data).expect("write");
            let read = AtomicUsize::new(0);
            let count = |bytes: u64| {
                read.fetch_add(bytes as usize, Ordering::Relaxed);
            };
            let all = partial.verify(&server, threads, &count).expect("verifies");
            assert_eq!(all.offset, 5 * CHUNK_SIZE, "{threads} threads");
            assert_eq!(all.state, server[4]);
            assert_eq!(read.into_inner(), 5 * chunk, "every whole chunk read once");

            // Bad chunks at 1 and 3: only chunk 0 is kept, whichever thread
            // finds which first.
            let mut corrupt = data.clone();
            corrupt[chunk + 5] ^= 1;
            corrupt[3 * chunk + 5] ^= 1;
            fs::write(&partial.data, &corrupt).expect("write");
            let upto = partial.verify(&server, threads, &|_| {}).expect("verifies");
            assert_eq!(upto.offset, CHUNK_SIZE, "{threads} threads");
            assert_eq!(upto.state, server[0]);

            fs::write(&partial.data, &data[..2 * chunk + 100]).expect("write");
            assert_eq!(
                partial
                    .verify(&server, threads, &|_| {})
                    .expect("verifies")
                    .offset,
                2 * CHUNK_SIZE,
                "a short partial keeps its whole chunks"
            );

            corrupt[0] ^= 1;
            fs::write(&partial.data, &corrupt).expect("write");
            assert_eq!(
                partial.verify(&server, threads, &|_| {}).expect("verifies"),
                Verified::start()
            );
        }
    }

    #[test]
    fn verify_accepts_no_chunk_after_a_false_state() {
        // The bytes are the file's, but the server's state at boundary 2 is
        // not their state: chunk 1 cannot end on it and chunk 2, hashed from
        // it, cannot end on boundary 3. Only chunk 0 stands.
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = Partial::for_output(&dir.path().join("f"));
        let chunk = CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..4 * chunk).map(|i| (i % 251) as u8).collect();
        let mut server = states(&data);
        server[1][0] ^= 1;
        fs::write(&partial.data, &data).expect("write");
        for threads in 1..=3 {
            let verified = partial.verify(&server, threads, &|_| {}).expect("verifies");
            assert_eq!(verified.offset, CHUNK_SIZE, "{threads} threads");
        }
    }

    #[test]
    fn a_checked_hash_is_the_files_sha256_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let chunk = CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..3 * chunk + 100).map(|i| (i % 249) as u8).collect();
        let server = states(&data);
        let mut whole = ChainHasher::new();
        whole.update(&data);
        let digest = whole.finalize();
        for threads in 1..=3 {
            fs::write(&path, &data).expect("write");
            assert_eq!(
                hash_file_checked(&path, &server, threads).expect("reads"),
                Some(digest),
                "{threads} threads"
            );
            assert_eq!(hash_file(&path).expect("reads"), digest);

            // A changed byte in a chunk: not the server's file.
            let mut changed = data.clone();
            changed[2 * chunk + 1] ^= 1;
            fs::write(&path, &changed).expect("write");
            assert_eq!(
                hash_file_checked(&path, &server, threads).expect("reads"),
                None
            );

            // In the tail after the last chunk: a different digest.
            let mut changed = data.clone();
            changed[3 * chunk + 50] ^= 1;
            fs::write(&path, &changed).expect("write");
            let other = hash_file_checked(&path, &server, threads).expect("reads");
            assert!(
                other.is_some() && other != Some(digest),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn open_at_truncates_to_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = Partial::for_output(&dir.path().join("f"));
        fs::write(&partial.data, [7u8; 100]).expect("write");
        drop(partial.open_at(40).expect("opens"));
        assert_eq!(fs::read(&partial.data).expect("read"), vec![7u8; 40]);
        partial.discard();
        assert!(!partial.data.exists() && !partial.sidecar.exists());
    }
}
