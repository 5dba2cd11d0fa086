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

impl Backend for LocalFiles {
    type File = OpenFile;
    type Version = FileId;

    fn open(&self, path: &RemotePath) -> Result<OpenFile, RemoteError> {
        files::open(&self.root, path)
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
        path: &RemotePath,
        recursive: bool,
        emit: &mut dyn FnMut(Listed<FileId>) -> bool,
    ) -> Result<Walked, RemoteError> {
        listing::walk(&self.root, &self.folders, path, recursive, emit)
    }
}
