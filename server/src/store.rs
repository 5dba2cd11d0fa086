//! Files with their digests: a [`Backend`], the caches, and the shared
//! hashing passes that fill them ([`crate::hashing`]). A small file is
//! hashed as it is read whole; any other cold file by a pass that requests
//! wait on. Everything here blocks except [`Store::digesting`], which starts
//! a pass on the runtime.

use std::sync::Arc;

use bytes::Bytes;
use ft_protocol::get::piece_len;
use ft_protocol::{ChainHasher, Digest, ErrorCode, FileMeta, RemoteError, RemotePath};

use crate::backend::{Backend, Stat};
use crate::cache::{Caches, Digests};
use crate::hashing::{Digesting, Passes, Source};
use crate::limits::Limits;

/// A backend and what the server knows of its files' digests.
pub struct Store<B: Backend> {
    backend: Arc<B>,
    caches: Arc<Caches<B::Version>>,
    passes: Arc<Passes<B::Version>>,
}

impl<B: Backend> Store<B> {
    /// Serves `backend`, with caches and hashing as large as `limits` allow.
    pub fn new(backend: B, limits: &Limits) -> Self {
        let caches = Arc::new(Caches::new(
            limits.digest_cache_bytes,
            limits.prefix_cache_bytes,
        ));
        Self {
            backend: Arc::new(backend),
            passes: Arc::new(Passes::new(
                limits.max_hashing,
                limits.ride_bytes,
                Arc::clone(&caches),
            )),
            caches,
        }
    }

    /// The backend underneath.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Opens a regular file at `path`, resolved within the folder `within`
    /// (see [`Backend::open`]).
    pub fn open(&self, within: &RemotePath, path: &RemotePath) -> Result<B::File, RemoteError> {
        self.backend.open(within, path)
    }

    /// [`Store::open`], for reads that start at byte `from` (see
    /// [`Backend::open_at`]).
    pub fn open_at(
        &self,
        within: &RemotePath,
        path: &RemotePath,
        from: u64,
    ) -> Result<B::File, RemoteError> {
        self.backend.open_at(within, path, from)
    }

    /// The file's description, with its digest when it is known (see
    /// [`Store::known`]).
    pub fn meta(&self, file: &B::File) -> FileMeta {
        let stat = self.backend.stat(file);
        FileMeta {
            sha256: self.known(&stat.version).map(|d| d.sha256),
            ..stat.meta
        }
    }

    /// The digests of the version `version`, if this server has them.
    pub fn cached_version(&self, version: &B::Version) -> Option<Arc<Digests>> {
        self.caches.digests(version)
    }

    /// The digests of the version `version`, if they are known: to this
    /// server, or kept beside the file by the backend (then remembered).
    pub fn known(&self, version: &B::Version) -> Option<Arc<Digests>> {
        if let Some(digests) = self.caches.digests(version) {
            return Some(digests);
        }
        let stored = self.backend.stored_digests(version)?;
        Some(self.caches.remember(*version, stored))
    }

    /// The digests of the file at `path` as it was at `stat`: known, or
    /// from the pass over that version (joined, or started here, and then
    /// ridden from chunk `ride_from` if given). Must be called within the
    /// runtime; waiting on it is async.
    pub fn digesting(
        &self,
        path: &RemotePath,
        stat: Stat<B::Version>,
        ride_from: Option<u64>,
    ) -> Digesting {
        if let Some(digests) = self.caches.digests(&stat.version) {
            return Digesting::known(digests);
        }
        let backend = Arc::clone(&self.backend);
        let path = path.clone();
        let open = move || FileSource::open(backend, &path, stat.version);
        self.passes
            .join(stat.version, stat.meta.size, ride_from, open)
    }

    /// Hashing passes running now.
    #[cfg(test)]
    pub fn passes_running(&self) -> usize {
        self.passes.running()
    }

    /// A file of at most one piece, read whole, with its digest (known, or
    /// computed here and kept): the fast path for small files.
    pub fn read_whole(&self, file: &B::File) -> Result<(Bytes, Digest), RemoteError> {
        let stat = self.backend.stat(file);
        let size = stat.meta.size;
        let data = match size {
            0 => Bytes::new(),
            _ => self.backend.read(file, 0, piece_len(0, size))?,
        };
        if data.len() as u64 != size {
            // Larger than a piece: not for this path. The caller checks.
            return Err(RemoteError::new(
                ErrorCode::Internal,
                "a whole read of a file larger than one piece",
            ));
        }
        self.backend.unchanged(file)?;
        if let Some(digests) = self.caches.digests(&stat.version) {
            return Ok((data, digests.sha256));
        }
        let mut hasher = ChainHasher::new();
        hasher.update(&data);
        let digests = Digests {
            sha256: hasher.finalize(),
            checkpoints: Vec::new(),
        };
        Ok((data, self.caches.remember(stat.version, digests).sha256))
    }

    /// Whether the file is still the version it was opened at.
    pub fn unchanged(&self, file: &B::File) -> Result<(), RemoteError> {
        self.backend.unchanged(file)
    }
}

/// A file version as a hashing pass reads it: opened anew by the pass, and
/// refused if it is no longer the version the request saw.
struct FileSource<B: Backend> {
    backend: Arc<B>,
    file: B::File,
}

impl<B: Backend> FileSource<B> {
    /// The pass opens by the whole path, beneath the root: the version check
    /// makes sure it is the very file the request opened, however that
    /// request's scope resolved it.
    fn open(backend: Arc<B>, path: &RemotePath, version: B::Version) -> Result<Self, RemoteError> {
        let file = backend.open(&RemotePath::root(), path)?;
        if backend.stat(&file).version != version {
            return Err(RemoteError::new(
                ErrorCode::FileChanged,
                format!("{path} changed while it was being read"),
            ));
        }
        Ok(Self { backend, file })
    }
}

impl<B: Backend> Source for FileSource<B> {
    fn read(&mut self, pos: u64, len: usize) -> Result<Bytes, RemoteError> {
        self.backend.read(&self.file, pos, len)
    }

    fn unchanged(&self) -> Result<(), RemoteError> {
        self.backend.unchanged(&self.file)
    }

    fn keep(&self, digests: &Digests) {
        let version = self.backend.stat(&self.file).version;
        self.backend.store_digests(&version, digests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalFiles;
    use ft_protocol::CHUNK_SIZE;
    use std::fs;

    fn store_in(dir: &tempfile::TempDir) -> Store<LocalFiles> {
        let files = LocalFiles::open_root(dir.path()).expect("root opens");
        Store::new(files, &Limits::default())
    }

    fn path(text: &str) -> RemotePath {
        RemotePath::parse(text).expect("valid path")
    }

    fn sha256(data: &[u8]) -> Digest {
        let mut hasher = ChainHasher::new();
        hasher.update(data);
        hasher.finalize()
    }

    #[tokio::test]
    async fn digests_match_sha256_and_checkpoints_cover_whole_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(2 * CHUNK_SIZE + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(dir.path().join("f"), &data).expect("write");
        let store = store_in(&dir);
        let file = store.open(&RemotePath::root(), &path("f")).expect("opens");
        assert_eq!(store.meta(&file).sha256, None, "cold");
        let mut digesting = store.digesting(&path("f"), store.backend().stat(&file), None);
        let first = digesting.state(1).await.expect("boundary 1");
        let digests = digesting.digests().await.expect("hashes");
        assert_eq!(digests.sha256, sha256(&data));
        assert_eq!(digests.checkpoints.len(), 2);
        let mut reference = ChainHasher::new();
        reference.update(&data[..CHUNK_SIZE as usize]);
        assert_eq!(Some(first), reference.state());
        assert_eq!(Some(digests.checkpoints[0]), reference.state());
        assert_eq!(store.meta(&file).sha256, Some(digests.sha256), "warm");
        assert_eq!(store.passes_running(), 0, "the pass is over");
    }

    #[tokio::test]
    async fn an_empty_file_has_a_digest_and_no_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("empty"), b"").expect("write");
        let store = store_in(&dir);
        let file = store
            .open(&RemotePath::root(), &path("empty"))
            .expect("opens");
        let (data, digest) = store.read_whole(&file).expect("reads");
        assert!(data.is_empty());
        assert_eq!(digest, sha256(b""));
        let mut digesting = store.digesting(&path("empty"), store.backend().stat(&file), None);
        let digests = digesting.digests().await.expect("known");
        assert!(digests.checkpoints.is_empty(), "{:?}", digests.checkpoints);
        assert_eq!(digests.sha256, digest);
    }

    #[tokio::test]
    async fn a_file_replaced_before_its_pass_opens_it_is_file_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), vec![1u8; 1000]).expect("write");
        let store = store_in(&dir);
        let file = store.open(&RemotePath::root(), &path("f")).expect("opens");
        let stat = store.backend().stat(&file);
        fs::remove_file(dir.path().join("f")).expect("remove");
        fs::write(dir.path().join("f"), vec![2u8; 1001]).expect("write");
        let mut digesting = store.digesting(&path("f"), stat, None);
        let err = digesting.digests().await.expect_err("changed");
        assert_eq!(err.code, ErrorCode::FileChanged);
    }
}
