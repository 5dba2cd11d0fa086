//! Access tokens: the token file (names, what each may do, hashes of
//! tokens, the path each is limited to), making and removing tokens in it, and the check of a token a
//! client presents, in constant time, with failures limited per address.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ft_protocol::{RemotePath, Token};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// What every token starts with, so that a token pasted where it should not
/// be is recognisable.
const TOKEN_PREFIX: &str = "ftk_";

/// Longest token file read, in bytes: a million tokens' lines fit.
const MAX_FILE: u64 = 128 << 20;

/// Longest token name.
const MAX_NAME: usize = 64;

/// Failed attempts an address may make within [`WINDOW`]; past them, its
/// attempts are refused unchecked until the window ends.
pub const MAX_FAILURES: u32 = 5;

/// How long failures count against an address.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose failures are remembered at once; the oldest are
/// forgotten first.
const MAX_TRACKED: usize = 4096;

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the file is not `NAME [write|overwrite] sha256:HEX [PATH]`.
    #[error("{}, line {line}: {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A name that cannot be used.
    #[error("bad token name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ - @")]
    BadName(String),
    /// A path prefix that cannot be used.
    #[error("bad --path {0:?}: {1}")]
    BadPath(String, ScopeError),
    /// The system's random generator failed.
    #[error("cannot make a token: the system's random generator failed")]
    Random,
    /// `add` of a name already in the file.
    #[error("a token named {0} already exists; remove it first")]
    Exists(String),
    /// `remove` of a name not in the file.
    #[error("no token named {0}")]
    Unknown(String),
}

/// One token as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Who it was given to; logs name it.
    pub name: String,
    /// SHA-256 of the token's text.
    hash: [u8; 32],
    /// The folder it is limited to; the root when `None`.
    pub scope: Option<RemotePath>,
    /// What it may do there.
    pub access: Access,
}

/// What a token may do within its folder. Ordered: each allows what the
/// ones before it do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Download and list.
    #[default]
    Read,
    /// Also upload files under names not yet taken (`--write`).
    Write,
    /// Also replace files when the client asks (`--overwrite`).
    Overwrite,
}

impl Access {
    /// The word the token file and `token list` use; none for reading.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Access::Read => None,
            Access::Write => Some("write"),
            Access::Overwrite => Some("overwrite"),
        }
    }
}

/// What a client may reach: everything, or one folder and what is below
/// it; and what it may do there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    folder: Option<RemotePath>,
    access: Access,
}

impl Scope {
    /// The whole served folder, to read: an anonymous client's.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The folder every path of the client is resolved within: the root,
    /// or the token's folder, so that no link inside it leads a client
    /// out of it.
    pub fn folder(&self) -> RemotePath {
        self.folder.clone().unwrap_or_else(RemotePath::root)
    }

    /// Whether `path` is the scope's folder or lies below it. Both are
    /// parsed paths, so `pub/../x` and `pub-secret` are never inside `pub`.
    pub fn allows(&self, path: &RemotePath) -> bool {
        match &self.folder {
            None => true,
            Some(prefix) => path.starts_with(prefix),
        }
    }

    /// What the client may do within its folder.
    pub fn access(&self) -> Access {
        self.access
    }
}

/// The token file's entries, in file order.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Entry>);

impl Tokens {
    /// Reads the token file.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        use std::io::Read;
        file.take(MAX_FILE).read_to_string(&mut text).map_err(io)?;
        Self::parse(&text, path)
    }

    /// Reads the token file, or no tokens if there is none yet.
    fn read_or_empty(path: &Path) -> Result<Self, TokenError> {
        match Self::read(path) {
            Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(Self::default())
            }
            other => other,
        }
    }

    fn parse(text: &str, path: &Path) -> Result<Self, TokenError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let malformed = |what: &str| TokenError::Malformed {
                path: path.to_path_buf(),
                line: index + 1,
                what: what.to_owned(),
            };
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ' ');
            let name = fields.next().unwrap_or_default();
            check_name(name).map_err(|_| malformed("bad name"))?;
            // Lines of read tokens are `NAME sha256:… [PATH]`, as before
            // writing existed: a word in the hash's place is the access,
            // and the hash follows it. A folder named `write` stays a folder.
            let mut second = fields.next();
            let access = match second {
                Some("write") => Access::Write,
                Some("overwrite") => Access::Overwrite,
                _ => Access::Read,
            };
            if access != Access::Read {
                let rest = fields.next().unwrap_or_default();
                fields = rest.splitn(2, ' ');
                second = fields.next();
            }
            let hash = second
                .and_then(|field| field.strip_prefix("sha256:"))
                .and_then(|hex| hex::decode(hex).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| malformed("expected sha256: and 64 hex digits after the name"))?;
            let scope = match fields.next() {
                None => None,
                Some(prefix) => {
                    Some(parse_scope(prefix).map_err(|_| malformed("bad path after the hash"))?)
                }
            };
            entries.push(Entry {
                name: name.to_owned(),
                hash,
                scope: scope.filter(|path| !path.is_root()),
                access,
            });
        }
        Ok(Self(entries))
    }

    /// The entries.
    pub fn entries(&self) -> &[Entry] {
        &self.0
    }

    /// The entry whose token `token` is: every entry is compared, each in
    /// constant time, so how long it takes says nothing of which matched.
    pub fn find(&self, token: &Token) -> Option<&Entry> {
        let hash: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        let mut found = None;
        for entry in &self.0 {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found
    }

    fn render(&self) -> String {
        let mut text =
            String::from("# ftserve tokens: NAME [write|overwrite] sha256:HASH-OF-TOKEN [PATH]\n");
        for entry in &self.0 {
            text.push_str(&entry.name);
            if let Some(word) = entry.access.word() {
                text.push(' ');
                text.push_str(word);
            }
            text.push_str(" sha256:");
            text.push_str(&hex::encode(entry.hash));
            if let Some(scope) = &entry.scope {
                text.push(' ');
                text.push_str(&scope.to_string());
            }
            text.push('\n');
        }
        text
    }

    /// Writes the file whole, mode 0600, by a rename: a server reading it
    /// sees the old file or the new one.
    fn write(&self, path: &Path) -> Result<(), TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let staged = path.with_file_name(format!(
            ".{}.new-{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("tokens"),
            std::process::id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)
            .map_err(io)?;
        let written = file
            .write_all(self.render().as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&staged, path));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(io(err));
        }
        Ok(())
    }
}

/// Makes a token named `name`, limited to `scope` if given, that may do
/// `access` there, adds its hash to the file at `path` (made, mode 0600, if
/// there is none) and returns the token: the only time it exists outside
/// the client.
pub fn add(
    path: &Path,
    name: &str,
    scope: Option<&str>,
    access: Access,
) -> Result<Token, TokenError> {
    check_name(name)?;
    let scope = scope
        .map(|prefix| parse_scope(prefix).map_err(|err| TokenError::BadPath(prefix.into(), err)))
        .transpose()?
        .filter(|path| !path.is_root());
    let mut tokens = Tokens::read_or_empty(path)?;
    if tokens.0.iter().any(|entry| entry.name == name) {
        return Err(TokenError::Exists(name.to_owned()));
    }
    let token = new_token()?;
    tokens.0.push(Entry {
        name: name.to_owned(),
        hash: Sha256::digest(token.expose().as_bytes()).into(),
        scope,
        access,
    });
    tokens.write(path)?;
    Ok(token)
}

/// Removes the token named `name` from the file.
pub fn remove(path: &Path, name: &str) -> Result<(), TokenError> {
    let mut tokens = Tokens::read(path)?;
    let before = tokens.0.len();
    tokens.0.retain(|entry| entry.name != name);
    if tokens.0.len() == before {
        return Err(TokenError::Unknown(name.to_owned()));
    }
    tokens.write(path)
}

/// 256 random bits from the operating system, as `ftk_` and 43 characters
/// of unpadded URL-safe base64.
fn new_token() -> Result<Token, TokenError> {
    let mut bytes = [0u8; 32];
    ft_protocol::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(Token::new(format!("{TOKEN_PREFIX}{text}")))
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(fits) {
        return Err(TokenError::BadName(name.to_owned()));
    }
    Ok(())
}

/// A path prefix as a scope. One the file's lines cannot hold (a control
/// character, a line break) is refused.
fn parse_scope(prefix: &str) -> Result<RemotePath, ScopeError> {
    if prefix.chars().any(char::is_control) || prefix.starts_with(' ') {
        return Err(ScopeError::Unwritable);
    }
    Ok(RemotePath::parse(prefix.trim_end_matches('/'))?)
}

/// Why a path cannot limit a token.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// It is not a plain relative path.
    #[error(transparent)]
    Path(#[from] ft_protocol::PathError),
    /// It has a control character or starts with a space.
    #[error("control characters and a leading space are not allowed")]
    Unwritable,
}

/// The token file as the server checks it: read again whenever it changes
/// on disk, so `ftserve token add` and `remove` take effect without a
/// restart. A file that cannot be read lets nobody in.
pub struct Gate {
    path: PathBuf,
    state: Mutex<GateState>,
}

struct GateState {
    /// What the loaded file was: inode, size, modification time.
    seen: Option<(u64, u64, i64, i64)>,
    tokens: Arc<Tokens>,
    failures: Failures,
}

/// How a client's hello fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A known token: its name and what it may reach.
    Allowed {
        /// The token's name.
        name: String,
        /// What it may reach.
        scope: Scope,
    },
    /// No token, or an unknown one.
    Refused,
    /// Too many failures from this address lately; not checked.
    Throttled,
}

impl Gate {
    /// A gate over the token file at `path`, read now: a server must not
    /// start on a file it cannot read.
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        let tokens = Tokens::read(path)?;
        let seen = stamp(path);
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(GateState {
                seen,
                tokens: Arc::new(tokens),
                failures: Failures::default(),
            }),
        })
    }

    /// Judges the token a client at `addr` presented.
    pub fn check(&self, addr: IpAddr, token: Option<&Token>) -> Verdict {
        let now = Instant::now();
        let tokens = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.failures.throttled(addr, now) {
                return Verdict::Throttled;
            }
            let seen = stamp(&self.path);
            if seen != state.seen {
                state.seen = seen;
                state.tokens = match Tokens::read(&self.path) {
                    Ok(tokens) => Arc::new(tokens),
                    Err(err) => {
                        tracing::warn!("token file unusable, refusing every client: {err}");
                        Arc::new(Tokens::default())
                    }
                };
            }
            Arc::clone(&state.tokens)
        };
        match token.and_then(|token| tokens.find(token)) {
            Some(entry) => Verdict::Allowed {
                name: entry.name.clone(),
                scope: Scope {
                    folder: entry.scope.clone(),
                    access: entry.access,
                },
            },
            None => {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.failures.failed(addr, now);
                Verdict::Refused
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
}

/// Recent failures by address, at most [`MAX_TRACKED`] addresses.
#[derive(Default)]
struct Failures(HashMap<IpAddr, (Instant, u32)>);

impl Failures {
    fn throttled(&mut self, addr: IpAddr, now: Instant) -> bool {
        match self.0.get(&addr) {
            Some(&(since, _)) if now.duration_since(since) >= WINDOW => {
                self.0.remove(&addr);
                false
            }
            Some(&(_, count)) => count >= MAX_FAILURES,
            None => false,
        }
    }

    fn failed(&mut self, addr: IpAddr, now: Instant) {
        if !self.0.contains_key(&addr) && self.0.len() >= MAX_TRACKED {
            self.0
                .retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if self.0.len() >= MAX_TRACKED {
                let oldest = self.0.iter().min_by_key(|(_, (since, _))| *since);
                if let Some(oldest) = oldest.map(|(addr, _)| *addr) {
                    self.0.remove(&oldest);
                }
            }
        }
        let entry = self.0.entry(addr).or_insert((now, 0));
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn path(text: &str) -> RemotePath {
        RemotePath::parse(text).expect("a path")
    }

    #[test]
    fn a_scope_holds_its_folder_and_what_is_below_only() {
        let scope = Scope {
            folder: Some(path("pub")),
            access: Access::Read,
        };
        for inside in ["pub", "pub/a", "pub/a/b"] {
            assert!(scope.allows(&path(inside)), "{inside}");
        }
        for outside in ["", "pub-secret", "pubx/a", "secret", "p"] {
            assert!(!scope.allows(&path(outside)), "{outside}");
        }
        assert!(Scope::everything().allows(&path("")));
    }

    #[test]
    fn added_tokens_are_found_by_their_text_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        let alice = add(&file, "alice", None, Access::Read).expect("added");
        let bob = add(&file, "bob", Some("pub/"), Access::Read).expect("added");
        assert!(alice.expose().starts_with("ftk_") && alice.expose().len() == 47);
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(!text.contains(alice.expose()) && !text.contains(bob.expose()));
        let tokens = Tokens::read(&file).expect("read");
        assert_eq!(tokens.find(&alice).map(|e| e.name.as_str()), Some("alice"));
        let found = tokens.find(&bob).expect("bob");
        assert_eq!(found.scope, Some(path("pub")));
        assert!(tokens.find(&Token::new("ftk_guess")).is_none());
        assert!(matches!(
            add(&file, "alice", None, Access::Read),
            Err(TokenError::Exists(_))
        ));
        remove(&file, "alice").expect("removed");
        assert!(Tokens::read(&file).expect("read").find(&alice).is_none());
        assert!(matches!(
            remove(&file, "alice"),
            Err(TokenError::Unknown(_))
        ));
        for bad in ["", "a b", "x/y", &"n".repeat(65)] {
            assert!(
                matches!(
                    add(&file, bad, None, Access::Read),
                    Err(TokenError::BadName(_))
                ),
                "{bad}"
            );
        }
        for bad in ["../x", "a\nb", "/abs"] {
            assert!(
                matches!(
                    add(&file, "c", Some(bad), Access::Read),
                    Err(TokenError::BadPath(..))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn access_words_are_read_and_written_and_a_folder_named_write_stays_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        let writer = add(&file, "w", Some("incoming"), Access::Write).expect("added");
        let owner = add(&file, "o", None, Access::Overwrite).expect("added");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.contains("\nw write sha256:"), "{text}");
        assert!(text.contains("\no overwrite sha256:"), "{text}");
        let tokens = Tokens::read(&file).expect("read");
        let found = tokens.find(&writer).expect("w");
        assert_eq!(
            (found.access, found.scope.clone()),
            (Access::Write, Some(path("incoming")))
        );
        assert_eq!(
            tokens.find(&owner).map(|e| e.access),
            Some(Access::Overwrite)
        );
        // A read token limited to a folder named `write`, in the old layout.
        let hash = hex::encode([1u8; 32]);
        let old = Tokens::parse(&format!("r sha256:{hash} write\n"), Path::new("t")).expect("ok");
        assert_eq!(old.0[0].access, Access::Read);
        assert_eq!(old.0[0].scope, Some(path("write")));
        assert!(Tokens::parse("r write nohash\n", Path::new("t")).is_err());
    }

    #[test]
    fn a_malformed_line_is_named() {
        let err = Tokens::parse("# c\nok sha256:00\n", Path::new("t")).expect_err("bad");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn the_gate_sees_changes_and_throttles_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        let first = add(&file, "first", None, Access::Read).expect("added");
        let gate = Gate::open(&file).expect("opens");
        assert!(matches!(
            gate.check(HOME, Some(&first)),
            Verdict::Allowed { .. }
        ));
        let second = add(&file, "second", Some("pub"), Access::Write).expect("added");
        assert_eq!(
            gate.check(HOME, Some(&second)),
            Verdict::Allowed {
                name: "second".into(),
                scope: Scope {
                    folder: Some(path("pub")),
                    access: Access::Write,
                }
            }
        );
        remove(&file, "first").expect("removed");
        assert_eq!(gate.check(HOME, Some(&first)), Verdict::Refused);
        for _ in 1..MAX_FAILURES {
            assert_eq!(gate.check(HOME, None), Verdict::Refused);
        }
        // Throttled now, even with a good token; other addresses are not.
        assert_eq!(gate.check(HOME, Some(&second)), Verdict::Throttled);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert!(matches!(
            gate.check(other, Some(&second)),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn failures_are_remembered_for_a_bounded_number_of_addresses() {
        let mut failures = Failures::default();
        let now = Instant::now();
        for n in 0..(MAX_TRACKED as u32 + 100) {
            failures.failed(IpAddr::V4(n.into()), now);
        }
        assert!(failures.0.len() <= MAX_TRACKED);
    }
}
