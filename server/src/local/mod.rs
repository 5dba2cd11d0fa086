//! The local folder as a [`Backend`]: `files` (the jail, reads, versions)
//! and `listing` (folder walks) behind the one interface.

mod files;
mod listing;

use std::io;
use std::path::Path;

use bytes::Bytes;
use cap_std::fs::Dir;
use ft_protocol::{RemoteError, RemotePath};

pub use files::{FileId, OpenFile};

use crate::backend::{Backend, Listed, Stat, Walked};

/// The served folder.
pub struct LocalFiles {
    root: Dir,
    folders: listing::Folders,
}

impl LocalFiles {
    /// Opens the folder to serve.
    pub fn open_root(path: &Path) -> io::Result<Self> {
        let root = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Self {
            root,
            folders: listing::Folders::default(),
        })
    }
}

impl LocalFiles {
    /// The folder `within` as the base to resolve `path` from, and the rest
    /// of `path` below it; `None` when `within` is the root. The folder is
    /// resolved beneath the root as any path is.
    fn base(
        &self,
        within: &RemotePath,
        path: &RemotePath,
    ) -> Result<Option<(Dir, RemotePath)>, RemoteError> {
        if within.is_root() {
            return Ok(None);
        }
        let rest = path
            .strip_prefix(within)
            .ok_or_else(|| crate::backend::missing(path))?;
        let base = self
            .root
            .open_dir(within.to_relative())
            .map_err(|err| files::open_error(&err, path))?;
        Ok(Some((base, rest)))
    }
}

impl Backend for LocalFiles {
    type File = OpenFile;
    type Version = FileId;

    fn open(&self, within: &RemotePath, path: &RemotePath) -> Result<OpenFile, RemoteError> {
        match self.base(within, path)? {
            None => files::open(&self.root, path, path),
            Some((base, rest)) => files::open(&base, &rest, path),
        }
    }

    fn stat(&self, file: &OpenFile) -> Stat<FileId> {
        file.stat()
    }

    fn read(&self, file: &OpenFile, pos: u64, len: usize) -> Result<Bytes, RemoteError> {
        file.read(pos, len)
    }

    fn unchanged(&self, file: &OpenFile) -> Result<(), RemoteError> {
        file.unchanged()
    }

    fn local_file<'a>(&self, file: &'a OpenFile) -> Option<&'a std::fs::File> {
        Some(file.std())
    }

    fn list(
        &self,
        within: &RemotePath,
        path: &RemotePath,
        recursive: bool,
        emit: &mut dyn FnMut(Listed<FileId>) -> bool,
    ) -> Result<Walked, RemoteError> {
        match self.base(within, path)? {
            None => listing::walk(&self.root, &self.folders, path, path, recursive, emit),
            Some((base, rest)) => listing::walk(&base, &self.folders, &rest, path, recursive, emit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ft_protocol::ErrorCode;

    fn path(text: &str) -> RemotePath {
        RemotePath::parse(text).expect("a path")
    }

    #[test]
    fn within_a_folder_no_link_leads_out_of_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pub/sub")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("secret")).expect("mkdir");
        std::fs::write(dir.path().join("secret/b.txt"), "secret").expect("write");
        std::fs::write(dir.path().join("pub/a.txt"), "public").expect("write");
        std::os::unix::fs::symlink("../secret/b.txt", dir.path().join("pub/out")).expect("ln");
        std::os::unix::fs::symlink("../a.txt", dir.path().join("pub/sub/in")).expect("ln");
        let files = LocalFiles::open_root(dir.path()).expect("root");
        let (root, scope) = (RemotePath::root(), path("pub"));

        // From the root, the link is inside the served folder: followed.
        assert!(files.open(&root, &path("pub/out")).is_ok());
        // Within pub, it leads out: refused, and a link inside pub still works.
        let refused = files.open(&scope, &path("pub/out")).err().map(|e| e.code);
        assert_eq!(refused, Some(ErrorCode::InvalidPath));
        assert!(files.open(&scope, &path("pub/sub/in")).is_ok());
        assert!(files.open(&scope, &path("pub/a.txt")).is_ok());

        let names = |within: &RemotePath| {
            let mut names = Vec::new();
            files
                .list(within, &path("pub"), true, &mut |listed| {
                    names.push(listed.entry.path);
                    true
                })
                .expect("lists");
            names
        };
        assert!(names(&root).contains(&"out".to_owned()));
        let scoped = names(&scope);
        assert!(!scoped.contains(&"out".to_owned()), "{scoped:?}");
        assert!(scoped.contains(&"sub/in".to_owned()), "{scoped:?}");
    }
}
