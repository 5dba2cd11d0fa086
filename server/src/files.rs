//! The served folder: opening files inside it and nowhere else, reading them,
//! and the digest cache. Everything here blocks; callers run it on tokio's
//! blocking threads, never on the async workers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use ft_protocol::{ChainHasher, Digest, ErrorCode, FileMeta, RemoteError, RemotePath};
use ft_protocol::{CHUNK_SIZE, MAX_DATA};
use tokio::sync::mpsc;

/// Checkpoint states the digest cache may hold in all, in bytes: 64 MiB covers
/// 8 TiB of files at one 32-byte state per 4 MiB chunk.
const CACHE_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// What identifies one version of a file for the digest cache: replacing the
/// file, or writing to it, changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl FileId {
    /// From the fields of a `stat`, whichever metadata type carried them.
    pub(crate) fn new(dev: u64, ino: u64, size: u64, mtime_secs: i64, mtime_nsec: i64) -> Self {
        Self {
            dev,
            ino,
            size,
            mtime_secs,
            // Always below 10^9, so it fits.
            mtime_nanos: mtime_nsec.clamp(0, 999_999_999) as u32,
        }
    }
}

/// A file's digest and its checkpoint states, computed in one pass.
#[derive(Debug)]
pub struct Digests {
    /// SHA-256 of the whole file.
    pub sha256: Digest,
    /// `checkpoints[k - 1]` is the chaining state at boundary `k`.
    pub checkpoints: Vec<Digest>,
}

/// One regular file, opened inside the root.
pub struct OpenFile {
    file: std::fs::File,
    id: FileId,
    path: RemotePath,
}

impl OpenFile {
    /// Its size when it was opened.
    pub fn size(&self) -> u64 {
        self.id.size
    }

    /// The open file, for the kernel to send from.
    pub fn std(&self) -> &std::fs::File {
        &self.file
    }
}

/// What the reader thread hands the connection, in order.
#[derive(Debug)]
pub enum Piece {
    /// File bytes.
    Data(Bytes),
    /// The state at a chunk boundary.
    Checkpoint {
        /// The boundary, 1-based.
        index: u64,
        /// The chaining state there.
        state: Digest,
    },
    /// Everything was sent; the digest of the whole file.
    End(Digest),
    /// The transfer cannot go on.
    Failed(RemoteError),
}

/// The root folder and the digest cache.
pub struct Files {
    pub(crate) root: Dir,
    cache: Mutex<Cache>,
    prefixes: Mutex<Prefixes>,
}

impl Files {
    /// Opens the folder to serve.
    pub fn open_root(path: &Path) -> io::Result<Self> {
        let root = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Self {
            root,
            cache: Mutex::new(Cache::default()),
            prefixes: Mutex::new(Prefixes::default()),
        })
    }

    /// Opens a regular file under the root. Resolution never leaves the root:
    /// cap-std resolves every component beneath it (openat2 with
    /// RESOLVE_BENEATH where the kernel has it), refusing `..` and symlinks
    /// that lead out, absolute ones included.
    pub fn open(&self, path: &RemotePath) -> Result<OpenFile, RemoteError> {
        let mut options = OpenOptions::new();
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
        // writer; on regular files it changes nothing.
        options.read(true).custom_flags(libc::O_NONBLOCK);
        let file = self
            .root
            .open_with(path.to_relative(), &options)
            .map_err(|err| open_error(&err, path))?
            .into_std();
        let metadata = file.metadata().map_err(|err| open_error(&err, path))?;
        if !metadata.is_file() {
            return Err(RemoteError::new(
                ErrorCode::NotAFile,
                format!("not a regular file: {}", path),
            ));
        }
        Ok(OpenFile {
            file,
            id: file_id(&metadata),
            path: path.clone(),
        })
    }

    /// The file's digests, if the cache has them.
    pub fn cached_digests(&self, file: &OpenFile) -> Option<Arc<Digests>> {
        self.cached(&file.id)
    }

    /// Fails with `FileChanged` if the file's size or modification time moved
    /// since it was opened.
    pub fn unchanged(&self, file: &OpenFile) -> Result<(), RemoteError> {
        check_unchanged(file)
    }

    /// The file's description, with its digest when the cache has it.
    pub fn meta(&self, file: &OpenFile) -> FileMeta {
        FileMeta {
            size: file.id.size,
            mtime_secs: file.id.mtime_secs,
            mtime_nanos: file.id.mtime_nanos,
            sha256: self.cached(&file.id).map(|d| d.sha256),
        }
    }

    pub(crate) fn cached(&self, id: &FileId) -> Option<Arc<Digests>> {
        self.cache.lock().ok()?.get(id)
    }

    fn remember(&self, id: FileId, digests: Digests) -> Arc<Digests> {
        if let Ok(mut prefixes) = self.prefixes.lock() {
            prefixes.forget(&id);
        }
        let digests = Arc::new(digests);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(id, Arc::clone(&digests));
        }
        digests
    }

    /// The file's digest and checkpoints: from the cache, or by reading it whole.
    pub fn digests(&self, file: &OpenFile) -> Result<Arc<Digests>, RemoteError> {
        if let Some(digests) = self.cached(&file.id) {
            return Ok(digests);
        }
        let mut pass = HashPass::new(None);
        let mut pos = 0;
        while pos < file.id.size {
            let data = read_piece(file, pos)?;
            pos += data.len() as u64;
            pass.feed(&data, pos);
        }
        check_unchanged(file)?;
        Ok(self.remember(file.id, pass.finish()))
    }

    /// A file of at most one piece, read whole, with its digest (cached or
    /// computed here and cached): the fast path for small files.
    pub fn read_whole(&self, file: &OpenFile) -> Result<(Bytes, Digest), RemoteError> {
        let data = if file.id.size == 0 {
            Bytes::new()
        } else {
            read_piece(file, 0)?
        };
        if data.len() as u64 != file.id.size {
            return Err(changed(file));
        }
        check_unchanged(file)?;
        let sha256 = match self.cached(&file.id) {
            Some(digests) => digests.sha256,
            None => {
                let mut pass = HashPass::new(None);
                pass.feed(&data, file.id.size);
                self.remember(file.id, pass.finish()).sha256
            }
        };
        Ok((data, sha256))
    }

    /// Sends the file from `offset` through `tx` as pieces, ending with `End`
    /// or `Failed`. A cold file is hashed in the same pass (from byte 0, even
    /// when sending starts later) and its digests are cached; a warm one is
    /// only read. Returns early, quietly, when the receiver is gone.
    pub fn stream(&self, file: OpenFile, offset: u64, tx: mpsc::Sender<Piece>) {
        let last = match self.produce(&file, offset, &tx) {
            Ok(Some(sha256)) => Piece::End(sha256),
            Ok(None) => return,
            Err(err) => Piece::Failed(err),
        };
        let _ = tx.blocking_send(last);
    }

    fn produce(
        &self,
        file: &OpenFile,
        offset: u64,
        tx: &mpsc::Sender<Piece>,
    ) -> Result<Option<Digest>, RemoteError> {
        let cached = self.cached(&file.id);
        // A warm file starts at the offset. A cold one must hash what comes
        // before it, from the last checkpoint an abandoned earlier pass left.
        let (mut pass, mut pos) = match &cached {
            Some(_) => (HashPass::new(cached.clone()), offset),
            None => self.resume_pass(&file.id, offset),
        };
        while pos < file.id.size {
            let data = read_piece(file, pos)?;
            let end = pos + data.len() as u64;
            let state = pass.feed(&data, end);
            if let (None, Some((index, state))) = (&cached, state) {
                // Recorded as it goes: a client whose link stalls reconnects
                // while this pass may still wait on the old connection.
                self.note_prefix(file.id, index, state);
            }
            let mut sent = true;
            if end > offset {
                sent = tx.blocking_send(Piece::Data(data)).is_ok();
                if let (true, Some((index, state))) = (sent, state) {
                    sent = tx.blocking_send(Piece::Checkpoint { index, state }).is_ok();
                }
            }
            if !sent {
                return Ok(None);
            }
            pos = end;
        }
        check_unchanged(file)?;
        let digests = match cached {
            Some(digests) => digests,
            None => self.remember(file.id, pass.finish()),
        };
        Ok(Some(digests.sha256))
    }

    /// A cold pass for a transfer from `offset`: from the start, or from the
    /// last checkpoint at or before `offset` that an abandoned pass recorded.
    fn resume_pass(&self, id: &FileId, offset: u64) -> (HashPass, u64) {
        let known = self
            .prefixes
            .lock()
            .ok()
            .and_then(|prefixes| prefixes.get(id).cloned())
            .unwrap_or_default();
        let usable = known.len().min((offset / CHUNK_SIZE) as usize);
        if usable > 0 {
            if let Some(pass) = HashPass::resume(known[..usable].to_vec()) {
                return (pass, usable as u64 * CHUNK_SIZE);
            }
        }
        (HashPass::new(None), 0)
    }

    fn note_prefix(&self, id: FileId, index: u64, state: Digest) {
        if let Ok(mut prefixes) = self.prefixes.lock() {
            prefixes.note(id, index, state);
        }
    }
}

/// One pass over a file: hashing it, or, when its digests are cached, looking
/// the checkpoints up instead.
struct HashPass {
    cached: Option<Arc<Digests>>,
    hasher: ChainHasher,
    checkpoints: Vec<Digest>,
}

impl HashPass {
    fn new(cached: Option<Arc<Digests>>) -> Self {
        Self {
            cached,
            hasher: ChainHasher::new(),
            checkpoints: Vec::new(),
        }
    }

    /// A cold pass that already has the states of the first
    /// `checkpoints.len()` chunks, continuing after them.
    fn resume(checkpoints: Vec<Digest>) -> Option<Self> {
        let last = checkpoints.last()?;
        let hasher = ChainHasher::resume(last, checkpoints.len() as u64 * CHUNK_SIZE)?;
        Some(Self {
            cached: None,
            hasher,
            checkpoints,
        })
    }

    /// Takes the bytes that end at `end`; returns the checkpoint if `end` is a
    /// chunk boundary. Pieces never straddle a boundary, so `end` is checked only.
    fn feed(&mut self, data: &[u8], end: u64) -> Option<(u64, Digest)> {
        if self.cached.is_none() {
            self.hasher.update(data);
        }
        if !end.is_multiple_of(CHUNK_SIZE) {
            return None;
        }
        let index = end / CHUNK_SIZE;
        let state = match &self.cached {
            Some(digests) => *digests.checkpoints.get(index as usize - 1)?,
            None => {
                // A boundary is a multiple of 64, where the state always exists.
                let state = self.hasher.state()?;
                self.checkpoints.push(state);
                state
            }
        };
        Some((index, state))
    }

    fn finish(self) -> Digests {
        Digests {
            sha256: self.hasher.finalize(),
            checkpoints: self.checkpoints,
        }
    }
}

/// Reads the piece of the file that starts at `pos`: up to `MAX_DATA` bytes,
/// never past a chunk boundary or the end. A short read means the file shrank.
/// The buffer is filled straight from the file, without zeroing it first.
fn read_piece(file: &OpenFile, pos: u64) -> Result<Bytes, RemoteError> {
    let to_boundary = CHUNK_SIZE - pos % CHUNK_SIZE;
    let len = (MAX_DATA as u64).min(to_boundary).min(file.id.size - pos) as usize;
    let failed = |err: io::Error| {
        RemoteError::new(
            ErrorCode::Internal,
            format!("cannot read {}: {err}", file.path),
        )
    };
    let mut reader = &file.file;
    reader.seek(SeekFrom::Start(pos)).map_err(failed)?;
    let mut buf = Vec::with_capacity(len);
    reader
        .take(len as u64)
        .read_to_end(&mut buf)
        .map_err(failed)?;
    if buf.len() != len {
        return Err(changed(file));
    }
    Ok(Bytes::from(buf))
}

/// Fails if the file's size or modification time moved since it was opened.
fn check_unchanged(file: &OpenFile) -> Result<(), RemoteError> {
    match file.file.metadata() {
        Ok(now) if file_id(&now) == file.id => Ok(()),
        _ => Err(changed(file)),
    }
}

fn changed(file: &OpenFile) -> RemoteError {
    RemoteError::new(
        ErrorCode::FileChanged,
        format!("{} changed while it was being read", file.path),
    )
}

fn file_id(metadata: &std::fs::Metadata) -> FileId {
    FileId::new(
        metadata.dev(),
        metadata.ino(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
    )
}

/// Maps a failure to open or inspect `path` onto the wire's error codes.
pub(crate) fn open_error(err: &io::Error, path: &RemotePath) -> RemoteError {
    let (code, message) = match (err.kind(), err.raw_os_error()) {
        (io::ErrorKind::NotFound | io::ErrorKind::NotADirectory, _) => {
            (ErrorCode::NotFound, format!("no such file: {path}"))
        }
        // cap-std reports an escape from the root as PermissionDenied with no OS
        // error behind it; a real EACCES carries errno.
        (io::ErrorKind::PermissionDenied, None) => (
            ErrorCode::InvalidPath,
            format!("{path} leads outside the served folder"),
        ),
        (io::ErrorKind::PermissionDenied, Some(_)) => (
            ErrorCode::PermissionDenied,
            format!("permission denied: {path}"),
        ),
        // Opening a Unix socket, or a device with no driver, fails so.
        (_, Some(libc::ENXIO | libc::ENODEV)) => {
            (ErrorCode::NotAFile, format!("not a regular file: {path}"))
        }
        (_, Some(libc::ELOOP | libc::ENAMETOOLONG)) => (
            ErrorCode::InvalidPath,
            format!("cannot resolve {path}: {err}"),
        ),
        _ => (ErrorCode::Internal, format!("cannot open {path}: {err}")),
    };
    RemoteError::new(code, message)
}

/// Checkpoint states of file prefixes that cold passes have hashed so far,
/// so that a client resuming after a dropped or stalled link does not wait
/// while they are hashed again; a few files' worth, oldest dropped first,
/// and dropped once the whole file's digests are cached.
#[derive(Default)]
struct Prefixes {
    states: HashMap<FileId, Vec<Digest>>,
    order: VecDeque<FileId>,
    bytes: usize,
}

/// Files whose prefix states are kept: 64 is a few flaky transfers at once.
const PREFIX_FILES: usize = 64;

/// Bytes of prefix states kept in all: 16 MiB covers 2 TiB of prefixes.
const PREFIX_BUDGET_BYTES: usize = 16 * 1024 * 1024;

impl Prefixes {
    fn get(&self, id: &FileId) -> Option<&Vec<Digest>> {
        self.states.get(id)
    }

    /// Records the state at boundary `index`, if it extends what is known.
    fn note(&mut self, id: FileId, index: u64, state: Digest) {
        let known = self.states.get(&id).map_or(0, Vec::len) as u64;
        if index != known + 1 {
            return;
        }
        if known == 0 {
            self.order.push_back(id);
        }
        self.states.entry(id).or_default().push(state);
        self.bytes += std::mem::size_of::<Digest>();
        while self.order.len() > PREFIX_FILES || self.bytes > PREFIX_BUDGET_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.forget(&oldest);
        }
    }

    fn forget(&mut self, id: &FileId) {
        if let Some(states) = self.states.remove(id) {
            self.bytes -= states.len() * std::mem::size_of::<Digest>();
        }
    }
}

/// Digests by file version, evicted oldest first past the byte budget.
#[derive(Default)]
struct Cache {
    entries: HashMap<FileId, Arc<Digests>>,
    order: VecDeque<FileId>,
    bytes: usize,
}

impl Cache {
    fn cost(digests: &Digests) -> usize {
        (digests.checkpoints.len() + 1) * std::mem::size_of::<Digest>() + 64
    }

    fn get(&self, id: &FileId) -> Option<Arc<Digests>> {
        self.entries.get(id).cloned()
    }

    fn insert(&mut self, id: FileId, digests: Arc<Digests>) {
        let cost = Self::cost(&digests);
        if cost > CACHE_BUDGET_BYTES {
            return;
        }
        if let Some(old) = self.entries.insert(id, digests) {
            self.bytes -= Self::cost(&old);
            self.order.retain(|other| other != &id);
        }
        self.order.push_back(id);
        self.bytes += cost;
        while self.bytes > CACHE_BUDGET_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.entries.remove(&oldest) {
                self.bytes -= Self::cost(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn files_in(dir: &tempfile::TempDir) -> Files {
        Files::open_root(dir.path()).expect("root opens")
    }

    fn code(result: Result<OpenFile, RemoteError>) -> ErrorCode {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(err) => err.code,
        }
    }

    fn path(text: &str) -> RemotePath {
        RemotePath::parse(text).expect("valid path")
    }

    #[test]
    fn opens_files_and_refuses_the_rest() {
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"s").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a.txt"), b"hello").expect("write");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("out"))
            .expect("symlink");
        std::os::unix::fs::symlink("../..", dir.path().join("sub/up")).expect("symlink");
        std::os::unix::fs::symlink("..", dir.path().join("sub/root")).expect("symlink");
        std::os::unix::fs::symlink("a.txt", dir.path().join("in")).expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("a.txt"), dir.path().join("abs-in"))
            .expect("symlink");
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).expect("symlink");
        let fifo = std::process::Command::new("mkfifo")
            .arg(dir.path().join("fifo"))
            .status()
            .expect("mkfifo runs");
        assert!(fifo.success());
        let files = files_in(&dir);

        assert_eq!(files.open(&path("a.txt")).expect("opens").id.size, 5);
        assert_eq!(
            files.open(&path("in")).expect("inner link opens").id.size,
            5
        );
        assert_eq!(code(files.open(&path("missing"))), ErrorCode::NotFound);
        assert_eq!(code(files.open(&path("a.txt/x"))), ErrorCode::NotFound);
        assert_eq!(code(files.open(&path("sub"))), ErrorCode::NotAFile);
        assert_eq!(code(files.open(&path(""))), ErrorCode::NotAFile);
        assert_eq!(code(files.open(&path("out"))), ErrorCode::InvalidPath);
        // Absolute links are refused even when they point inside the root.
        assert_eq!(code(files.open(&path("abs-in"))), ErrorCode::InvalidPath);
        assert_eq!(code(files.open(&path("loop"))), ErrorCode::InvalidPath);
        // Opening a FIFO with no writer must not block.
        assert_eq!(code(files.open(&path("fifo"))), ErrorCode::NotAFile);
        assert_eq!(
            code(files.open(&path("sub/up/a.txt"))),
            ErrorCode::InvalidPath
        );
    }

    #[test]
    fn digests_match_sha256_and_checkpoints_cover_whole_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(2 * CHUNK_SIZE + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(dir.path().join("f"), &data).expect("write");
        let files = files_in(&dir);
        let file = files.open(&path("f")).expect("opens");
        assert_eq!(files.meta(&file).sha256, None, "cold");
        let digests = files.digests(&file).expect("hashes");
        let mut reference = ChainHasher::new();
        reference.update(&data);
        assert_eq!(digests.sha256, reference.finalize());
        assert_eq!(digests.checkpoints.len(), 2);
        let mut first = ChainHasher::new();
        first.update(&data[..CHUNK_SIZE as usize]);
        assert_eq!(Some(digests.checkpoints[0]), first.state());
        assert_eq!(files.meta(&file).sha256, Some(digests.sha256), "warm");
    }

    #[test]
    fn cold_and_warm_streams_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(3 * CHUNK_SIZE + 7)).map(|i| (i % 13) as u8).collect();
        fs::write(dir.path().join("f"), &data).expect("write");
        let files = files_in(&dir);
        let collect = |offset: u64| {
            let (tx, mut rx) = mpsc::channel(1024);
            files.stream(files.open(&path("f")).expect("opens"), offset, tx);
            let mut pieces = Vec::new();
            while let Ok(piece) = rx.try_recv() {
                pieces.push(piece);
            }
            pieces
        };
        let summary = |pieces: Vec<Piece>| {
            let mut bytes = Vec::new();
            let mut marks = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Data(d) => bytes.extend_from_slice(&d),
                    Piece::Checkpoint { index, state } => marks.push((index, state)),
                    Piece::End(sha) => marks.push((u64::MAX, sha)),
                    Piece::Failed(err) => panic!("failed: {err}"),
                }
            }
            (bytes, marks)
        };
        let cold_from_middle = summary(collect(CHUNK_SIZE));
        let warm_from_middle = summary(collect(CHUNK_SIZE));
        assert_eq!(cold_from_middle, warm_from_middle);
        assert_eq!(cold_from_middle.0, &data[CHUNK_SIZE as usize..]);
        assert_eq!(cold_from_middle.1.first().map(|m| m.0), Some(2));
        let whole = summary(collect(0));
        assert_eq!(whole.0, data);
        assert_eq!(whole.1.len(), 4, "three checkpoints and the end");
    }

    #[test]
    fn an_abandoned_cold_pass_lets_the_resume_skip_its_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(4 * CHUNK_SIZE + 9)).map(|i| (i % 7) as u8).collect();
        fs::write(dir.path().join("f"), &data).expect("write");
        let files = files_in(&dir);
        // A client that takes 2 chunks' worth of pieces and leaves.
        let (tx, mut rx) = mpsc::channel(1);
        let file = files.open(&path("f")).expect("opens");
        let reader = std::thread::spawn({
            let files = Files::open_root(dir.path()).expect("root");
            move || {
                files.stream(file, 0, tx);
                files
            }
        });
        let mut taken = 0u64;
        while taken < 2 * CHUNK_SIZE {
            if let Some(Piece::Data(d)) = rx.blocking_recv() {
                taken += d.len() as u64;
            }
        }
        // Let the reader get a piece or two further, then leave.
        while rx.try_recv().is_ok() {}
        drop(rx);
        let files = reader.join().expect("reader ends");
        let id = files.open(&path("f")).expect("opens").id;
        let (_, pos) = files.resume_pass(&id, 3 * CHUNK_SIZE);
        assert!(pos >= 2 * CHUNK_SIZE, "resumes hashing at {pos}");
        let (_, pos) = files.resume_pass(&id, CHUNK_SIZE);
        assert_eq!(pos, CHUNK_SIZE, "never past the offset");
        // And the resumed stream is right.
        let (tx, mut rx) = mpsc::channel(1024);
        files.stream(files.open(&path("f")).expect("opens"), 3 * CHUNK_SIZE, tx);
        let mut bytes = Vec::new();
        let mut end = None;
        while let Ok(piece) = rx.try_recv() {
            match piece {
                Piece::Data(d) => bytes.extend_from_slice(&d),
                Piece::End(sha) => end = Some(sha),
                Piece::Checkpoint { .. } => {}
                Piece::Failed(err) => panic!("{err}"),
            }
        }
        assert_eq!(bytes, &data[3 * CHUNK_SIZE as usize..]);
        let mut whole = ChainHasher::new();
        whole.update(&data);
        assert_eq!(end, Some(whole.finalize()));
    }

    #[test]
    fn cache_evicts_oldest_past_budget() {
        let mut cache = Cache::default();
        let big = || {
            Arc::new(Digests {
                sha256: [0; 32],
                checkpoints: vec![[0; 32]; CACHE_BUDGET_BYTES / 32 / 2],
            })
        };
        let id = |ino| FileId {
            dev: 1,
            ino,
            size: 0,
            mtime_secs: 0,
            mtime_nanos: 0,
        };
        cache.insert(id(1), big());
        cache.insert(id(2), big());
        assert!(cache.get(&id(1)).is_none(), "oldest evicted");
        assert!(cache.get(&id(2)).is_some());
        assert!(cache.bytes <= CACHE_BUDGET_BYTES);
    }
}
