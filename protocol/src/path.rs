//! Remote paths: parsed once into ordinary components, never trusted as text.

use std::fmt;
use std::path::PathBuf;

use crate::error::PathError;
use crate::{MAX_NAME_BYTES, MAX_PATH_BYTES};

/// A path relative to the served root, made only of ordinary components: no
/// root, no `..`, no NUL, no backslash. Empty and `.` components are dropped,
/// so `./a//b` is `a/b`, and the empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemotePath {
    components: Vec<String>,
}

impl RemotePath {
    /// Parses a `/`-separated path as a peer or a user wrote it.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(text.len()));
        }
        if text.contains('\0') {
            return Err(PathError::Nul);
        }
        if text.contains('\\') {
            return Err(PathError::Backslash);
        }
        if text.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let mut components = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(PathError::ParentDir),
                name if name.len() > MAX_NAME_BYTES => {
                    return Err(PathError::NameTooLong(name.len()))
                }
                name => components.push(name.to_owned()),
            }
        }
        Ok(Self { components })
    }

    /// The root itself.
    pub fn root() -> Self {
        Self {
            components: Vec::new(),
        }
    }

    /// The rest of this path below `prefix`, if `prefix` is it or a folder
    /// above it.
    pub fn strip_prefix(&self, prefix: &RemotePath) -> Option<RemotePath> {
        self.components
            .strip_prefix(prefix.components.as_slice())
            .map(|rest| Self {
                components: rest.to_vec(),
            })
    }

    /// The components, in order from the root.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Whether this is the root itself.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// Whether `prefix` is this path or a folder above it, component by
    /// component: `pub/a` starts with `pub`, `pub-secret` does not.
    pub fn starts_with(&self, prefix: &RemotePath) -> bool {
        self.components.starts_with(&prefix.components)
    }

    /// `other` below this path.
    pub fn join(&self, other: &RemotePath) -> RemotePath {
        let mut components = self.components.clone();
        components.extend(other.components.iter().cloned());
        Self { components }
    }

    /// The path as a relative filesystem path (`.` for the root).
    pub fn to_relative(&self) -> PathBuf {
        if self.components.is_empty() {
            return PathBuf::from(".");
        }
        self.components.iter().collect()
    }
}

/// `/`-separated, as on the wire; the root shows as `.`.
impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components.is_empty() {
            return f.write_str(".");
        }
        f.write_str(&self.components.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_kept() {
        let p = RemotePath::parse("docs/./guide//intro.txt").expect("valid");
        assert_eq!(p.to_string(), "docs/guide/intro.txt");
        assert_eq!(p.to_relative(), PathBuf::from("docs/guide/intro.txt"));
        let root = RemotePath::parse("./").expect("root");
        assert_eq!(root.to_string(), ".");
        assert_eq!(root.to_relative(), PathBuf::from("."));
        assert!(
            RemotePath::parse("..foo/bar..").is_ok(),
            "dots inside names are fine"
        );
        assert!(root.is_root() && root.file_name().is_none());
        let joined = root.join(&p).join(&RemotePath::parse("x").expect("valid"));
        assert_eq!(joined.to_string(), "docs/guide/intro.txt/x");
        assert_eq!(joined.file_name(), Some("x"));
    }

    #[test]
    fn escapes_are_refused() {
        let cases = [
            ("..", PathError::ParentDir),
            ("../etc/passwd", PathError::ParentDir),
            ("a/../../b", PathError::ParentDir),
            ("a/..", PathError::ParentDir),
            ("/etc/passwd", PathError::Absolute),
            ("//server/share", PathError::Absolute),
            ("a\0b", PathError::Nul),
            ("..\\..\\windows", PathError::Backslash),
            ("C:\\x", PathError::Backslash),
        ];
        for (text, want) in cases {
            assert_eq!(RemotePath::parse(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn length_limits_hold() {
        let long_name = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            RemotePath::parse(&long_name),
            Err(PathError::NameTooLong(MAX_NAME_BYTES + 1))
        );
        let long_path = "a/".repeat(MAX_PATH_BYTES);
        assert!(matches!(
            RemotePath::parse(&long_path),
            Err(PathError::TooLong(_))
        ));
    }
}
