//! The partial download beside the output: `NAME.part` holds the bytes,
//! `NAME.part.json` says which remote file version they belong to. Neither is
//! trusted: a resume re-reads the bytes and checks them against the server's
//! checkpoints before keeping any of them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ft_protocol::{hash, ChainHasher, Digest, FileMeta, CHUNK_SIZE};
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

    /// Re-reads the partial and checks it against the server's checkpoint
    /// states (`server[k - 1]` for boundary `k`): returns how far it agrees,
    /// stopping at the first chunk that does not. Bytes after the last whole
    /// chunk are not kept; they cost less than one chunk to fetch again.
    pub fn verify(&self, server: &[Digest]) -> Result<Verified, Error> {
        let mut file = File::open(&self.data).map_err(Error::local(&self.data))?;
        let mut hasher = ChainHasher::new();
        let mut verified = Verified::start();
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        for expected in server {
            match file.read_exact(&mut buf) {
                Ok(()) => {}
                // Shorter than the chunks asked about: keep what checked out.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(err) => return Err(Error::local(&self.data)(err)),
            }
            hasher.update(&buf);
            match hasher.state() {
                Some(state) if state == *expected => {
                    verified = Verified {
                        offset: verified.offset + CHUNK_SIZE,
                        state,
                    }
                }
                _ => break,
            }
        }
        Ok(verified)
    }

    /// Removes the partial and its sidecar, if they exist.
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.data);
        let _ = fs::remove_file(&self.sidecar);
    }
}

/// The SHA-256 of a whole local file.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = ChainHasher::new();
    let mut buf = vec![0u8; CHUNK_SIZE.min(file.metadata()?.len().max(1)) as usize];
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
        let data: Vec<u8> = (0..3 * chunk + 10).map(|i| (i % 253) as u8).collect();
        let server = states(&data);

        fs::write(&partial.data, &data).expect("write");
        let all = partial.verify(&server).expect("verifies");
        assert_eq!(all.offset, 3 * CHUNK_SIZE);
        assert_eq!(all.state, server[2]);

        let mut corrupt = data.clone();
        corrupt[chunk + 5] ^= 1;
        fs::write(&partial.data, &corrupt).expect("write");
        let upto = partial.verify(&server).expect("verifies");
        assert_eq!(upto.offset, CHUNK_SIZE, "keeps the good first chunk only");
        assert_eq!(upto.state, server[0]);

        fs::write(&partial.data, &data[..chunk + 100]).expect("write");
        assert_eq!(
            partial.verify(&server).expect("verifies").offset,
            CHUNK_SIZE
        );

        corrupt[0] ^= 1;
        fs::write(&partial.data, &corrupt).expect("write");
        assert_eq!(
            partial.verify(&server).expect("verifies"),
            Verified::start()
        );
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
