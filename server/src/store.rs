//! Files with their digests: a [`Backend`] and the caches, and the hashing
//! pass that fills them. A cold file is hashed in the same pass that sends
//! it (from byte 0, even when sending starts later), or whole when a digest
//! is asked for; a warm one is only read. Everything here blocks.

use std::sync::Arc;

use bytes::Bytes;
use ft_protocol::get::piece_len;
use ft_protocol::{ChainHasher, Digest, FileMeta, RemoteError, RemotePath, CHUNK_SIZE};
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::cache::{Caches, Digests};
use crate::limits::Limits;

/// What a sending pass hands the connection, in order.
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

/// A backend and what the server knows of its files' digests.
pub struct Store<B: Backend> {
    backend: B,
    caches: Caches<B::Version>,
}

impl<B: Backend> Store<B> {
    /// Serves `backend`, with caches as large as `limits` allow.
    pub fn new(backend: B, limits: &Limits) -> Self {
        Self {
            backend,
            caches: Caches::new(limits.digest_cache_bytes, limits.prefix_cache_bytes),
        }
    }

    /// The backend underneath.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Opens a regular file.
    pub fn open(&self, path: &RemotePath) -> Result<B::File, RemoteError> {
        self.backend.open(path)
    }

    /// The file's description, with its digest when it is known.
    pub fn meta(&self, file: &B::File) -> FileMeta {
        let stat = self.backend.stat(file);
        FileMeta {
            sha256: self.caches.digests(&stat.version).map(|d| d.sha256),
            ..stat.meta
        }
    }

    /// The file's digests, if they are known.
    pub fn cached(&self, file: &B::File) -> Option<Arc<Digests>> {
        self.caches.digests(&self.backend.stat(file).version)
    }

    /// The digests of the version `version`, if they are known.
    pub fn cached_version(&self, version: &B::Version) -> Option<Arc<Digests>> {
        self.caches.digests(version)
    }

    /// The file's digest and checkpoints: known already, or read whole here.
    pub fn digests(&self, file: &B::File) -> Result<Arc<Digests>, RemoteError> {
        if let Some(digests) = self.cached(file) {
            return Ok(digests);
        }
        let size = self.backend.stat(file).meta.size;
        let mut pass = HashPass::new(None);
        let mut pos = 0;
        while pos < size {
            let data = self.backend.read(file, pos, piece_len(pos, size))?;
            pos += data.len() as u64;
            pass.feed(&data, pos);
        }
        self.backend.unchanged(file)?;
        Ok(self.remember(file, pass.finish()))
    }

    /// A file of at most one piece, read whole, with its digest (known, or
    /// computed here and kept): the fast path for small files.
    pub fn read_whole(&self, file: &B::File) -> Result<(Bytes, Digest), RemoteError> {
        let size = self.backend.stat(file).meta.size;
        let data = match size {
            0 => Bytes::new(),
            _ => self.backend.read(file, 0, piece_len(0, size))?,
        };
        if data.len() as u64 != size {
            // Larger than a piece: not for this path. The caller checks.
            return Err(RemoteError::new(
                ft_protocol::ErrorCode::Internal,
                "a whole read of a file larger than one piece",
            ));
        }
        self.backend.unchanged(file)?;
        let sha256 = match self.cached(file) {
            Some(digests) => digests.sha256,
            None => {
                let mut pass = HashPass::new(None);
                pass.feed(&data, size);
                self.remember(file, pass.finish()).sha256
            }
        };
        Ok((data, sha256))
    }

    /// Whether the file is still the version it was opened at.
    pub fn unchanged(&self, file: &B::File) -> Result<(), RemoteError> {
        self.backend.unchanged(file)
    }

    /// Sends the file from `offset` through `tx` as pieces, ending with `End`
    /// or `Failed`. A cold file is hashed in the same pass and its digests
    /// kept; a warm one is only read. Returns early, quietly, when the
    /// receiver is gone.
    pub fn stream(&self, file: B::File, offset: u64, tx: mpsc::Sender<Piece>) {
        let last = match self.produce(&file, offset, &tx) {
            Ok(Some(sha256)) => Piece::End(sha256),
            Ok(None) => return,
            Err(err) => Piece::Failed(err),
        };
        let _ = tx.blocking_send(last);
    }

    fn produce(
        &self,
        file: &B::File,
        offset: u64,
        tx: &mpsc::Sender<Piece>,
    ) -> Result<Option<Digest>, RemoteError> {
        let stat = self.backend.stat(file);
        let size = stat.meta.size;
        let cached = self.caches.digests(&stat.version);
        // A warm file starts at the offset. A cold one must hash what comes
        // before it, from the last checkpoint an abandoned earlier pass left.
        let (mut pass, mut pos) = match &cached {
            Some(_) => (HashPass::new(cached.clone()), offset),
            None => self.resume_pass(&stat.version, offset),
        };
        while pos < size {
            let data = self.backend.read(file, pos, piece_len(pos, size))?;
            let end = pos + data.len() as u64;
            let state = pass.feed(&data, end);
            if let (None, Some((index, state))) = (&cached, state) {
                // Recorded as it goes: a client whose link stalls reconnects
                // while this pass may still wait on the old connection.
                self.caches.note_prefix(stat.version, size, index, state);
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
        self.backend.unchanged(file)?;
        let digests = match cached {
            Some(digests) => digests,
            None => self.caches.remember(stat.version, pass.finish()),
        };
        Ok(Some(digests.sha256))
    }

    /// A cold pass for a transfer from `offset`: from the start, or from the
    /// last checkpoint at or before `offset` that an abandoned pass recorded.
    fn resume_pass(&self, version: &B::Version, offset: u64) -> (HashPass, u64) {
        let mut known = self.caches.prefix(version);
        known.truncate((offset / CHUNK_SIZE) as usize);
        let usable = known.len() as u64;
        match HashPass::resume(known) {
            Some(pass) => (pass, usable * CHUNK_SIZE),
            None => (HashPass::new(None), 0),
        }
    }

    fn remember(&self, file: &B::File, digests: Digests) -> Arc<Digests> {
        self.caches
            .remember(self.backend.stat(file).version, digests)
    }
}

/// One pass over a file: hashing it, or, when its digests are known,
/// looking the checkpoints up instead.
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

    /// Takes the bytes that end at `end`; returns the checkpoint if `end` is
    /// a chunk boundary past the start (boundary 0 has none: it is the
    /// initial state). Pieces never straddle a boundary, so `end` is checked
    /// only.
    fn feed(&mut self, data: &[u8], end: u64) -> Option<(u64, Digest)> {
        if self.cached.is_none() {
            self.hasher.update(data);
        }
        if end == 0 || !end.is_multiple_of(CHUNK_SIZE) {
            return None;
        }
        let index = end / CHUNK_SIZE;
        let state = match &self.cached {
            Some(digests) => digests.checkpoint(index)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalFiles;
    use std::fs;

    fn store_in(dir: &tempfile::TempDir) -> Store<LocalFiles> {
        let files = LocalFiles::open_root(dir.path()).expect("root opens");
        Store::new(files, &Limits::default())
    }

    fn path(text: &str) -> RemotePath {
        RemotePath::parse(text).expect("valid path")
    }

    #[test]
    fn digests_match_sha256_and_checkpoints_cover_whole_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(2 * CHUNK_SIZE + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(dir.path().join("f"), &data).expect("write");
        let store = store_in(&dir);
        let file = store.open(&path("f")).expect("opens");
        assert_eq!(store.meta(&file).sha256, None, "cold");
        let digests = store.digests(&file).expect("hashes");
        let mut reference = ChainHasher::new();
        reference.update(&data);
        assert_eq!(digests.sha256, reference.finalize());
        assert_eq!(digests.checkpoints.len(), 2);
        let mut first = ChainHasher::new();
        first.update(&data[..CHUNK_SIZE as usize]);
        assert_eq!(Some(digests.checkpoints[0]), first.state());
        assert_eq!(store.meta(&file).sha256, Some(digests.sha256), "warm");
    }

    #[test]
    fn an_empty_file_has_a_digest_and_no_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("empty"), b"").expect("write");
        let store = store_in(&dir);
        // The small-file path hashes it first, then a digest request finds it warm.
        let file = store.open(&path("empty")).expect("opens");
        let (data, sha256) = store.read_whole(&file).expect("reads");
        assert!(data.is_empty());
        assert_eq!(sha256, ChainHasher::new().finalize());
        let digests = store.digests(&file).expect("known");
        assert!(digests.checkpoints.is_empty(), "{:?}", digests.checkpoints);
    }

    #[test]
    fn cold_and_warm_streams_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(3 * CHUNK_SIZE + 7)).map(|i| (i % 13) as u8).collect();
        fs::write(dir.path().join("f"), &data).expect("write");
        let store = store_in(&dir);
        let collect = |offset: u64| {
            let (tx, mut rx) = mpsc::channel(1024);
            store.stream(store.open(&path("f")).expect("opens"), offset, tx);
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
        let store = Arc::new(store_in(&dir));
        // A client that takes 2 chunks' worth of pieces and leaves.
        let (tx, mut rx) = mpsc::channel(1);
        let file = store.open(&path("f")).expect("opens");
        let reader = std::thread::spawn({
            let store = Arc::clone(&store);
            move || store.stream(file, 0, tx)
        });
        let mut taken = 0u64;
        while taken < 2 * CHUNK_SIZE {
            match rx.blocking_recv() {
                Some(Piece::Data(d)) => taken += d.len() as u64,
                Some(_) => {}
                None => panic!("the pass ended early"),
            }
        }
        // Let the reader get a piece or two further, then leave.
        while rx.try_recv().is_ok() {}
        drop(rx);
        reader.join().expect("reader ends");
        let version = store
            .backend()
            .stat(&store.open(&path("f")).expect("opens"))
            .version;
        let (_, pos) = store.resume_pass(&version, 3 * CHUNK_SIZE);
        assert!(pos >= 2 * CHUNK_SIZE, "resumes hashing at {pos}");
        let (_, pos) = store.resume_pass(&version, CHUNK_SIZE);
        assert_eq!(pos, CHUNK_SIZE, "never past the offset");
        // And the resumed stream is right.
        let (tx, mut rx) = mpsc::channel(1024);
        store.stream(store.open(&path("f")).expect("opens"), 3 * CHUNK_SIZE, tx);
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
}
