//! A bucket (or a prefix of one) of an S3-compatible object store as the
//! server's backend, read-only. An object is opened by a `GET` of the bytes
//! its first read wants (all of a small file), and its version is its key
//! and ETag; every later read is a ranged `GET` pinned to that ETag
//! (`If-Match`), so no reply mixes two versions and a replaced object is
//! `FileChanged`. Folders
//! come from the bucket listing, one level at a time, each name checked as
//! a name on disk is. An object's digests are kept in the bucket beside it
//! (`stored`), so that no server hashes it twice. The requests are `s3`'s;
//! everything here blocks on them, from blocking threads, through the
//! runtime that serves.

pub mod s3;
mod stored;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use ft_protocol::{
    Entry, EntryKind, ErrorCode, FileMeta, RemoteError, RemotePath, CHUNK_SIZE, MAX_DATA,
    MAX_PATH_BYTES,
};
use sha2::{Digest as _, Sha256};
use tokio::runtime::Handle;

use crate::backend::{missing, Backend, Digests, Listed, Stat, Walked};

/// What to serve: a bucket, the prefix within it, and the store it is on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bucket's name.
    pub bucket: String,
    /// The prefix served (its objects are the served root's files); the
    /// root for the whole bucket.
    pub prefix: RemotePath,
    /// How to reach the store.
    pub store: s3::Store,
}

/// The bucket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The store refused the credentials.
    #[error(
        "the object store refused the credentials for bucket {bucket}{code}: \
         check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    Refused {
        /// The bucket.
        bucket: String,
        /// S3's error code in brackets, after a space; or empty.
        code: String,
    },
    /// There is no such bucket.
    #[error("no bucket {bucket} on the object store")]
    NoBucket {
        /// The bucket.
        bucket: String,
    },
    /// The store could not be asked.
    #[error("cannot serve bucket {bucket}")]
    Store {
        /// The bucket.
        bucket: String,
        /// Why.
        source: s3::S3Error,
    },
    /// Not inside the runtime that will serve.
    #[error("the bucket must be opened within the async runtime")]
    NoRuntime,
}

/// The served bucket.
pub struct BucketFiles {
    client: s3::Client,
    prefix: RemotePath,
    runtime: Handle,
    /// Whether keeping digests in the bucket has failed (said once).
    cannot_keep: AtomicBool,
}

/// What identifies one version of an object: a hash of its key and ETag,
/// and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectVersion {
    id: [u8; 32],
    size: u64,
}

impl ObjectVersion {
    fn new(key: &str, etag: &str, size: u64) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"ft object version\0");
        hasher.update(key.as_bytes());
        hasher.update(b"\0");
        hasher.update(etag.trim_matches('"').as_bytes());
        Self {
            id: hasher.finalize().into(),
            size,
        }
    }
}

/// One object, opened at one version.
pub struct Object {
    path: RemotePath,
    key: String,
    etag: String,
    stat: Stat<ObjectVersion>,
    /// The `GET` reading it, where the last read stopped (held across the
    /// awaits of a read, within one trip through the runtime).
    body: tokio::sync::Mutex<Option<Body>>,
}

/// The bytes the `GET` that opens an object asks for: all of a small file,
/// and little to waste when the reads start elsewhere (a `Range` of a
/// chunk further on, say).
const FIRST_WINDOW: u64 = 64 << 10;

/// The most pages one folder's listing may take (a hundred million keys):
/// a store that never ends a listing does not keep a walk going forever.
const MAX_PAGES: usize = 100_000;

/// The most one `GET` asks for. Reads that go on where the last stopped ask
/// for twice as much each time up to this: few requests for a stream, and
/// little read for nothing when a client asks for one chunk.
const MAX_WINDOW: u64 = 64 * CHUNK_SIZE;

/// An open `GET` of the bytes `start..end` of an object: those from `pos`
/// on are still to read, the first of them already received in `held`.
struct Body {
    start: u64,
    pos: u64,
    end: u64,
    reply: reqwest::Response,
    held: Bytes,
}

/// The bytes the next `GET` asks for, to read on from `at` wanting `len`
/// bytes, after one of `last` (its start and end): twice as many if it goes
/// on where that one ended, else a chunk; at least `len`.
fn next_window(last: Option<(u64, u64)>, at: u64, len: usize) -> u64 {
    match last {
        Some((start, end)) if end == at => (2 * (end - start)).min(MAX_WINDOW),
        _ => CHUNK_SIZE,
    }
    .max(len as u64)
}

impl BucketFiles {
    /// Opens the bucket, asking the store once, now: wrong credentials or a
    /// missing bucket are found here, not at the first request. Must be
    /// called within the runtime that will serve.
    pub async fn open(settings: Settings) -> Result<Self, BucketError> {
        let runtime = Handle::try_current().map_err(|_| BucketError::NoRuntime)?;
        let bucket = settings.bucket.clone();
        let client =
            s3::Client::new(&settings.store, &bucket).map_err(|source| BucketError::Store {
                bucket: bucket.clone(),
                source,
            })?;
        let files = Self {
            client,
            prefix: settings.prefix,
            runtime,
            cannot_keep: AtomicBool::new(false),
        };
        let first = files.folder_prefix(&RemotePath::root());
        match files.client.list_page(&first, true, None, Some(1)).await {
            Ok(_) => Ok(files),
            Err(err) => Err(match (err.status().map(|s| s.as_u16()), err) {
                (Some(403), s3::S3Error::Status { code, .. }) => {
                    BucketError::Refused { bucket, code }
                }
                (Some(404), _) => BucketError::NoBucket { bucket },
                (_, source) => BucketError::Store { bucket, source },
            }),
        }
    }

    /// The key of `path` in the bucket.
    fn key(&self, path: &RemotePath) -> String {
        self.prefix
            .components()
            .iter()
            .chain(path.components())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The prefix of the keys in the folder `path`: its key and a `/`, or
    /// nothing for the root of the whole bucket.
    fn folder_prefix(&self, path: &RemotePath) -> String {
        let key = self.key(path);
        match key.is_empty() {
            true => key,
            false => key + "/",
        }
    }

    /// Runs one request of the store to its end, from a blocking thread.
    fn wait<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(request)
    }

    /// The reply a client gets when the store failed: the details go to the
    /// log, not to the client (they name the store's endpoints).
    fn failed(&self, path: &RemotePath, err: &s3::S3Error) -> RemoteError {
        tracing::warn!(path = %path, "object store: {err}");
        match err.status().map(|status| status.as_u16()) {
            Some(403) => RemoteError::new(
                ErrorCode::PermissionDenied,
                format!("the object store refused to serve {path}"),
            ),
            _ => RemoteError::new(
                ErrorCode::Internal,
                format!("the object store failed to serve {path}; try again"),
            ),
        }
    }

    /// Why there is no object at `path`: it is a folder, or nothing.
    fn neither(&self, path: &RemotePath) -> Result<RemoteError, RemoteError> {
        Ok(match path.is_root() || self.is_folder(path)? {
            true => RemoteError::new(ErrorCode::NotAFile, format!("not a regular file: {path}")),
            false => missing(path),
        })
    }

    /// Whether anything lies below `path` (then it is a folder).
    fn is_folder(&self, path: &RemotePath) -> Result<bool, RemoteError> {
        let prefix = self.folder_prefix(path);
        let page = self
            .wait(self.client.list_page(&prefix, true, None, Some(1)))
            .map_err(|err| self.failed(path, &err))?;
        Ok(!page.contents.is_empty() || !page.common_prefixes.is_empty())
    }

    /// The listing of the folder whose keys start with `prefix` (see
    /// [`Folder`]).
    fn folder(&self, shown: &RemotePath, prefix: &str) -> Result<Folder, RemoteError> {
        let mut items = Vec::new();
        let mut skipped = 0;
        let mut any = false;
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .wait(self.client.list_page(prefix, true, token.as_deref(), None))
                .map_err(|err| self.failed(shown, &err))?;
            any |= !page.contents.is_empty() || !page.common_prefixes.is_empty();
            for object in page.contents {
                let Some(name) = object.key.strip_prefix(prefix) else {
                    skipped += 1;
                    continue;
                };
                match name {
                    // A folder's own marker object.
                    "" => {}
                    name if !served_name(name) => skipped += 1,
                    name if name == stored::FOLDER => {}
                    name => match object.size {
                        Some(size) => items.push(Item {
                            name: name.to_owned(),
                            kind: EntryKind::File,
                            size,
                            modified: object.last_modified.as_deref().map_or(0, listed_time),
                            etag: object.etag.unwrap_or_default(),
                        }),
                        None => skipped += 1,
                    },
                }
            }
            for folder in page.common_prefixes {
                let name = folder
                    .prefix
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix('/'));
                match name {
                    Some(name) if name == stored::FOLDER => {}
                    Some(name) if served_name(name) => items.push(Item {
                        name: name.to_owned(),
                        kind: EntryKind::Dir,
                        size: 0,
                        modified: 0,
                        etag: String::new(),
                    }),
                    _ => skipped += 1,
                }
            }
            let next = page.next_continuation_token.filter(|next| !next.is_empty());
            if next.is_some() && next == token {
                token = next;
                break;
            }
            token = next;
            if token.is_none() {
                break;
            }
        }
        if token.is_some() {
            let err = s3::S3Error::Malformed {
                what: format!("listing of {prefix:?}"),
                reason: format!("no end after {MAX_PAGES} pages, or a page repeated"),
            };
            return Err(self.failed(shown, &err));
        }
        // Folders before files of the same name, then one of each name.
        items.sort_by(|a, b| {
            (a.name.as_str(), a.kind != EntryKind::Dir)
                .cmp(&(b.name.as_str(), b.kind != EntryKind::Dir))
        });
        let before = items.len();
        items.dedup_by(|later, first| later.name == first.name);
        skipped += (before - items.len()) as u64;
        Ok(Folder {
            items,
            skipped,
            any,
        })
    }

    /// [`Backend::read`], in one trip through the runtime however many
    /// pieces the store's reply comes in.
    async fn read_async(&self, file: &Object, pos: u64, len: usize) -> Result<Bytes, RemoteError> {
        let changed = || {
            RemoteError::new(
                ErrorCode::FileChanged,
                format!("{} changed while it was being read", file.path),
            )
        };
        let mut body = file.body.lock().await;
        let mut out = BytesMut::new();
        // A reply may break off midway once per endpoint; the read then goes
        // on from where it stopped, through the next.
        let mut broken = 0;
        while out.len() < len {
            let at = pos + out.len() as u64;
            if body
                .as_ref()
                .is_none_or(|open| open.pos != at || at >= open.end)
            {
                let last = body.as_ref().map(|open| (open.start, open.end));
                let window = next_window(last, at, len);
                let end = (at + window).min(file.stat.meta.size);
                if at >= end {
                    return Err(changed());
                }
                let reply = self
                    .client
                    .get(&file.key, (at, end), Some(&file.etag))
                    .await
                    .map_err(|err| self.failed(&file.path, &err))?
                    .ok_or_else(changed)?;
                let whole = at == 0 && end == file.stat.meta.size;
                if reply.status() != reqwest::StatusCode::PARTIAL_CONTENT && !whole {
                    let err = s3::S3Error::Malformed {
                        what: format!("GET of {:?} from byte {at}", file.key),
                        reason: format!("{} where a range was asked for", reply.status()),
                    };
                    return Err(self.failed(&file.path, &err));
                }
                *body = Some(Body {
                    start: at,
                    pos: at,
                    end,
                    reply,
                    held: Bytes::new(),
                });
            }
            let Some(open) = body.as_mut() else {
                continue;
            };
            if open.held.is_empty() {
                match open.reply.chunk().await {
                    Ok(Some(piece)) => open.held = piece,
                    // Pinned to its ETag, the object cannot end early
                    // unless it is another now.
                    Ok(None) if open.pos < open.end => return Err(changed()),
                    Ok(None) => continue,
                    Err(err) if broken < self.client.endpoints() => {
                        broken += 1;
                        tracing::warn!(
                            "object store: a read of {:?} broke off: {}",
                            file.key,
                            s3::describe(err)
                        );
                        self.client.skip_endpoint();
                        *body = None;
                        continue;
                    }
                    Err(err) => {
                        let err = s3::S3Error::Malformed {
                            what: format!("GET of {:?}", file.key),
                            reason: s3::describe(err),
                        };
                        return Err(self.failed(&file.path, &err));
                    }
                }
            }
            let take = open.held.len().min(len - out.len());
            if open.pos + take as u64 > open.end {
                // More than the window asked for: not this version's bytes.
                return Err(changed());
            }
            let piece = open.held.split_to(take);
            open.pos += take as u64;
            if out.is_empty() && take == len {
                return Ok(piece);
            }
            out.extend_from_slice(&piece);
        }
        Ok(out.freeze())
    }
}

/// One folder as the bucket listing gave it.
struct Folder {
    /// Its entries, sorted by name.
    items: Vec<Item>,
    /// How many were left out: names that are no name on disk (`..`,
    /// empty, too long, with a `/` or NUL), and objects named like a folder
    /// beside them.
    skipped: u64,
    /// Whether any key lies below the prefix at all (hidden, left out or a
    /// folder's marker included): then it is a folder, even an empty one.
    any: bool,
}

/// One entry of a folder as the listing gave it.
struct Item {
    name: String,
    kind: EntryKind,
    size: u64,
    modified: i64,
    etag: String,
}

/// Whether a key's last part can be a name on the wire: one component of a
/// path, as a name on disk would be.
fn served_name(name: &str) -> bool {
    RemotePath::parse(name).is_ok_and(|path| path.components() == [name])
}

/// A listing's `LastModified` (ISO 8601) in whole seconds; 0 if unreadable.
fn listed_time(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>()
        .map_or(0, |time| time.as_second())
}

/// The description of a file of `size` bytes modified at `modified`, in
/// whole seconds (what both `HEAD` and the listing can give).
fn meta(size: u64, modified: i64) -> FileMeta {
    FileMeta {
        size,
        mtime_secs: modified,
        mtime_nanos: 0,
        sha256: None,
    }
}

impl Backend for BucketFiles {
    type File = Object;
    type Version = ObjectVersion;

    fn open(&self, within: &RemotePath, path: &RemotePath) -> Result<Object, RemoteError> {
        self.open_at(within, path, 0)
    }

    fn open_at(
        &self,
        within: &RemotePath,
        path: &RemotePath,
        from: u64,
    ) -> Result<Object, RemoteError> {
        let hidden = path.components().iter().any(|name| name == stored::FOLDER);
        if path.strip_prefix(within).is_none() || hidden {
            return Err(missing(path));
        }
        let key = self.key(path);
        // The first bytes come with the description: a small file is read
        // in the same request that finds it, and reads that start further
        // on (a range of a chunk) start there.
        let window = match from {
            0 => FIRST_WINDOW,
            _ => CHUNK_SIZE,
        };
        let first = match key.is_empty() {
            true => None,
            false => self
                .wait(self.client.get(&key, (from, from + window), None))
                .map_err(|err| self.failed(path, &err))?,
        };
        let (head, body) = match first {
            Some(reply) => {
                let what = format!("GET of {key:?} from byte {from}");
                let head = s3::described(&reply, &what).map_err(|err| self.failed(path, &err))?;
                let (start, end) = match reply.status() == reqwest::StatusCode::PARTIAL_CONTENT {
                    true if s3::range_start(&reply) == Some(from) => {
                        (from, (from + window).min(head.size))
                    }
                    true => {
                        let err = s3::S3Error::Malformed {
                            what,
                            reason: "a range that does not start where asked".into(),
                        };
                        return Err(self.failed(path, &err));
                    }
                    // The whole object, the store ignoring the range.
                    false => (0, head.size),
                };
                let body = Body {
                    start,
                    pos: start,
                    end,
                    reply,
                    held: Bytes::new(),
                };
                (head, Some(body))
            }
            // No byte at `from`: an empty object, past the end, or none.
            None if !key.is_empty() => match self
                .wait(self.client.head(&key))
                .map_err(|err| self.failed(path, &err))?
            {
                Some(head) => (head, None),
                None => return Err(self.neither(path)?),
            },
            None => return Err(self.neither(path)?),
        };
        Ok(Object {
            stat: Stat {
                version: ObjectVersion::new(&key, &head.etag, head.size),
                meta: meta(head.size, head.modified),
            },
            path: path.clone(),
            key,
            etag: head.etag,
            body: tokio::sync::Mutex::new(body),
        })
    }

    fn stat(&self, file: &Object) -> Stat<ObjectVersion> {
        file.stat
    }

    fn read(&self, file: &Object, pos: u64, len: usize) -> Result<Bytes, RemoteError> {
        self.wait(self.read_async(file, pos, len))
    }

    fn unchanged(&self, _file: &Object) -> Result<(), RemoteError> {
        // Every read was pinned to the version opened: what was sent is it.
        Ok(())
    }

    fn local_file<'a>(&self, _file: &'a Object) -> Option<&'a std::fs::File> {
        None
    }

    fn list(
        &self,
        within: &RemotePath,
        path: &RemotePath,
        recursive: bool,
        emit: &mut dyn FnMut(Listed<ObjectVersion>) -> bool,
    ) -> Result<Walked, RemoteError> {
        let hidden = path.components().iter().any(|name| name == stored::FOLDER);
        if path.strip_prefix(within).is_none() || hidden {
            return Err(missing(path));
        }
        let top = self.folder_prefix(path);
        let Folder {
            items,
            mut skipped,
            any,
        } = self.folder(path, &top)?;
        // Nothing below it: a file, or nothing (that listing said so; no
        // second one is needed).
        if !any && !path.is_root() {
            let key = self.key(path);
            let object = self
                .wait(self.client.head(&key))
                .map_err(|err| self.failed(path, &err))?;
            return Err(match object {
                Some(_) => {
                    RemoteError::new(ErrorCode::NotADirectory, format!("not a folder: {path}"))
                }
                None => missing(path),
            });
        }
        // Depth first, a folder's entries right after it: each level is its
        // key prefix, its path below the listed folder, its entries and the
        // next one to emit.
        let mut stack = vec![(top, String::new(), items, 0usize)];
        let base_len = path.to_string().len();
        while let Some((prefix, relative_to, items, next)) = stack.last_mut() {
            let Some(item) = items.get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            let relative = match relative_to.is_empty() {
                true => item.name.clone(),
                false => format!("{relative_to}/{}", item.name),
            };
            if base_len + 1 + relative.len() > MAX_PATH_BYTES {
                skipped += 1;
                continue;
            }
            let key = format!("{prefix}{}", item.name);
            let version = (item.kind == EntryKind::File)
                .then(|| ObjectVersion::new(&key, &item.etag, item.size));
            let entry = Entry {
                path: relative.clone(),
                kind: item.kind,
                size: item.size,
                mtime_secs: item.modified,
                mtime_nanos: 0,
                sha256: None,
            };
            if !emit(Listed { entry, version }) {
                return Ok(Walked::Abandoned);
            }
            if recursive && item.kind == EntryKind::Dir {
                let below = key + "/";
                let shown =
                    RemotePath::parse(&relative).map_or(RemotePath::root(), |rel| path.join(&rel));
                let below_folder = self.folder(&shown, &below)?;
                skipped += below_folder.skipped;
                stack.push((below, relative, below_folder.items, 0));
            }
        }
        Ok(Walked::Complete { skipped })
    }

    fn stored_digests(&self, version: &ObjectVersion) -> Option<Digests> {
        // A small file is hashed as it is read whole: nothing is kept.
        if version.size <= MAX_DATA as u64 {
            return None;
        }
        let key = stored::key(&self.folder_prefix(&RemotePath::root()), &version.id);
        let limit = stored::len(version.size);
        match self.wait(self.client.get_small(&key, limit)) {
            Ok(Some(bytes)) => stored::decode(&bytes, &version.id, version.size),
            Ok(None) => None,
            Err(err) => {
                tracing::debug!("object store: kept digests unreadable: {err}");
                None
            }
        }
    }

    fn store_digests(&self, version: &ObjectVersion, digests: &Digests) {
        if version.size <= MAX_DATA as u64 {
            return;
        }
        let key = stored::key(&self.folder_prefix(&RemotePath::root()), &version.id);
        let body = stored::encode(&version.id, version.size, digests);
        if let Err(err) = self.wait(self.client.put(&key, body)) {
            if !self.cannot_keep.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot keep digests in the bucket (every server will hash each \
                     object itself): {err}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_disk_could_hold_are_served() {
        for name in ["a.txt", "ctl\u{1b}[31mred", "…", "a b"] {
            assert!(served_name(name), "{name:?}");
        }
        let long = "x".repeat(300);
        for name in ["", ".", "..", "a/b", "a\0b", "a\\b", long.as_str()] {
            assert!(!served_name(name), "{name:?}");
        }
    }

    #[test]
    fn reads_that_go_on_ask_for_twice_as_much_each_time() {
        let c = CHUNK_SIZE;
        assert_eq!(next_window(None, 0, 1 << 20), c);
        assert_eq!(
            next_window(Some((0, FIRST_WINDOW)), FIRST_WINDOW, 1),
            2 * FIRST_WINDOW
        );
        assert_eq!(next_window(Some((c, 3 * c)), 3 * c, 1), 4 * c);
        // A small file read whole after its first window: the rest at once.
        assert_eq!(
            next_window(Some((0, FIRST_WINDOW)), FIRST_WINDOW, 1 << 20),
            1 << 20
        );
        assert_eq!(
            next_window(Some((0, MAX_WINDOW)), MAX_WINDOW, 1),
            MAX_WINDOW
        );
        // Elsewhere: one chunk, or what is asked if more.
        assert_eq!(next_window(Some((0, c)), 5 * c, 1), c);
        assert_eq!(next_window(Some((0, c)), 5 * c, 9 << 20), 9 << 20);
    }

    #[test]
    fn a_version_is_the_key_and_the_etag_quoted_or_not() {
        let version = ObjectVersion::new("a/b", "\"abc\"", 10);
        assert_eq!(version, ObjectVersion::new("a/b", "abc", 10));
        assert_ne!(version, ObjectVersion::new("a/c", "abc", 10));
        assert_ne!(version, ObjectVersion::new("a/b", "abd", 10));
        assert_ne!(version, ObjectVersion::new("a/b", "abc", 11));
    }

    #[test]
    fn listed_times_are_whole_seconds_and_garbage_is_zero() {
        assert_eq!(listed_time("2026-11-30T20:19:08.258Z"), 1_796_069_948);
        assert_eq!(listed_time("not a time"), 0);
    }
}
