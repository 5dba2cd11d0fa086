//! The partial download beside the output: `NAME.part` holds the bytes,
//! `NAME.part.json` (the sidecar, written first) says which remote file
//! version they are, from which server, for which output, and that they are
//! ftget's. A name too long for those suffixes (past 245 bytes) gets hidden
//! ones instead, `.ftget-HASH.part` and `.ftget-HASH.part.json`, HASH
//! standing for the full name, which its sidecar records.
//!
//! Neither file is trusted for data: a resume re-reads the bytes and checks
//! them against the server's checkpoints before keeping any of them. The
//! sidecar is trusted for one thing: a partial is ftget's to replace or
//! remove only when a sidecar of ftget's beside it claims it for this
//! output. Anything else at those names is left alone and named in an
//! error. Every file is made, opened and removed through the [`Folder`],
//! never through a link.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;

use ft_protocol::{hash, ChainHasher, FileMeta};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::folder::{Folder, FolderError, Obstacle, Output, Use};

/// What a sidecar says it is, so that no other JSON file passes for one.
const SIDECAR_KIND: &str = "ftget partial download";

/// Sidecar format version, bumped if its fields change meaning.
const SIDECAR_FORMAT: u32 = 2;

/// The format before sidecars named their kind, output and server. Such a
/// sidecar is still ftget's, for the output its own name gives.
const SIDECAR_FORMAT_1: u32 = 1;

/// Longest file name, in bytes, on the file systems ftget writes to.
const NAME_MAX: usize = 255;

/// The suffixes of a partial and its sidecar, where they fit.
const DATA_SUFFIX: &str = ".part";
const SIDECAR_SUFFIX: &str = ".part.json";

/// How the hidden names of a long name's partial begin.
const HASHED_PREFIX: &str = ".ftget-";

/// Hex digits of the name's SHA-256 in a hidden name: 128 bits, no clash
/// by chance among the names of one folder.
const HASHED_DIGITS: usize = 32;

/// The most of a sidecar read: ftget's are a few hundred bytes.
const SIDECAR_MAX: u64 = 64 * 1024;

/// Where a download lives until it is verified.
#[derive(Debug, Clone)]
pub struct Partial {
    /// The final name.
    pub output: Output,
    /// The bytes so far.
    pub data: Output,
    /// What remote file version they are, and whose.
    pub sidecar: Output,
    /// Whether the names are the hidden ones of a long name.
    hashed: bool,
}

/// The sidecar's contents.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sidecar {
    #[serde(default)]
    kind: Option<String>,
    format: u32,
    /// The final file name (lossy where it is not UTF-8).
    #[serde(default)]
    output: Option<String>,
    /// The server, as the user named it.
    #[serde(default)]
    server: Option<String>,
    remote: String,
    size: u64,
    mtime_secs: i64,
    mtime_nanos: u32,
    sha256: Option<String>,
    /// The chunks on disk, verified when they were written, as runs
    /// `[first, end)`: a resume checks them again, and fetches the rest.
    /// Absent: the partial holds its chunks from the start, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks: Option<Vec<[u64; 2]>>,
}

/// A sidecar as ftget writes it: pretty JSON and a newline.
fn sidecar_text(sidecar: &Sidecar) -> io::Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(sidecar).map_err(io::Error::other)?;
    text.push(b'\n');
    Ok(text)
}

/// Whose the sidecar's place holds.
enum Claim {
    /// Nothing is there.
    Absent,
    /// A sidecar of ftget's for this output.
    Ours(Sidecar),
    /// A regular file that is not one.
    Foreign,
}

/// The names of `file`'s partial and sidecar: the suffixed ones where both
/// fit, the hidden hashed ones otherwise; and whether they are hashed.
pub fn partial_names(file: &OsStr) -> (OsString, OsString, bool) {
    if file.len() + SIDECAR_SUFFIX.len() <= NAME_MAX {
        let with = |suffix: &str| {
            let mut name = file.to_owned();
            name.push(suffix);
            name
        };
        return (with(DATA_SUFFIX), with(SIDECAR_SUFFIX), false);
    }
    let mut hasher = ChainHasher::new();
    hasher.update(file.as_bytes());
    let hex = hash::to_hex(&hasher.finalize());
    let stem = format!("{HASHED_PREFIX}{}", &hex[..HASHED_DIGITS]);
    let data = format!("{stem}{DATA_SUFFIX}");
    (data.into(), format!("{stem}{SIDECAR_SUFFIX}").into(), true)
}

/// The file whose suffixed partial or sidecar `file` is named as, if any
/// (`x` for `x.part` or `x.part.json`, not for names too long to have
/// them). The hidden names of long files cannot be read back.
pub fn suffixed_owner(file: &OsStr) -> Option<&OsStr> {
    let bytes = file.as_bytes();
    let stem = bytes
        .strip_suffix(DATA_SUFFIX.as_bytes())
        .or_else(|| bytes.strip_suffix(SIDECAR_SUFFIX.as_bytes()))
        .filter(|stem| !stem.is_empty())?;
    let owner = OsStr::from_bytes(stem);
    let (data, sidecar, _) = partial_names(owner);
    (data == file || sidecar == file).then_some(owner)
}

impl Partial {
    /// The partial files for `output`.
    pub fn for_output(output: &Output) -> Self {
        let file = output.name().file_name().unwrap_or_default();
        let (data, sidecar, hashed) = partial_names(file);
        let name = output.name();
        Self {
            output: output.clone(),
            data: output.beside(name.with_file_name(data)),
            sidecar: output.beside(name.with_file_name(sidecar)),
            hashed,
        }
    }

    fn folder(&self) -> &Folder {
        self.output.folder()
    }

    /// The final file name, as a sidecar records it.
    fn file_name(&self) -> String {
        let file = self.output.name().file_name().unwrap_or_default();
        file.to_string_lossy().into_owned()
    }

    /// Whether a sidecar of ftget's says the partial belongs to this
    /// version of `remote`, with the partial a file ftget may write.
    pub fn matches(&self, remote: &str, meta: &FileMeta) -> bool {
        let Ok(Claim::Ours(saved)) = self.claim() else {
            return false;
        };
        let saved_sha = saved.sha256.as_deref();
        let sha_agrees = match (saved_sha, meta.sha256) {
            (Some(saved), Some(now)) => saved == hash::to_hex(&now),
            _ => true,
        };
        let data = self.folder().lstat(self.data.name());
        saved.remote == remote
            && saved.size == meta.size
            && saved.mtime_secs == meta.mtime_secs
            && saved.mtime_nanos == meta.mtime_nanos
            && sha_agrees
            && matches!(data, Ok(Some(found)) if found.as_file(1).is_none())
    }

    /// Starts a fresh partial for this version of `remote` from `server`,
    /// after clearing an earlier one of ftget's: sidecar first, so a crash
    /// at any later moment leaves a partial a later run can tell is its own.
    pub fn begin(&self, server: &str, remote: &str, meta: &FileMeta) -> Result<(), Error> {
        self.clear()?;
        let sidecar = Sidecar {
            kind: Some(SIDECAR_KIND.to_owned()),
            format: SIDECAR_FORMAT,
            output: Some(self.file_name()),
            server: Some(server.to_owned()),
            remote: remote.to_owned(),
            size: meta.size,
            mtime_secs: meta.mtime_secs,
            mtime_nanos: meta.mtime_nanos,
            sha256: meta.sha256.as_ref().map(hash::to_hex),
            chunks: None,
        };
        let shown = self.sidecar.shown();
        let mut file = self.folder().create_new(self.sidecar.name())?;
        file.write_all(&sidecar_text(&sidecar).map_err(Error::local(&shown))?)
            .map_err(Error::local(&shown))?;
        self.folder().create_new(self.data.name())?;
        Ok(())
    }

    /// Whether a sidecar of ftget's for this output is there.
    pub fn is_ours(&self) -> bool {
        matches!(self.claim(), Ok(Claim::Ours(_)))
    }

    /// The chunk runs the sidecar records, if it records any.
    pub fn recorded_chunks(&self) -> Option<Vec<[u64; 2]>> {
        match self.claim() {
            Ok(Claim::Ours(saved)) => saved.chunks,
            _ => None,
        }
    }

    /// Records in the sidecar the chunk runs on disk: written beside it
    /// under a name of its own, then renamed over it, so that a crash
    /// leaves the old sidecar or the new one, never half of one.
    pub fn record_chunks(&self, runs: &[[u64; 2]]) -> Result<(), Error> {
        let Claim::Ours(mut saved) = self.claim()? else {
            return Ok(());
        };
        if saved.chunks.as_deref() == Some(runs) {
            return Ok(());
        }
        saved.chunks = Some(runs.to_vec());
        let next = self.output.name().with_file_name(self.next_sidecar_name());
        let shown = self.output.folder().shown(&next);
        let text = sidecar_text(&saved).map_err(Error::local(&shown))?;
        let _ = self.folder().remove(&next);
        let mut file = self.folder().create_new(&next)?;
        file.write_all(&text).map_err(Error::local(&shown))?;
        Ok(self.folder().rename(&next, self.sidecar.name())?)
    }

    /// The name a new sidecar is written under before it replaces the old:
    /// hidden, and short enough for any output name.
    fn next_sidecar_name(&self) -> OsString {
        let mut hasher = ChainHasher::new();
        hasher.update(self.file_name().as_bytes());
        let hex = hash::to_hex(&hasher.finalize());
        format!("{HASHED_PREFIX}{}.part.json.new", &hex[..HASHED_DIGITS]).into()
    }

    /// Opens the partial for writing anywhere, keeping what it holds.
    pub fn open_rw(&self) -> Result<File, Error> {
        Ok(self
            .folder()
            .open_existing(self.data.name(), Use::Partial)?)
    }

    /// Opens the partial for writing at `offset`, keeping what it holds.
    pub fn open_from(&self, offset: u64) -> Result<File, Error> {
        let mut file = self.open_rw()?;
        file.seek(SeekFrom::Start(offset))
            .map_err(Error::local(self.data.shown()))?;
        Ok(file)
    }

    /// Which of `candidates` (chunk indices) of the partial check out
    /// against the server's `table`, read and hashed on `threads` threads.
    /// `checked` hears of the bytes as they are read.
    pub(crate) fn check_chunks(
        &self,
        table: &super::swarm::Table,
        candidates: &[u64],
        threads: usize,
        checked: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<u64>, Error> {
        let file = self.open_rw()?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let shown = self.data.shown();
        let results = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| {
                        let mut good = Vec::new();
                        loop {
                            let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&k) = candidates.get(at) else {
                                return Ok(good);
                            };
                            if table.check_on_disk(&file, k)? {
                                good.push(k);
                            }
                            let (start, end) = super::chunks::bytes(k, table.meta.size);
                            checked(end - start);
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| {
                    worker
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("a hashing thread panicked")))
                })
                .collect::<Vec<io::Result<Vec<u64>>>>()
        });
        let mut good = Vec::new();
        for result in results {
            good.extend(result.map_err(Error::local(&shown))?);
        }
        good.sort_unstable();
        Ok(good)
    }

    /// Creates the partial fresh, for a file written whole in one go (no
    /// sidecar: it never outlives the call that writes it).
    pub fn create(&self) -> Result<File, FolderError> {
        self.folder().create_new(self.data.name())
    }

    /// Bytes in the partial now; 0 when there is none (or no file).
    pub fn bytes_on_disk(&self) -> u64 {
        match self.folder().lstat(self.data.name()) {
            Ok(Some(found)) if found.as_file(1).is_none() => found.len,
            _ => 0,
        }
    }

    /// Gives the verified partial its final name, in one atomic rename, and
    /// removes the sidecar.
    pub fn finish(&self) -> Result<(), Error> {
        self.rename()?;
        if let Ok(Claim::Ours(_)) = self.claim() {
            let _ = self.folder().remove(self.sidecar.name());
        }
        Ok(())
    }

    /// Gives the verified partial its final name, in one atomic rename: for
    /// a file written whole, which has no sidecar.
    pub fn rename(&self) -> Result<(), Error> {
        let folder = self.folder();
        Ok(folder.rename(self.data.name(), self.output.name())?)
    }

    /// Removes the partial and its sidecar when the sidecar is ftget's and
    /// says they came from this `remote` path on this `server`; anything
    /// else is left as it is.
    pub fn discard(&self, server: &str, remote: &str) {
        let Ok(Claim::Ours(saved)) = self.claim() else {
            return;
        };
        if saved.server.as_deref() != Some(server) || saved.remote != remote {
            return;
        }
        let removed = match self.folder().lstat(self.data.name()) {
            Ok(None) => true,
            Ok(Some(found)) if found.as_file(1).is_none() => {
                self.folder().remove(self.data.name()).is_ok()
            }
            _ => false,
        };
        // A sidecar goes only with its partial: a partial left without one
        // would be refused by every later run.
        if removed {
            let _ = self.folder().remove(self.sidecar.name());
        }
    }

    /// Clears the way for a fresh partial: removes an earlier one of
    /// ftget's for this output; anything else in the way is an error that
    /// names it, and nothing is touched.
    fn clear(&self) -> Result<(), Error> {
        let claim = self.claim()?;
        let ours = matches!(claim, Claim::Ours(_));
        if let Some(found) = self.folder().lstat(self.data.name())? {
            let obstacle = match found.as_file(1) {
                Some(what) => Some(what),
                None if !ours => Some(Obstacle::NotOurs),
                None => None,
            };
            if let Some(what) = obstacle {
                return Err(self.in_the_way(&self.data, what));
            }
        }
        if let Claim::Foreign = claim {
            return Err(self.in_the_way(&self.sidecar, Obstacle::NotOurs));
        }
        self.folder().remove(self.data.name())?;
        self.folder().remove(self.sidecar.name())?;
        Ok(())
    }

    /// Whose the sidecar's place holds. Anything there but a regular file
    /// of one name is an error that names it.
    fn claim(&self) -> Result<Claim, Error> {
        let folder = self.folder();
        let Some(found) = folder.lstat(self.sidecar.name())? else {
            return Ok(Claim::Absent);
        };
        if let Some(what) = found.as_file(1) {
            return Err(self.in_the_way(&self.sidecar, what));
        }
        let file = folder.open_existing(self.sidecar.name(), Use::Read)?;
        let mut text = String::new();
        if file.take(SIDECAR_MAX).read_to_string(&mut text).is_err() {
            return Ok(Claim::Foreign);
        }
        match serde_json::from_str::<Sidecar>(&text) {
            Ok(saved) if self.claimed_by(&saved) => Ok(Claim::Ours(saved)),
            _ => Ok(Claim::Foreign),
        }
    }

    /// Whether `saved` is a sidecar of ftget's for this output.
    fn claimed_by(&self, saved: &Sidecar) -> bool {
        match saved.format {
            SIDECAR_FORMAT => {
                saved.kind.as_deref() == Some(SIDECAR_KIND)
                    && saved.output.as_deref() == Some(self.file_name().as_str())
            }
            // Its place, NAME.part.json, was the only name it had.
            SIDECAR_FORMAT_1 => !self.hashed,
            _ => false,
        }
    }

    fn in_the_way(&self, at: &Output, what: Obstacle) -> Error {
        Error::InTheWay {
            path: at.shown(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ft_protocol::CHUNK_SIZE;
    use std::fs;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            size,
            mtime_secs: 1_700_000_000,
            mtime_nanos: 42,
            sha256: None,
        }
    }

    /// A partial for `name` in a fresh folder, and that folder's path.
    fn partial_in(dir: &tempfile::TempDir, name: &str) -> (Partial, PathBuf) {
        let folder = Arc::new(Folder::new(dir.path(), false));
        let output = Output::new(&folder, name);
        (Partial::for_output(&output), dir.path().to_owned())
    }

    fn in_the_way(result: Result<(), Error>) -> (PathBuf, Obstacle) {
        match result {
            Err(Error::InTheWay { path, what }) => (path, what),
            other => panic!("expected something in the way, got {other:?}"),
        }
    }

    #[test]
    fn sidecar_identifies_the_remote_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, at) = partial_in(&dir, "f.bin");
        assert_eq!(partial.data.shown(), at.join("f.bin.part"));
        assert!(!partial.matches("f.bin", &meta(10)), "nothing on disk yet");
        partial.begin("h:1", "f.bin", &meta(10)).expect("begins");
        assert!(partial.matches("f.bin", &meta(10)));
        assert!(!partial.matches("g.bin", &meta(10)));
        assert!(!partial.matches("f.bin", &meta(11)));
        let mut touched = meta(10);
        touched.mtime_nanos += 1;
        assert!(!partial.matches("f.bin", &touched));
        let saved: serde_json::Value =
            serde_json::from_slice(&fs::read(partial.sidecar.shown()).expect("read"))
                .expect("json");
        assert_eq!(saved["kind"], SIDECAR_KIND);
        assert_eq!(saved["output"], "f.bin");
        assert_eq!(saved["server"], "h:1");
        fs::write(partial.sidecar.shown(), "{ not json").expect("write");
        assert!(
            !partial.matches("f.bin", &meta(10)),
            "a torn sidecar is no sidecar of ours"
        );
    }

    #[test]
    fn a_sidecar_of_the_first_format_is_still_resumed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, _) = partial_in(&dir, "f.bin");
        let old = r#"{"format":1,"remote":"f.bin","size":10,"mtime_secs":1700000000,"mtime_nanos":42,"sha256":null}"#;
        fs::write(partial.sidecar.shown(), old).expect("write");
        fs::write(partial.data.shown(), b"0123").expect("write");
        assert!(partial.matches("f.bin", &meta(10)));
        partial
            .begin("h:1", "f.bin", &meta(10))
            .expect("replaces it");
    }

    #[test]
    fn only_a_partial_of_ours_for_this_output_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, at) = partial_in(&dir, "notes.txt");
        fs::write(at.join("notes.txt.part"), b"mine").expect("write");
        assert_eq!(
            in_the_way(partial.begin("h:1", "notes.txt", &meta(10))),
            (at.join("notes.txt.part"), Obstacle::NotOurs)
        );
        fs::write(at.join("notes.txt.part.json"), br#"{"mine":true}"#).expect("write");
        assert_eq!(
            in_the_way(partial.begin("h:1", "notes.txt", &meta(10))),
            (at.join("notes.txt.part"), Obstacle::NotOurs)
        );
        fs::remove_file(at.join("notes.txt.part")).expect("rm");
        assert_eq!(
            in_the_way(partial.begin("h:1", "notes.txt", &meta(10))),
            (at.join("notes.txt.part.json"), Obstacle::NotOurs)
        );
        assert_eq!(
            fs::read(at.join("notes.txt.part.json")).expect("kept"),
            br#"{"mine":true}"#
        );

        // Another output's sidecar, moved here, does not claim this one.
        let (other, _) = partial_in(&dir, "other.txt");
        other.begin("h:1", "other.txt", &meta(10)).expect("begins");
        fs::rename(other.sidecar.shown(), partial.sidecar.shown()).expect("mv");
        fs::write(partial.data.shown(), b"x").expect("write");
        assert_eq!(
            in_the_way(partial.begin("h:1", "notes.txt", &meta(10))).1,
            Obstacle::NotOurs
        );

        // Ours is replaced.
        fs::remove_file(partial.sidecar.shown()).expect("rm");
        fs::remove_file(partial.data.shown()).expect("rm");
        partial
            .begin("h:1", "notes.txt", &meta(10))
            .expect("begins");
        fs::write(partial.data.shown(), b"old bytes").expect("write");
        partial.begin("h:1", "notes.txt", &meta(12)).expect("again");
        assert_eq!(partial.bytes_on_disk(), 0, "started fresh");
    }

    #[test]
    fn links_and_special_files_at_the_partial_are_named_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("secret");
        fs::write(&secret, b"keep").expect("write");
        let (partial, at) = partial_in(&dir, "x");
        std::os::unix::fs::symlink(&secret, at.join("x.part")).expect("symlink");
        assert_eq!(
            in_the_way(partial.begin("h", "x", &meta(10))),
            (at.join("x.part"), Obstacle::Symlink)
        );
        assert!(partial.open_rw().is_err());
        fs::remove_file(at.join("x.part")).expect("rm");
        std::os::unix::fs::symlink(&secret, at.join("x.part.json")).expect("symlink");
        assert_eq!(
            in_the_way(partial.begin("h", "x", &meta(10))),
            (at.join("x.part.json"), Obstacle::Symlink)
        );
        fs::remove_file(at.join("x.part.json")).expect("rm");
        fs::hard_link(&secret, at.join("x.part")).expect("link");
        assert_eq!(
            in_the_way(partial.begin("h", "x", &meta(10))).1,
            Obstacle::HardLinked { links: 2 }
        );
        assert!(partial.open_rw().is_err());
        assert_eq!(fs::read(&secret).expect("read"), b"keep");
    }

    #[test]
    fn only_our_partial_of_this_file_from_this_server_is_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, at) = partial_in(&dir, "notes.txt");
        fs::write(at.join("notes.txt.part"), b"mine").expect("write");
        fs::write(at.join("notes.txt.part.json"), b"{}").expect("write");
        partial.discard("h:1", "notes.txt");
        assert!(at.join("notes.txt.part").exists() && at.join("notes.txt.part.json").exists());
        fs::remove_file(at.join("notes.txt.part")).expect("rm");
        fs::remove_file(at.join("notes.txt.part.json")).expect("rm");

        partial
            .begin("h:1", "docs/notes.txt", &meta(10))
            .expect("begins");
        partial.discard("h:2", "docs/notes.txt");
        partial.discard("h:1", "notes.txt");
        assert!(
            at.join("notes.txt.part").exists(),
            "another server's or path's: kept"
        );
        partial.discard("h:1", "docs/notes.txt");
        assert!(!at.join("notes.txt.part").exists() && !at.join("notes.txt.part.json").exists());
    }

    #[test]
    fn long_names_get_hidden_hashed_partials_that_record_the_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fits = "f".repeat(NAME_MAX - SIDECAR_SUFFIX.len());
        let (partial, at) = partial_in(&dir, &fits);
        assert_eq!(
            partial.sidecar.shown(),
            at.join(format!("{fits}.part.json"))
        );
        for len in [NAME_MAX - SIDECAR_SUFFIX.len() + 1, 250, NAME_MAX] {
            let long = "g".repeat(len);
            let (partial, _) = partial_in(&dir, &long);
            let data = partial.data.name().to_string_lossy().into_owned();
            assert!(
                data.starts_with(HASHED_PREFIX) && data.ends_with(".part"),
                "{data}"
            );
            partial.begin("h", &long, &meta(10)).expect("begins");
            assert!(partial.matches(&long, &meta(10)));
            let saved: serde_json::Value =
                serde_json::from_slice(&fs::read(partial.sidecar.shown()).expect("read"))
                    .expect("json");
            assert_eq!(saved["output"], long.as_str());
            fs::write(partial.data.shown(), b"ok").expect("write");
            partial.finish().expect("renamed");
            assert_eq!(fs::read(at.join(&long)).expect("final"), b"ok");
        }
        let (a, _, _) = partial_names(OsStr::new(&"a".repeat(250)));
        let (b, _, _) = partial_names(OsStr::new(&"b".repeat(250)));
        assert_ne!(a, b, "each long name has its own");
    }

    #[test]
    fn only_suffixed_partial_names_read_back_to_their_file() {
        let owner = |name: &str| suffixed_owner(OsStr::new(name)).map(OsStr::to_owned);
        assert_eq!(owner("x.part"), Some("x".into()));
        assert_eq!(owner("x.part.json"), Some("x".into()));
        assert_eq!(owner("x.part.part"), Some("x.part".into()));
        assert_eq!(owner(".part"), None);
        assert_eq!(owner("x.json"), None);
        let long = "l".repeat(250);
        assert_eq!(
            owner(&format!("{long}.part")),
            None,
            "its partial is hidden"
        );
    }

    #[test]
    fn only_the_chunks_that_check_out_are_kept_wherever_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, _) = partial_in(&dir, "f");
        let chunk = CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..4 * chunk + 10).map(|i| (i % 253) as u8).collect();
        let meta = meta(data.len() as u64);
        let table = super::super::swarm::Table::new(
            meta,
            crate::verify::testing::sha256(&data),
            crate::verify::testing::states(&data),
        );
        let mut on_disk = data.clone();
        on_disk[chunk + 5] ^= 1; // chunk 1 damaged
        on_disk[2 * chunk..3 * chunk].fill(0); // chunk 2 a hole
        fs::write(partial.data.shown(), &on_disk).expect("write");
        let read = AtomicUsize::new(0);
        let count = |bytes: u64| {
            read.fetch_add(bytes as usize, Ordering::Relaxed);
        };
        let good = partial
            .check_chunks(&table, &[0, 1, 2, 3, 4], 2, &count)
            .expect("checks");
        assert_eq!(
            good,
            vec![0, 3, 4],
            "the short last chunk against the digest"
        );
        assert_eq!(read.into_inner(), data.len(), "every byte read is heard of");
        fs::remove_file(partial.data.shown()).expect("rm");
        assert!(partial.check_chunks(&table, &[0], 2, &|_| {}).is_err());
    }

    #[test]
    fn the_sidecar_records_chunks_by_replacing_itself_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, at) = partial_in(&dir, "f.bin");
        assert!(!partial.is_ours());
        partial
            .record_chunks(&[[0, 1]])
            .expect("nothing to record into");
        partial.begin("h:1", "f.bin", &meta(10)).expect("begins");
        assert!(partial.is_ours());
        assert_eq!(
            partial.recorded_chunks(),
            None,
            "a fresh partial: from the start"
        );
        partial.record_chunks(&[[0, 2], [5, 7]]).expect("records");
        assert_eq!(partial.recorded_chunks(), Some(vec![[0, 2], [5, 7]]));
        assert!(
            partial.matches("f.bin", &meta(10)),
            "still the same version"
        );
        let names: Vec<_> = fs::read_dir(&at)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "no leftover beside them: {names:?}");
    }
}
