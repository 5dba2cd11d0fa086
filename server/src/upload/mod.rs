//! Uploads into the served folder: each lives as a partial in the
//! partials' folder (`place::PARTIALS`), named by what it is (path, size,
//! SHA-256), with a state file beside it that records, per chunk, the
//! states its sender gave and whether the chunk is on disk verified. A
//! partial is re-checked from disk when a server first opens it again, so
//! a resume never trusts what a crash may have left. Once every chunk is
//! stored and their states chain into the file's SHA-256, the partial is
//! synced and renamed to its name. Everything here blocks; `ops::put`
//! drives it from a connection.

pub(crate) mod place;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ft_protocol::put::{chunk_len, chunks, ChunkCheck};
use ft_protocol::{Digest, ErrorCode, FileMeta, RemoteError, RemotePath, CHUNK_SIZE};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::{Digest as _, Sha256};

use place::{Found, PARTIALS};

/// What a state file starts with: its format, then the upload's size and
/// the client's name for its version.
const MAGIC: &[u8; 8] = b"ftpart01";
const HEADER: u64 = 64;
/// One slot per chunk: a flag byte (1: stored and verified), 7 spare
/// bytes, the start state and the end state.
const SLOT: u64 = 72;

/// Room left free on the file system besides an upload: 1 % of it, at
/// most 1 GiB, so an upload never fills a disk to its last block.
const MARGIN_MAX: u64 = 1 << 30;

/// Runs `[first, end)` of the chunks an upload holds.
pub(crate) type Held = Vec<(u64, u64)>;

/// Uploads kept open at once: each holds two descriptors and a byte per
/// chunk. Past it, those no connection is using are closed.
const MAX_OPEN: usize = 1024;

/// The server's settings for uploads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest upload accepted, in bytes.
    pub max_size: Option<u64>,
    /// Partials untouched this long are removed.
    pub ttl: Duration,
}

/// The uploads of one served folder: where they land, and those open now.
pub(crate) struct Uploads {
    root: OwnedFd,
    partials: OwnedFd,
    settings: Settings,
    open: Mutex<HashMap<[u8; 32], Arc<Upload>>>,
    /// Uploads taken whole so far: each one's partial gets its own name.
    wholes: AtomicU64,
}

/// What one upload asks for.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub path: RemotePath,
    pub size: u64,
    /// What the client calls this version of its file.
    pub version: Digest,
    pub mtime: (i64, u32),
    pub overwrite: bool,
    /// Whether the client may replace a file.
    pub may_replace: bool,
}

/// The answers to a whole small upload's `Put`, `Chunk` and `Commit`.
pub(crate) struct Whole {
    pub put: Result<Held, RemoteError>,
    pub chunk: Option<Result<(), RemoteError>>,
    pub commit: Result<FileMeta, RemoteError>,
}

/// Where a chunk stands in an open upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    /// A connection is writing it now, under the claim with this number.
    Writing(u64),
    Stored,
}

/// One upload open on this server.
pub(crate) struct Upload {
    key: String,
    pub path: RemotePath,
    pub size: u64,
    data: File,
    states: File,
    slots: Mutex<Vec<Slot>>,
    /// The number of the last claim of a chunk.
    claims: AtomicU64,
    /// Held (shared) by every write of data, taken (exclusive) to land the
    /// file: nothing writes into the file once it has its name.
    landed: RwLock<bool>,
}

impl Uploads {
    /// Uploads into the folder at `root`; makes the partials' folder (0700).
    pub fn open(root: &Path, settings: Settings) -> std::io::Result<Self> {
        let root = place::open_folder(root)?;
        let partials = place::folder_in(&root, PARTIALS, 0o700)?;
        Ok(Self {
            root,
            partials,
            settings,
            open: Mutex::new(HashMap::new()),
            wholes: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Opens the upload `wanted` describes, or finds it open: refused if
    /// its name is taken (and not to be replaced), if it is too large, or
    /// if it cannot fit. The chunks it holds, verified.
    pub fn put(&self, wanted: &Wanted) -> Result<(Arc<Upload>, Held), RemoteError> {
        let path = &wanted.path;
        self.check_size(wanted)?;
        self.check_name(wanted)?;
        // Larger than the whole file system: refused before anything is
        // made for it (what an open upload holds grows with its size).
        let (free, total) = self.room();
        if wanted.size > total {
            return Err(no_room(path, wanted.size, total));
        }
        let key = key(wanted);
        let found = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.get(&key).map(Arc::clone)
        };
        let upload = match found {
            Some(upload) => upload,
            None => {
                // Loading re-reads what the partial holds: not under the
                // lock every other upload needs.
                let loaded = Arc::new(self.load(wanted, &key)?);
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                if open.len() >= MAX_OPEN {
                    // Those no connection uses are closed; the next `Put`
                    // of one opens and re-checks it again.
                    open.retain(|_, upload| Arc::strong_count(upload) > 1);
                }
                Arc::clone(open.entry(key).or_insert(loaded))
            }
        };
        let held = upload.held_runs();
        let held_bytes: u64 = held
            .iter()
            .flat_map(|&(first, end)| first..end)
            .map(|index| chunk_len(upload.size, index))
            .sum();
        let margin = (total / 100).min(MARGIN_MAX);
        let need = wanted.size - held_bytes.min(wanted.size);
        if need.saturating_add(margin) > free {
            if held.is_empty() {
                self.forget(&upload);
            }
            return Err(no_room(path, need, free.saturating_sub(margin)));
        }
        Ok((upload, held))
    }

    /// `TooLarge` past `--max-upload-size`.
    fn check_size(&self, wanted: &Wanted) -> Result<(), RemoteError> {
        match self.settings.max_size {
            Some(max) if wanted.size > max => Err(RemoteError::new(
                ErrorCode::TooLarge,
                format!(
                    "{}: {} bytes is over the server's limit of {max} bytes",
                    wanted.path, wanted.size
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Bytes free for the server, and the file system's size; unbounded
    /// where the file system cannot say.
    fn room(&self) -> (u64, u64) {
        match nix::sys::statvfs::fstatvfs(&self.partials) {
            Ok(fs) => {
                // The widths of statvfs's fields differ between targets.
                #[allow(clippy::unnecessary_cast)]
                let (block, available, blocks) = (
                    fs.fragment_size() as u64,
                    fs.blocks_available() as u64,
                    fs.blocks() as u64,
                );
                (
                    available.saturating_mul(block),
                    blocks.saturating_mul(block),
                )
            }
            Err(_) => (u64::MAX, u64::MAX),
        }
    }

    /// Refuses a name that is taken and not to be replaced, or that is not
    /// a file's.
    fn check_name(&self, wanted: &Wanted) -> Result<(), RemoteError> {
        let path = &wanted.path;
        let Some((dir, name)) = place::parent(&self.root, path, false)? else {
            return Ok(());
        };
        match place::found(&dir, &name).map_err(|err| place::failed(path, err))? {
            Found::Nothing => Ok(()),
            Found::Other => Err(RemoteError::new(
                ErrorCode::NotAFile,
                format!("{path}: something other than a file is there"),
            )),
            Found::File if !wanted.overwrite => Err(exists(path)),
            Found::File if !wanted.may_replace => Err(RemoteError::new(
                ErrorCode::NotAllowed,
                format!("{path} exists, and this token may not replace files"),
            )),
            Found::File => Ok(()),
        }
    }

    /// Opens the partial and state file of an upload, making them if they
    /// are new; the chunks a state file records are read back and checked
    /// against their states, and only those that pass count as held.
    fn load(&self, wanted: &Wanted, key: &[u8; 32]) -> Result<Upload, RemoteError> {
        let path = &wanted.path;
        let failed = |err| place::failed(path, err);
        let key = hex::encode(key);
        let create = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let open = |name: String| {
            nix::fcntl::openat(
                &self.partials,
                name.as_str(),
                create,
                Mode::from_bits_truncate(0o644),
            )
            .map(File::from)
        };
        let data = open(format!("{key}.part")).map_err(failed)?;
        let states = open(format!("{key}.state")).map_err(failed)?;
        let count = usize::try_from(chunks(wanted.size)).map_err(|_| {
            RemoteError::new(ErrorCode::TooLarge, format!("{path}: too many chunks"))
        })?;
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&wanted.size.to_le_bytes());
        header[16..48].copy_from_slice(&wanted.version);
        let mut found = [0u8; HEADER as usize];
        let known = states.read_exact_at(&mut found, 0).is_ok() && found == header;
        let mut slots = vec![Slot::Missing; count];
        if known {
            recheck(&data, &states, wanted.size, &mut slots);
        } else {
            states.set_len(0).map_err(|err| io_failed(path, &err))?;
            states
                .write_all_at(&header, 0)
                .map_err(|err| io_failed(path, &err))?;
        }
        Ok(Upload {
            key,
            path: path.clone(),
            size: wanted.size,
            data,
            states,
            slots: Mutex::new(slots),
            claims: AtomicU64::new(0),
            landed: RwLock::new(false),
        })
    }

    /// Lands `upload` at its name once every chunk is stored and their
    /// states chain into `sha256`: synced, given the modification time,
    /// renamed, the folder synced. The stored file's description.
    pub fn commit(
        &self,
        upload: &Upload,
        wanted: &Wanted,
        sha256: Digest,
    ) -> Result<FileMeta, RemoteError> {
        let path = &upload.path;
        let mut landed = upload.landed.write().unwrap_or_else(|e| e.into_inner());
        if *landed {
            return Err(exists(path));
        }
        {
            let slots = upload.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(index) = slots.iter().position(|slot| *slot != Slot::Stored) {
                return Err(RemoteError::new(
                    ErrorCode::BadRequest,
                    format!("{path}: commit before chunk {index} was stored"),
                ));
            }
        }
        if !upload.chain_holds(&sha256) {
            // The sender's states contradict each other: nothing of it can
            // be trusted, so nothing is kept.
            drop(landed);
            self.forget(upload);
            return Err(chain_broken(path));
        }
        let meta = self.land(
            &upload.data,
            &format!("{}.part", upload.key),
            wanted,
            sha256,
        )?;
        *landed = true;
        drop(landed);
        self.forget(upload);
        Ok(meta)
    }

    /// Gives the partial `data`, named `part` in the partials' folder, the
    /// name `wanted` asks for: its size, the modification time, synced,
    /// renamed in one step (never over a file unless `wanted` may replace
    /// one), the folder synced.
    fn land(
        &self,
        data: &File,
        part: &str,
        wanted: &Wanted,
        sha256: Digest,
    ) -> Result<FileMeta, RemoteError> {
        let path = &wanted.path;
        let io = |err: std::io::Error| io_failed(path, &err);
        data.set_len(wanted.size).map_err(io)?;
        let (secs, nanos) = (wanted.mtime.0, wanted.mtime.1.min(999_999_999));
        let mtime = nix::sys::time::TimeSpec::new(secs, i64::from(nanos));
        let now = nix::sys::time::TimeSpec::new(0, libc::UTIME_NOW);
        nix::sys::stat::futimens(data, &now, &mtime).map_err(|err| place::failed(path, err))?;
        data.sync_all().map_err(io)?;
        let (dir, name) = place::parent(&self.root, path, true)?
            .ok_or_else(|| place::failed(path, Errno::ENOENT))?;
        let replace = wanted.overwrite && wanted.may_replace;
        match place::land(&self.partials, part, &dir, &name, replace) {
            Ok(()) => Ok(FileMeta {
                size: wanted.size,
                mtime_secs: secs,
                mtime_nanos: nanos,
                sha256: Some(sha256),
            }),
            Err(Errno::EEXIST) => Err(exists(path)),
            Err(Errno::EISDIR | Errno::ENOTEMPTY) => Err(RemoteError::new(
                ErrorCode::NotAFile,
                format!("{path}: something other than a file is there"),
            )),
            Err(err) => Err(place::failed(path, err)),
        }
    }

    /// [`Uploads::whole`] for an upload no one has open: one partial file of
    /// its own, written, checked and landed, with no state file and nothing
    /// kept open. `None` when the upload is open (someone is resuming it):
    /// then the general way, which uses what it holds.
    fn whole_at_once(
        &self,
        wanted: &Wanted,
        chunk: Option<((Digest, Digest), &[bytes::Bytes])>,
        sha256: Digest,
    ) -> Option<Whole> {
        let path = &wanted.path;
        let refused = |err: RemoteError| {
            Some(Whole {
                put: Err(err.clone()),
                chunk: chunk.map(|_| Err(err.clone())),
                commit: Err(err),
            })
        };
        if let Err(err) = self
            .check_size(wanted)
            .and_then(|()| self.check_name(wanted))
        {
            return refused(err);
        }
        let (free, total) = self.room();
        let margin = (total / 100).min(MARGIN_MAX);
        if wanted.size.saturating_add(margin) > free {
            return refused(no_room(path, wanted.size, free.saturating_sub(margin)));
        }
        let key = key(wanted);
        if self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return None;
        }
        // A name of its own, which no other upload, taken whole or not,
        // ever opens.
        let part = format!(
            "{}.{}-{}.whole",
            hex::encode(key),
            std::process::id(),
            self.wholes.fetch_add(1, Ordering::Relaxed)
        );
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let data = match nix::fcntl::openat(
            &self.partials,
            part.as_str(),
            flags,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => File::from(fd),
            Err(err) => return refused(place::failed(path, err)),
        };
        let stored = chunk.map(|((start, end), pieces)| {
            check_whole(path, wanted.size, (start, end), pieces)?;
            let mut at = 0;
            for piece in pieces {
                data.write_all_at(piece, at)
                    .map_err(|err| io_failed(path, &err))?;
                at += piece.len() as u64;
            }
            Ok((start, end))
        });
        let commit = match &stored {
            Some(Err(_)) => Err(RemoteError::new(
                ErrorCode::BadRequest,
                format!("{path}: commit before chunk 0 was stored"),
            )),
            Some(Ok(states)) if !ft_protocol::put::chain_holds(wanted.size, &sha256, [*states]) => {
                Err(chain_broken(path))
            }
            None if !ft_protocol::put::chain_holds(wanted.size, &sha256, []) => {
                Err(chain_broken(path))
            }
            _ => self.land(&data, &part, wanted, sha256),
        };
        if commit.is_err() {
            let _ = nix::unistd::unlinkat(
                &self.partials,
                part.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        Some(Whole {
            put: Ok(Vec::new()),
            chunk: stored.map(|stored| stored.map(|_| ())),
            commit,
        })
    }

    /// A whole upload of one chunk at most, all its requests at hand: the
    /// `Put`, the chunk's states and bytes (none for an empty file) and the
    /// SHA-256 of the `Commit`, taken in one step, with the answer each of
    /// the three requests would have had on its own.
    pub fn whole(
        &self,
        wanted: &Wanted,
        chunk: Option<((Digest, Digest), &[bytes::Bytes])>,
        sha256: Digest,
    ) -> Whole {
        if let Some(done) = self.whole_at_once(wanted, chunk, sha256) {
            return done;
        }
        let (upload, held) = match self.put(wanted) {
            Ok(opened) => opened,
            Err(err) => {
                return Whole {
                    put: Err(err.clone()),
                    chunk: chunk.map(|_| Err(err.clone())),
                    commit: Err(err),
                }
            }
        };
        let stored = chunk.map(|((start, end), pieces)| {
            let verified = check_whole(&upload.path, upload.size, (start, end), pieces);
            if verified
                .as_ref()
                .is_err_and(|err| err.code == ErrorCode::BadRequest)
            {
                return verified;
            }
            let Some(claim) = upload.claim(0)? else {
                return verified;
            };
            let written = verified.and_then(|()| upload.write(0, claim, 0, pieces));
            let states = written.is_ok().then_some((start, end));
            written.and(upload.release(0, claim, states))
        });
        let commit = self.commit(&upload, wanted, sha256);
        Whole {
            put: Ok(held),
            chunk: stored,
            commit,
        }
    }

    /// Drops an upload: closed here, its state file removed (and its
    /// partial, unless it has landed).
    fn forget(&self, upload: &Upload) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, held| held.key != upload.key);
        drop(open);
        for suffix in ["part", "state"] {
            let _ = nix::unistd::unlinkat(
                &self.partials,
                format!("{}.{suffix}", upload.key).as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }

    /// Removes partials untouched for the TTL, and forgets them if open.
    /// How many it removed.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let Ok(dir) = nix::dir::Dir::openat(
            &self.partials,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return 0;
        };
        let mut stale = Vec::new();
        for entry in dir.into_iter().flatten() {
            let Ok(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(key) = name
                .strip_suffix(".state")
                .or_else(|| name.strip_suffix(".part"))
                .or_else(|| name.strip_suffix(".whole"))
            else {
                continue;
            };
            let Ok(stat) = nix::sys::stat::fstatat(
                &self.partials,
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            let touched =
                SystemTime::UNIX_EPOCH + Duration::from_secs(stat.st_mtime.max(0).unsigned_abs());
            if now.duration_since(touched).unwrap_or_default() >= self.settings.ttl {
                stale.push((key.to_owned(), name));
            }
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, upload| !stale.iter().any(|(key, _)| *key == upload.key));
        drop(open);
        let mut removed = 0;
        for (_, name) in stale {
            let gone = nix::unistd::unlinkat(
                &self.partials,
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            removed += usize::from(gone.is_ok() && !name.ends_with(".state"));
        }
        removed
    }
}

impl Upload {
    /// The held chunks as runs `[first, end)`, at most
    /// [`ft_protocol::MAX_HELD_RUNS`].
    pub fn held_runs(&self) -> Vec<(u64, u64)> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (index, slot) in slots.iter().enumerate() {
            if *slot != Slot::Stored {
                continue;
            }
            let index = index as u64;
            let full = runs.len() == ft_protocol::MAX_HELD_RUNS;
            match runs.last_mut() {
                Some((_, end)) if *end == index => *end += 1,
                _ if full => break,
                _ => runs.push((index, index + 1)),
            }
        }
        runs
    }

    /// Claims chunk `index` for writing: `Ok(Some(claim))` if it is to be
    /// written under that claim (taken over from any connection writing it
    /// now, which may have died without the server noticing yet),
    /// `Ok(None)` if it is stored already (its bytes are then only checked).
    pub fn claim(&self, index: u64) -> Result<Option<u64>, RemoteError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = usize::try_from(index)
            .ok()
            .and_then(|index| slots.get_mut(index))
            .ok_or_else(|| {
                RemoteError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "{}: no chunk {index} in a file of {} bytes",
                        self.path, self.size
                    ),
                )
            })?;
        match *slot {
            Slot::Stored => Ok(None),
            Slot::Missing | Slot::Writing(_) => {
                let claim = self.claims.fetch_add(1, Ordering::Relaxed) + 1;
                *slot = Slot::Writing(claim);
                Ok(Some(claim))
            }
        }
    }

    /// Writes `pieces`, one after the other, at `pos` of chunk `index`
    /// under `claim`, unless the file has landed or the claim was taken
    /// over meanwhile. The write happens under the chunks' lock, so a claim
    /// taken over writes nothing after the one that took it.
    pub fn write(
        &self,
        index: u64,
        claim: u64,
        pos: u64,
        pieces: &[bytes::Bytes],
    ) -> Result<(), RemoteError> {
        let landed = self.landed.read().unwrap_or_else(|e| e.into_inner());
        if *landed {
            return Err(exists(&self.path));
        }
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slot_of(&slots, index) != Some(Slot::Writing(claim)) {
            return Err(taken_over(&self.path, index));
        }
        let mut at = pos;
        for piece in pieces {
            self.data
                .write_all_at(piece, at)
                .map_err(|err| io_failed(&self.path, &err))?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// Ends `claim` on chunk `index`: stored, with the states that verified
    /// it recorded, or missing again; nothing if the claim was taken over.
    pub fn release(
        &self,
        index: u64,
        claim: u64,
        verified: Option<(Digest, Digest)>,
    ) -> Result<(), RemoteError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slot_of(&slots, index) != Some(Slot::Writing(claim)) {
            return Err(taken_over(&self.path, index));
        }
        let recorded = match verified {
            Some((start, end)) => {
                let mut slot = [0u8; SLOT as usize];
                slot[0] = 1;
                slot[8..40].copy_from_slice(&start);
                slot[40..72].copy_from_slice(&end);
                self.states
                    .write_all_at(&slot, HEADER + index * SLOT)
                    .map_err(|err| io_failed(&self.path, &err))
            }
            None => Ok(()),
        };
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| slots.get_mut(i)) {
            *slot = match (&recorded, verified) {
                (Ok(()), Some(_)) => Slot::Stored,
                _ => Slot::Missing,
            };
        }
        recorded
    }

    /// Whether the recorded states of every chunk chain into `sha256`.
    fn chain_holds(&self, sha256: &Digest) -> bool {
        let count = chunks(self.size);
        let mut slots = Vec::with_capacity(count.min(1 << 16) as usize);
        for index in 0..count {
            match read_slot(&self.states, index) {
                Some(states) => slots.push(states),
                None => return false,
            }
        }
        ft_protocol::put::chain_holds(self.size, sha256, slots)
    }
}

/// Reads back every chunk the state file records as stored, and keeps as
/// stored those that still hash from their start state to their end state.
fn recheck(data: &File, states: &File, size: u64, slots: &mut [Slot]) {
    let mut buf = vec![0u8; CHUNK_SIZE.min(size) as usize];
    for (index, slot) in slots.iter_mut().enumerate() {
        let index = index as u64;
        let Some((start, end)) = read_slot(states, index) else {
            continue;
        };
        let len = chunk_len(size, index) as usize;
        let Ok(mut check) = ChunkCheck::new(size, index, &start, end) else {
            continue;
        };
        let read = data.read_exact_at(&mut buf[..len], index * CHUNK_SIZE);
        let good =
            read.is_ok() && check.feed(index, &buf[..len]).is_ok() && check.finish(index).is_ok();
        if good {
            *slot = Slot::Stored;
        }
    }
}

/// Whether `pieces` are chunk 0 of a file of `size` bytes, whole, and hash
/// from `start` to `end`: `BadRequest` if they are not that chunk's bytes
/// (too many, or a file of more chunks), `Mismatch` if they hash elsewhere.
fn check_whole(
    path: &RemotePath,
    size: u64,
    (start, end): (Digest, Digest),
    pieces: &[bytes::Bytes],
) -> Result<(), RemoteError> {
    let bad =
        |err: ft_protocol::ChunkError| RemoteError::new(ErrorCode::BadRequest, err.to_string());
    let mut check = ChunkCheck::new(size, 0, &start, end).map_err(bad)?;
    for piece in pieces {
        check.feed(0, piece).map_err(bad)?;
    }
    check
        .finish(0)
        .map_err(|err| RemoteError::new(ErrorCode::Mismatch, format!("{path}: {err}")))
}

/// The states recorded for chunk `index`, if it is recorded as stored.
fn read_slot(states: &File, index: u64) -> Option<(Digest, Digest)> {
    let mut slot = [0u8; SLOT as usize];
    states
        .read_exact_at(&mut slot, HEADER + index * SLOT)
        .ok()?;
    if slot[0] != 1 {
        return None;
    }
    let mut start = [0u8; 32];
    let mut end = [0u8; 32];
    start.copy_from_slice(&slot[8..40]);
    end.copy_from_slice(&slot[40..72]);
    Some((start, end))
}

/// What names an upload: its path, size and the client's name for the
/// version of its file, so two versions of a file do not share a partial.
fn key(wanted: &Wanted) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(wanted.path.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(wanted.size.to_le_bytes());
    hasher.update(wanted.version);
    hasher.finalize().into()
}

fn chain_broken(path: &RemotePath) -> RemoteError {
    RemoteError::new(
        ErrorCode::Mismatch,
        format!("{path}: the chunks' states do not chain into the file's SHA-256"),
    )
}

fn no_room(path: &RemotePath, need: u64, free: u64) -> RemoteError {
    RemoteError::new(
        ErrorCode::NoSpace,
        format!("{path}: no room on the server: {need} bytes to come, room for {free}"),
    )
}

fn slot_of(slots: &[Slot], index: u64) -> Option<Slot> {
    usize::try_from(index)
        .ok()
        .and_then(|i| slots.get(i))
        .copied()
}

fn taken_over(path: &RemotePath, index: u64) -> RemoteError {
    RemoteError::new(
        ErrorCode::Internal,
        format!("{path}: chunk {index} was sent again on another connection"),
    )
}

fn exists(path: &RemotePath) -> RemoteError {
    RemoteError::new(
        ErrorCode::AlreadyExists,
        format!("{path} already exists on the server (ftput --overwrite replaces it)"),
    )
}

/// A failed read or write of an upload's files, as the client hears it: a
/// full disk or a file size limit is `NoSpace`.
pub(crate) fn io_failed(path: &RemotePath, err: &std::io::Error) -> RemoteError {
    match err.raw_os_error() {
        Some(code) => place::failed(path, Errno::from_raw(code)),
        None => RemoteError::new(ErrorCode::Internal, format!("{path}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ft_protocol::put::states_of;

    fn wanted(path: &str, size: u64) -> Wanted {
        Wanted {
            path: RemotePath::parse(path).expect("a path"),
            size,
            version: [7; 32],
            mtime: (1_000_000, 5),
            overwrite: false,
            may_replace: false,
        }
    }

    fn settings() -> Settings {
        Settings {
            max_size: None,
            ttl: Duration::from_secs(60),
        }
    }

    /// Stores chunk `index` of `data` with its honest states.
    fn store(upload: &Upload, data: &[u8], index: u64) {
        let states = states_of(data)[index as usize];
        let claim = upload.claim(index).expect("in range").expect("to write");
        let from = (index * CHUNK_SIZE) as usize;
        let to = from + chunk_len(data.len() as u64, index) as usize;
        let piece = Bytes::copy_from_slice(&data[from..to]);
        upload
            .write(index, claim, from as u64, &[piece])
            .expect("written");
        upload
            .release(index, claim, Some(states))
            .expect("recorded");
    }

    #[test]
    fn chunks_stored_land_once_they_chain_and_a_restart_rechecks_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..2 * CHUNK_SIZE + 9).map(|i| (i % 253) as u8).collect();
        let sha256 = ft_protocol::put::states_of(&data)[2].1;
        let want = wanted("in/f.bin", data.len() as u64);
        {
            let uploads = Uploads::open(dir.path(), settings()).expect("opens");
            let (upload, held) = uploads.put(&want).expect("opened");
            assert!(held.is_empty());
            store(&upload, &data, 0);
            store(&upload, &data, 2);
            assert_eq!(upload.held_runs(), [(0, 1), (2, 3)]);
            let early = uploads.commit(&upload, &want, sha256).map_err(|e| e.code);
            assert_eq!(
                early.err(),
                Some(ErrorCode::BadRequest),
                "chunk 1 is missing"
            );
        }
        // A new server: what the state file records is read back and
        // checked; a chunk damaged on disk is not counted.
        let part = std::fs::read_dir(dir.path().join(PARTIALS))
            .expect("ls")
            .map(|entry| entry.expect("entry").path())
            .find(|path| path.extension().is_some_and(|ext| ext == "part"))
            .expect("a partial");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&part)
            .expect("open");
        file.write_all_at(b"X", 2 * CHUNK_SIZE + 1).expect("damage");
        let uploads = Uploads::open(dir.path(), settings()).expect("opens");
        let (upload, held) = uploads.put(&want).expect("found");
        assert_eq!(held, [(0, 1)], "the damaged chunk is not held");
        store(&upload, &data, 1);
        store(&upload, &data, 2);
        let wrong = uploads.commit(&upload, &want, [0; 32]).map_err(|e| e.code);
        assert_eq!(wrong.err(), Some(ErrorCode::Mismatch));
        assert!(!dir.path().join("in/f.bin").exists());
        // The upload was dropped: it starts from nothing.
        let (upload, held) = uploads.put(&want).expect("opened again");
        assert!(held.is_empty());
        for index in 0..3 {
            store(&upload, &data, index);
        }
        let meta = uploads.commit(&upload, &want, sha256).expect("landed");
        assert_eq!(meta.sha256, Some(sha256));
        assert_eq!(
            std::fs::read(dir.path().join("in/f.bin")).expect("read"),
            data
        );
        let mtime = std::fs::metadata(dir.path().join("in/f.bin"))
            .expect("stat")
            .modified();
        assert_eq!(
            mtime.ok(),
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(1_000_000, 5))
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join(PARTIALS))
            .expect("ls")
            .collect();
        assert!(left.is_empty(), "nothing left behind: {left:?}");
        // The name is taken now.
        let again = uploads.put(&want).map(|_| ()).map_err(|e| e.code);
        assert_eq!(again.err(), Some(ErrorCode::AlreadyExists));
    }

    #[test]
    fn a_small_upload_taken_whole_lands_or_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uploads = Uploads::open(dir.path(), settings()).expect("opens");
        let data = b"a small file".to_vec();
        let states = states_of(&data)[0];
        let pieces = [Bytes::from(data.clone())];
        let want = wanted("d/s.txt", data.len() as u64);
        let partials = || {
            std::fs::read_dir(dir.path().join(PARTIALS))
                .expect("ls")
                .count()
        };

        let wrong = uploads.whole(&want, Some((states, &pieces)), [0; 32]);
        assert_eq!(
            wrong.commit.err().map(|e| e.code),
            Some(ErrorCode::Mismatch)
        );
        let bad_bytes = [Bytes::from_static(b"a smalL file")];
        let bad = uploads.whole(&want, Some((states, &bad_bytes)), states.1);
        assert_eq!(
            bad.chunk.and_then(Result::err).map(|e| e.code),
            Some(ErrorCode::Mismatch)
        );
        assert_eq!(
            bad.commit.err().map(|e| e.code),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(partials(), 0, "nothing left of either");
        assert!(!dir.path().join("d/s.txt").exists());

        let done = uploads.whole(&want, Some((states, &pieces)), states.1);
        assert_eq!(done.put.map_err(|e| e.code), Ok(Vec::new()));
        assert_eq!(done.chunk.map(|c| c.map_err(|e| e.code)), Some(Ok(())));
        assert_eq!(
            done.commit.map(|meta| meta.sha256).ok(),
            Some(Some(states.1))
        );
        assert_eq!(
            std::fs::read(dir.path().join("d/s.txt")).expect("read"),
            data
        );
        assert_eq!(partials(), 0);

        let again = uploads.whole(&want, Some((states, &pieces)), states.1);
        for code in [
            again.put.err().map(|e| e.code),
            again.chunk.and_then(Result::err).map(|e| e.code),
            again.commit.err().map(|e| e.code),
        ] {
            assert_eq!(code, Some(ErrorCode::AlreadyExists));
        }
        let empty = uploads.whole(
            &wanted("e", 0),
            None,
            ft_protocol::ChainHasher::new().finalize(),
        );
        assert!(empty.commit.is_ok());
        assert_eq!(
            std::fs::metadata(dir.path().join("e")).expect("stat").len(),
            0
        );
    }

    #[test]
    fn a_chunk_claimed_again_is_taken_over_and_the_first_claim_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uploads = Uploads::open(dir.path(), settings()).expect("opens");
        let (upload, _) = uploads.put(&wanted("f", 10)).expect("opened");
        let first = upload.claim(0).expect("in range").expect("to write");
        let second = upload.claim(0).expect("in range").expect("to write");
        let piece = [Bytes::from_static(b"0123456789")];
        assert!(upload.write(0, first, 0, &piece).is_err());
        assert!(upload.release(0, first, None).is_err());
        upload
            .write(0, second, 0, &piece)
            .expect("the new claim writes");
        assert_eq!(
            upload.claim(1).map_err(|e| e.code).err(),
            Some(ErrorCode::BadRequest),
            "no chunk 1 in 10 bytes"
        );
    }

    #[test]
    fn stale_partials_are_swept_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uploads = Uploads::open(dir.path(), settings()).expect("opens");
        let _ = uploads.put(&wanted("f", 10)).expect("opened");
        assert_eq!(uploads.sweep(SystemTime::now()), 0, "fresh");
        let later = SystemTime::now() + Duration::from_secs(61);
        assert_eq!(uploads.sweep(later), 1, "one partial, past its TTL");
        assert!(std::fs::read_dir(dir.path().join(PARTIALS))
            .expect("ls")
            .next()
            .is_none());
    }
}
