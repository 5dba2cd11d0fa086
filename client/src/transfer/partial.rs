//! The partial download beside the output: `NAME.part` holds the bytes,
//! `NAME.part.json` says which remote file version they belong to. Neither is
//! trusted: a resume re-reads the bytes and checks them against the server's
//! checkpoints before keeping any of them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ft_protocol::{hash, Digest, FileMeta};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::verify::{self, Verified};

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
    /// `states` (boundaries 1, 2, …), checked by the verification engine on
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
        verify::check_file(&file, states, threads, checked).map_err(Error::unchecked(&self.data))
    }

    /// Gives the verified partial its final name, in one atomic rename, and
    /// removes the sidecar.
    pub fn finish(&self) -> Result<(), Error> {
        self.rename()?;
        let _ = fs::remove_file(&self.sidecar);
        Ok(())
    }

    /// Gives the verified partial its final name, in one atomic rename: for
    /// a file written whole, which has no sidecar.
    pub fn rename(&self) -> Result<(), Error> {
        fs::rename(&self.data, &self.output).map_err(Error::local(&self.output))
    }

    /// Removes the partial and its sidecar, if they exist.
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.data);
        let _ = fs::remove_file(&self.sidecar);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ft_protocol::CHUNK_SIZE;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            size,
            mtime_secs: 1_700_000_000,
            mtime_nanos: 42,
            sha256: None,
        }
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
    fn verify_keeps_what_checks_out_of_the_partial_on_disk() {
        // The engine's rules are tested in verify.rs; this is the partial's
        // file going through it.
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = Partial::for_output(&dir.path().join("f"));
        let chunk = CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..3 * chunk + 10).map(|i| (i % 253) as u8).collect();
        let server = crate::verify::testing::states(&data);
        fs::write(&partial.data, &data[..2 * chunk + 100]).expect("write");
        let read = AtomicUsize::new(0);
        let count = |bytes: u64| {
            read.fetch_add(bytes as usize, Ordering::Relaxed);
        };
        let kept = partial.verify(&server, 2, &count).expect("verifies");
        assert_eq!(
            kept.offset,
            2 * CHUNK_SIZE,
            "a short partial keeps its whole chunks"
        );
        assert_eq!(kept.state, server[1]);
        assert_eq!(
            read.into_inner(),
            2 * chunk,
            "the progress hears of every byte read"
        );

        let mut corrupt = data.clone();
        corrupt[chunk + 5] ^= 1;
        fs::write(&partial.data, &corrupt).expect("write");
        let upto = partial.verify(&server, 2, &|_| {}).expect("verifies");
        assert_eq!(upto.offset, CHUNK_SIZE);
        partial.discard();
        assert!(
            partial.verify(&server, 2, &|_| {}).is_err(),
            "no partial: a local error"
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
