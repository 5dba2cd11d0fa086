//! The output folder: every path ftget makes or opens for writing is
//! resolved beneath it, never through a link. The folder itself, as the
//! user named it (`-o DIR`, or the current folder), may be a link; below it,
//! every component is resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, or, where the kernel has
//! no `openat2`, one component at a time with `O_NOFOLLOW`. Files are made
//! fresh (`O_EXCL`), and an existing file is opened only once it is seen
//! to be a regular file (without opening a FIFO or a device to find out).
//! Whatever is in the way is an [`Obstacle`] that names what it is.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// Permissions asked for a new file or folder, as `File::create` and
/// `create_dir` ask; the umask decides the rest.
const FILE_MODE: u32 = 0o666;
const FOLDER_MODE: u32 = 0o777;

/// Folders beneath the output folder kept open, the most recently used
/// first: files come in listing order, folder by folder, so a few spare
/// resolving each file's folder again, and few enough that no tree can
/// exhaust the descriptors.
const PARENTS_KEPT: usize = 8;

/// Set once `openat2` turned out to be missing (an old kernel, or a
/// sandbox that filters it): every later walk goes component by component.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// The folder a run writes into.
#[derive(Debug)]
pub struct Folder {
    /// As the user named it; empty for the current folder.
    path: PathBuf,
    /// Whether to create it (and its parents) when it is missing.
    create: bool,
    /// The folder, opened once, when first needed: a batch creates it only
    /// once it has something to put in it.
    dir: OnceLock<OwnedFd>,
    /// Folders beneath it, as resolved lately (see [`PARENTS_KEPT`]). A
    /// folder once opened stays the one it was when it was resolved, link
    /// free, whatever is renamed later.
    parents: Mutex<Vec<(PathBuf, Arc<OwnedFd>)>>,
}

/// A file's place: a path of plain components beneath a [`Folder`].
#[derive(Debug, Clone)]
pub struct Output {
    folder: Arc<Folder>,
    name: PathBuf,
}

/// Something found where ftget would write, which it will not touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obstacle {
    /// A symbolic link: writing through it would write where it points.
    Symlink,
    /// A regular file with other names: writing to it would change them too.
    HardLinked {
        /// Its number of names.
        links: u64,
    },
    /// Not a regular file where ftget would write one.
    NotAFile(Kind),
    /// Not a folder where ftget would put files.
    NotAFolder(Kind),
    /// A partial download that no sidecar of ftget's claims for this file.
    NotOurs,
}

/// What kind of thing is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A folder.
    Folder,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
    /// Anything else.
    Unknown,
}

/// What is at a name, seen without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// What it is.
    pub kind: Kind,
    /// Its number of names.
    pub links: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// How an existing file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read only, a regular file with any number of names (a final output
    /// checked against the server's).
    Read,
    /// Read and written, a regular file with no other name (a partial).
    Partial,
}

/// Why a path beneath the folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// Something is in the way.
    #[error("{}: {what}", path.display())]
    InTheWay {
        /// Where, as the user sees it.
        path: PathBuf,
        /// What it is.
        what: Obstacle,
    },
    /// The system refused.
    #[error("{}", path.display())]
    Io {
        /// Where, as the user sees it.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl FolderError {
    /// Whether this is the system saying "no such file or folder".
    pub fn is_missing(&self) -> bool {
        matches!(self, FolderError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The folder a name's parent resolves to: the folder itself, or one
/// opened beneath it.
enum Dir<'a> {
    Root(BorrowedFd<'a>),
    Below(Arc<OwnedFd>),
}

impl AsFd for Dir<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Dir::Root(fd) => *fd,
            Dir::Below(fd) => fd.as_fd(),
        }
    }
}

impl Folder {
    /// The folder at `path` as the user named it (empty: the current
    /// folder), created when missing if `create`.
    pub fn new(path: impl Into<PathBuf>, create: bool) -> Self {
        Self {
            path: path.into(),
            create,
            dir: OnceLock::new(),
            parents: Mutex::new(Vec::new()),
        }
    }

    /// `name` as the user sees it: beneath the folder as they named it.
    pub fn shown(&self, name: &Path) -> PathBuf {
        match (
            self.path.as_os_str().is_empty(),
            name.as_os_str().is_empty(),
        ) {
            (true, true) => PathBuf::from("."),
            (true, false) => name.to_owned(),
            (false, _) => self.path.join(name),
        }
    }

    /// Makes every folder of `name` that is missing; each that exists must
    /// be a real folder, not a link to one.
    pub fn make_dirs(&self, name: &Path) -> Result<(), FolderError> {
        let root = self.root()?;
        match name.as_os_str().is_empty() {
            true => Ok(()),
            false => self.walk(root, name, true).map(drop),
        }
    }

    /// What is at `name`, not following it; `None` when nothing is.
    pub fn lstat(&self, name: &Path) -> Result<Option<Found>, FolderError> {
        let (dir, last) = self.parent(name)?;
        match rustix::fs::statat(&dir, last, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Found::from(&stat))),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(self.io(name, errno)),
        }
    }

    /// Creates `name` as a new, empty regular file for writing; fails if
    /// anything is there already.
    pub fn create_new(&self, name: &Path) -> Result<File, FolderError> {
        let (dir, last) = self.parent(name)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(&dir, last, flags | OFlags::CLOEXEC, file_mode())
            .map_err(|errno| self.io(name, errno))?;
        Ok(File::from(fd))
    }

    /// A new regular file with no name yet (`O_TMPFILE`), in the folder that
    /// will hold `name`: written whole, then named by [`Self::publish`], so
    /// that a run killed meanwhile leaves nothing behind. `None` where the
    /// file system cannot make one.
    pub fn create_unnamed(&self, name: &Path) -> Result<Option<File>, FolderError> {
        let (dir, _) = self.parent(name)?;
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        match rustix::fs::openat(&dir, ".", flags, file_mode()) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => Ok(None),
            Err(errno) => Err(self.io(name, errno)),
        }
    }

    /// Names `file`, made by [`Self::create_unnamed`] in the same folder,
    /// `name`; fails if anything is there (nothing is replaced) or if
    /// `/proc` cannot be reached to name it.
    pub fn publish(&self, file: &File, name: &Path) -> Result<(), FolderError> {
        let (dir, last) = self.parent(name)?;
        let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
        rustix::fs::linkat(
            rustix::fs::CWD,
            fd.as_str(),
            &dir,
            last,
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(|errno| self.io(name, errno))
    }

    /// Opens the existing regular file at `name` as `how` says. Anything
    /// else there is refused before it is opened, and again after (in case
    /// it was swapped meanwhile), so no FIFO or device is ever opened in a
    /// way that blocks or has an effect.
    pub fn open_existing(&self, name: &Path, how: Use) -> Result<File, FolderError> {
        let (dir, last) = self.parent(name)?;
        let seen = rustix::fs::statat(&dir, last, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|errno| self.io(name, errno))?;
        self.fits(name, Found::from(&seen), how)?;
        let access = match how {
            Use::Read => OFlags::RDONLY,
            Use::Partial => OFlags::RDWR,
        };
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, last, flags, Mode::empty())
            .map_err(|errno| self.io(name, errno))?;
        let opened = rustix::fs::fstat(&fd).map_err(|errno| self.io(name, errno))?;
        self.fits(name, Found::from(&opened), how)?;
        // Blocking again, as a regular file is read and written.
        // F_SETFL sets only the status flags, of which O_NONBLOCK was the one.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|errno| self.io(name, errno))?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to`, both beneath the folder; whatever is at `to`
    /// is replaced, not written through.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), FolderError> {
        let (from_dir, from_last) = self.parent(from)?;
        let renamed = match (from.parent() == to.parent(), to.file_name()) {
            // A partial and its output share a folder: resolved once.
            (true, Some(to_last)) => rustix::fs::renameat(&from_dir, from_last, &from_dir, to_last),
            _ => {
                let (to_dir, to_last) = self.parent(to)?;
                rustix::fs::renameat(&from_dir, from_last, &to_dir, to_last)
            }
        };
        renamed.map_err(|errno| self.io(to, errno))
    }

    /// Removes the file at `name`, if there is one. Callers decide first
    /// that it is theirs to remove.
    pub fn remove(&self, name: &Path) -> Result<(), FolderError> {
        let (dir, last) = self.parent(name)?;
        match rustix::fs::unlinkat(&dir, last, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(errno) => Err(self.io(name, errno)),
        }
    }

    /// Refuses `found` at `name` unless it can be opened as `how` says.
    fn fits(&self, name: &Path, found: Found, how: Use) -> Result<(), FolderError> {
        let obstacle = match how {
            Use::Read => found.as_file(u64::MAX),
            Use::Partial => found.as_file(1),
        };
        obstacle.map_or(Ok(()), |what| Err(self.in_the_way(name, what)))
    }

    /// The folder, opened (and created, if asked) the first time.
    fn root(&self) -> Result<BorrowedFd<'_>, FolderError> {
        if let Some(fd) = self.dir.get() {
            return Ok(fd.as_fd());
        }
        let path = match self.path.as_os_str().is_empty() {
            true => Path::new("."),
            false => self.path.as_path(),
        };
        let failed = |source| FolderError::Io {
            path: path.to_owned(),
            source,
        };
        if self.create {
            // The folder as the user named it: a link to it is followed.
            std::fs::create_dir_all(path).map_err(failed)?;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| failed(e.into()))?;
        // Two threads may both get here: one handle wins, the other closes.
        Ok(self.dir.get_or_init(|| fd).as_fd())
    }

    /// The folder holding `name`, and `name`'s last component.
    fn parent<'a>(&self, name: &'a Path) -> Result<(Dir<'_>, &'a OsStr), FolderError> {
        let plain = |component: Component<'_>| matches!(component, Component::Normal(_));
        let last = match name.file_name() {
            Some(last) if name.components().all(plain) => last,
            _ => {
                let source = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a plain path beneath the output folder",
                );
                return Err(FolderError::Io {
                    path: self.shown(name),
                    source,
                });
            }
        };
        let root = self.root()?;
        match name.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                Ok((Dir::Below(self.below(root, parent)?), last))
            }
            _ => Ok((Dir::Root(root), last)),
        }
    }

    /// The folder `name` beneath `root`: kept open from lately, or resolved.
    fn below(&self, root: BorrowedFd<'_>, name: &Path) -> Result<Arc<OwnedFd>, FolderError> {
        let kept = |parents: &mut Vec<(PathBuf, Arc<OwnedFd>)>| {
            let at = parents.iter().position(|(path, _)| path == name)?;
            let entry = parents.remove(at);
            let fd = Arc::clone(&entry.1);
            parents.insert(0, entry);
            Some(fd)
        };
        if let Some(fd) = self.parents.lock().ok().as_deref_mut().and_then(kept) {
            return Ok(fd);
        }
        let fd = Arc::new(self.resolve(root, name)?);
        if let Ok(mut parents) = self.parents.lock() {
            parents.insert(0, (name.to_owned(), Arc::clone(&fd)));
            parents.truncate(PARENTS_KEPT);
        }
        Ok(fd)
    }

    /// Opens the folder `name` beneath `root` in one call, following no
    /// link; when that fails on something in the way, or the kernel lacks
    /// the call, the walk finds (and names) it.
    fn resolve(&self, root: BorrowedFd<'_>, name: &Path) -> Result<OwnedFd, FolderError> {
        if NO_OPENAT2.load(Ordering::Relaxed) {
            return self.walk(root, name, false);
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, name, flags, Mode::empty(), how) {
            Ok(fd) => Ok(fd),
            // EPERM: sandboxes whose seccomp filter predates openat2.
            Err(Errno::NOSYS | Errno::PERM) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                self.walk(root, name, false)
            }
            Err(Errno::LOOP | Errno::NOTDIR | Errno::XDEV) => self.walk(root, name, false),
            Err(errno) => Err(self.io(name, errno)),
        }
    }

    /// Opens the folder `name` beneath `root` one component at a time, each
    /// with `O_NOFOLLOW`, making those that are missing if `create`. What
    /// stands where a folder should be is named.
    fn walk(
        &self,
        root: BorrowedFd<'_>,
        name: &Path,
        create: bool,
    ) -> Result<OwnedFd, FolderError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut here = PathBuf::new();
        let mut current: Option<OwnedFd> = None;
        for component in name.components() {
            let Component::Normal(part) = component else {
                return Err(self.io(name, Errno::INVAL));
            };
            here.push(part);
            let at = current.as_ref().map_or(root, |fd| fd.as_fd());
            let mut opened = rustix::fs::openat(at, part, flags, Mode::empty());
            if create && matches!(opened, Err(Errno::NOENT)) {
                match rustix::fs::mkdirat(at, part, Mode::from_raw_mode(FOLDER_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(errno) => return Err(self.io(&here, errno)),
                }
                opened = rustix::fs::openat(at, part, flags, Mode::empty());
            }
            current = Some(match opened {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::NOTDIR) => return Err(self.not_a_folder(at, part, &here)),
                Err(errno) => return Err(self.io(&here, errno)),
            });
        }
        match current {
            Some(fd) => Ok(fd),
            None => Err(self.io(name, Errno::INVAL)),
        }
    }

    /// Says what stands at `part` (in `at`), where a folder should be.
    fn not_a_folder(&self, at: BorrowedFd<'_>, part: &OsStr, here: &Path) -> FolderError {
        match rustix::fs::statat(at, part, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match Found::from(&stat).as_folder() {
                Some(what) => self.in_the_way(here, what),
                None => self.io(here, Errno::NOTDIR),
            },
            Err(errno) => self.io(here, errno),
        }
    }

    fn in_the_way(&self, name: &Path, what: Obstacle) -> FolderError {
        FolderError::InTheWay {
            path: self.shown(name),
            what,
        }
    }

    fn io(&self, name: &Path, errno: Errno) -> FolderError {
        FolderError::Io {
            path: self.shown(name),
            source: errno.into(),
        }
    }
}

fn file_mode() -> Mode {
    Mode::from_raw_mode(FILE_MODE)
}

impl Output {
    /// `name`, a path of plain components, beneath `folder`.
    pub fn new(folder: &Arc<Folder>, name: impl Into<PathBuf>) -> Self {
        Self {
            folder: Arc::clone(folder),
            name: name.into(),
        }
    }

    /// A path as the user gave it: its last component beneath the folder
    /// before it (the current one if none); `None` if it names no file.
    pub fn at(path: &Path) -> Option<Self> {
        let name = path.file_name()?;
        let folder = path.parent().unwrap_or(Path::new(""));
        Some(Self::new(&Arc::new(Folder::new(folder, false)), name))
    }

    /// The folder it is beneath.
    pub fn folder(&self) -> &Folder {
        &self.folder
    }

    /// Its path beneath the folder.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Another path beneath the same folder.
    pub fn beside(&self, name: impl Into<PathBuf>) -> Self {
        Self::new(&self.folder, name)
    }

    /// The path as the user sees it.
    pub fn shown(&self) -> PathBuf {
        self.folder.shown(&self.name)
    }
}

impl Found {
    /// Why this cannot be used as a regular file with at most `links`
    /// names, if it cannot.
    pub fn as_file(&self, links: u64) -> Option<Obstacle> {
        match self.kind {
            Kind::File if self.links > links => Some(Obstacle::HardLinked { links: self.links }),
            Kind::File => None,
            Kind::Symlink => Some(Obstacle::Symlink),
            kind => Some(Obstacle::NotAFile(kind)),
        }
    }

    /// Why this cannot be used as a folder, if it cannot.
    pub fn as_folder(&self) -> Option<Obstacle> {
        match self.kind {
            Kind::Folder => None,
            Kind::Symlink => Some(Obstacle::Symlink),
            kind => Some(Obstacle::NotAFolder(kind)),
        }
    }
}

impl From<&Stat> for Found {
    // `st_nlink` is a u64 here but a u32 on some targets.
    #[allow(clippy::useless_conversion)]
    fn from(stat: &Stat) -> Self {
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Folder,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::BlockDevice => Kind::BlockDevice,
            FileType::Socket => Kind::Socket,
            FileType::Unknown => Kind::Unknown,
        };
        Self {
            kind,
            links: u64::from(stat.st_nlink),
            len: u64::try_from(stat.st_size).unwrap_or(0),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "a regular file",
            Kind::Folder => "a folder",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Socket => "a socket",
            Kind::Unknown => "of an unknown kind",
        })
    }
}

impl fmt::Display for Obstacle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obstacle::Symlink => write!(f, "is a symbolic link; ftget will not write through it"),
            Obstacle::HardLinked { links } => write!(
                f,
                "is a file with {links} hard links; ftget will not write to a file that has other names"
            ),
            Obstacle::NotAFile(kind) => {
                write!(f, "is {kind}, not a regular file; ftget leaves it alone")
            }
            Obstacle::NotAFolder(kind) => {
                write!(f, "is {kind}, not a folder; ftget will not put files in it")
            }
            Obstacle::NotOurs => write!(
                f,
                "is not ftget's partial download of this file; ftget leaves it alone (move it away to download the file)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    /// A folder to write into, and one beside it that must stay untouched.
    struct Scene {
        _dir: tempfile::TempDir,
        out: PathBuf,
        outside: PathBuf,
    }

    fn scene() -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), b"keep").expect("write");
        Scene {
            _dir: dir,
            out,
            outside,
        }
    }

    fn in_the_way(err: FolderError) -> (PathBuf, Obstacle) {
        match err {
            FolderError::InTheWay { path, what } => (path, what),
            other => panic!("expected something in the way, got {other:?}"),
        }
    }

    /// Runs `check` with openat2, then with the component walk alone.
    fn both_ways(check: impl Fn()) {
        check();
        NO_OPENAT2.store(true, Ordering::Relaxed);
        check();
        NO_OPENAT2.store(false, Ordering::Relaxed);
    }

    #[test]
    fn files_are_made_opened_renamed_and_removed_beneath_the_folder() {
        let s = scene();
        let folder = Folder::new(&s.out, false);
        folder.make_dirs(Path::new("a/b")).expect("dirs");
        let name = Path::new("a/b/f.part");
        folder
            .create_new(name)
            .expect("new")
            .write_all(b"data")
            .expect("write");
        assert!(
            folder.create_new(name).is_err(),
            "never over an existing file"
        );
        let found = folder.lstat(name).expect("lstat").expect("there");
        assert_eq!((found.kind, found.links, found.len), (Kind::File, 1, 4));
        let mut text = String::new();
        folder
            .open_existing(name, Use::Partial)
            .expect("open")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "data");
        folder.rename(name, Path::new("a/b/f")).expect("rename");
        assert_eq!(std::fs::read(s.out.join("a/b/f")).expect("read"), b"data");
        folder.remove(Path::new("a/b/f")).expect("remove");
        folder
            .remove(Path::new("a/b/f"))
            .expect("removing nothing is fine");
        assert_eq!(folder.lstat(Path::new("a/b/f")).expect("lstat"), None);
        assert_eq!(folder.shown(Path::new("x")), s.out.join("x"));
        assert_eq!(Folder::new("", false).shown(Path::new("x")), Path::new("x"));
    }

    #[test]
    fn a_link_in_the_path_is_refused_and_named() {
        let s = scene();
        symlink(&s.outside, s.out.join("docs")).expect("symlink");
        std::fs::write(s.out.join("plain"), b"").expect("write");
        both_ways(|| {
            let folder = Folder::new(&s.out, false);
            let err = folder
                .create_new(Path::new("docs/new"))
                .expect_err("refused");
            assert_eq!(in_the_way(err), (s.out.join("docs"), Obstacle::Symlink));
            let err = folder
                .make_dirs(Path::new("docs/sub"))
                .expect_err("refused");
            assert_eq!(in_the_way(err), (s.out.join("docs"), Obstacle::Symlink));
            let err = folder
                .make_dirs(Path::new("plain/sub"))
                .expect_err("refused");
            assert_eq!(
                in_the_way(err),
                (s.out.join("plain"), Obstacle::NotAFolder(Kind::File))
            );
            let err = folder.lstat(Path::new("docs/secret")).expect_err("refused");
            assert_eq!(in_the_way(err).1, Obstacle::Symlink);
        });
        let names: Vec<_> = std::fs::read_dir(&s.outside).expect("read").collect();
        assert_eq!(names.len(), 1, "nothing was made outside");
        assert_eq!(
            std::fs::read(s.outside.join("secret")).expect("read"),
            b"keep"
        );
    }

    #[test]
    fn a_link_or_a_hard_link_at_the_name_is_never_written_through() {
        let s = scene();
        symlink(s.outside.join("secret"), s.out.join("x.part")).expect("symlink");
        std::fs::hard_link(s.outside.join("secret"), s.out.join("y.part")).expect("link");
        let folder = Folder::new(&s.out, false);
        assert!(folder.create_new(Path::new("x.part")).is_err());
        let err = folder
            .open_existing(Path::new("x.part"), Use::Partial)
            .expect_err("refused");
        assert_eq!(in_the_way(err), (s.out.join("x.part"), Obstacle::Symlink));
        let err = folder
            .open_existing(Path::new("y.part"), Use::Partial)
            .expect_err("refused");
        assert_eq!(
            in_the_way(err),
            (s.out.join("y.part"), Obstacle::HardLinked { links: 2 })
        );
        assert!(
            folder.open_existing(Path::new("y.part"), Use::Read).is_ok(),
            "a final output may have other names: it is only read"
        );
        assert_eq!(
            std::fs::read(s.outside.join("secret")).expect("read"),
            b"keep"
        );
    }

    #[test]
    fn an_unnamed_file_is_named_once_written_and_never_over_anything() {
        both_ways(|| {
            let scene = scene();
            let folder = Folder::new(&scene.out, false);
            let name = Path::new("sub/x.bin");
            folder.make_dirs(Path::new("sub")).expect("made");
            let Some(mut file) = folder.create_unnamed(name).expect("made") else {
                return; // a file system without O_TMPFILE: nothing to check
            };
            std::io::Write::write_all(&mut file, b"whole").expect("written");
            assert!(folder.lstat(name).expect("looked").is_none(), "no name yet");
            folder.publish(&file, name).expect("named");
            assert_eq!(std::fs::read(scene.out.join(name)).expect("read"), b"whole");
            let err = folder.publish(&file, name).expect_err("something is there");
            assert!(
                matches!(&err, FolderError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
                "nothing is replaced: {err}"
            );
        });
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let s = scene();
        let fifo = s.out.join("f.part");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let folder = Folder::new(&s.out, false);
        let started = Instant::now();
        for how in [Use::Read, Use::Partial] {
            let err = folder
                .open_existing(Path::new("f.part"), how)
                .expect_err("refused");
            assert_eq!(
                in_the_way(err),
                (fifo.clone(), Obstacle::NotAFile(Kind::Fifo))
            );
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = folder
            .make_dirs(Path::new("f.part/x"))
            .expect_err("refused");
        assert_eq!(in_the_way(err).1, Obstacle::NotAFolder(Kind::Fifo));
    }

    #[test]
    fn the_folder_itself_may_be_a_link_and_is_made_when_asked() {
        let s = scene();
        let link = s.out.join("to-outside");
        symlink(&s.outside, &link).expect("symlink");
        let folder = Folder::new(&link, false);
        folder.create_new(Path::new("new")).expect("created");
        assert!(s.outside.join("new").is_file());
        let made = Folder::new(s.out.join("a/b"), true);
        made.create_new(Path::new("f")).expect("created");
        assert!(s.out.join("a/b/f").is_file());
        let missing = Folder::new(s.out.join("nope"), false);
        assert!(missing
            .create_new(Path::new("f"))
            .expect_err("no folder")
            .is_missing());
    }

    #[test]
    fn only_plain_names_are_taken() {
        let s = scene();
        let folder = Folder::new(&s.out, false);
        for name in ["../x", "/etc/x", "a/../../x", "", "."] {
            assert!(folder.create_new(Path::new(name)).is_err(), "{name}");
        }
        assert!(!s.out.parent().expect("parent").join("x").exists());
    }

    #[test]
    fn obstacles_say_what_they_are() {
        let shown = |what: Obstacle| what.to_string();
        assert_eq!(
            shown(Obstacle::Symlink),
            "is a symbolic link; ftget will not write through it"
        );
        assert_eq!(
            shown(Obstacle::NotAFile(Kind::Fifo)),
            "is a FIFO, not a regular file; ftget leaves it alone"
        );
        assert!(shown(Obstacle::HardLinked { links: 3 }).contains("3 hard links"));
    }
}
