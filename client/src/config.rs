//! The settings of one run, as the user gave them, and what they resolve
//! to: one file to one name, or a batch of paths and folders.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::batch::Batch;
use crate::error::{Error, UsageError};
use crate::folder::Output;
use crate::output::Show;
use crate::session::Server;
use crate::transfer::{Job, Policy, Spare, Target};
use crate::trust::TrustSettings;

/// Settings as the user gave them.
#[derive(Debug, Clone)]
pub struct Config {
    /// SERVER as written.
    pub server: String,
    /// PATHs on the server.
    pub paths: Vec<String>,
    /// `-o`, if given.
    pub output: Option<PathBuf>,
    /// `-r`: download folders whole (with `--list`: list whole trees).
    pub recursive: bool,
    /// `--list`: list instead of downloading.
    pub list: bool,
    /// Whether to reuse a partial from an earlier run.
    pub resume: bool,
    /// Failed attempts in a row allowed.
    pub retries: u32,
    /// Connect and silence bound.
    pub timeout: Duration,
    /// Connections used at once, if the user chose (see
    /// `ONE_FILE_CONNECTIONS` and `MANY_FILES_CONNECTIONS`).
    pub connections: Option<usize>,
    /// What to print.
    pub show: Show,
    /// Whom to trust as the server.
    pub trust: TrustSettings,
    /// The access token to present, if any.
    pub token: Option<ft_protocol::Token>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Mode {
    /// One file to one local name.
    One(Job),
    /// Several paths, or folders.
    Many(Batch),
}

/// The server part of the settings, checked.
pub fn server(config: &Config) -> Result<Server, Error> {
    // ftget receives: the congestion control is the sender's to choose.
    Server::new(
        &config.server,
        config.timeout,
        config.trust.clone(),
        config.token.clone(),
        None,
    )
}

/// Connections one file may use by default: as many as aria2c's cap; the
/// controller only adds them while they make the download faster.
pub const ONE_FILE_CONNECTIONS: usize = 16;

/// Connections a batch's files share by default.
pub const MANY_FILES_CONNECTIONS: usize = 8;

/// Checks the settings and works out what to fetch and where to.
pub fn resolve(config: Config) -> Result<Mode, Error> {
    let server = server(&config)?;
    let policy = Policy {
        resume: config.resume,
        retries: config.retries,
        spare: std::sync::Arc::new(Spare::new(match config.paths.as_slice() {
            // One file: all the connections but its own. A batch's files
            // share those its workers leave (see `batch::pool`).
            [_] if !config.recursive => config
                .connections
                .unwrap_or(ONE_FILE_CONNECTIONS)
                .saturating_sub(1),
            _ => 0,
        })),
    };
    match config.paths.as_slice() {
        [] => Err(UsageError::NoPath.into()),
        [remote] if !config.recursive => Ok(Mode::One(Job {
            server,
            target: Target {
                remote: remote.clone(),
                output: Output::at(&output_path(remote, config.output.as_deref())?)
                    .ok_or_else(|| UsageError::NoFileName(remote.clone()))?,
                listed: None,
            },
            policy,
        })),
        _ => {
            let outdir = config.output.unwrap_or_else(|| PathBuf::from("."));
            if outdir.exists() && !outdir.is_dir() {
                return Err(UsageError::OutputNotFolder(outdir).into());
            }
            Ok(Mode::Many(Batch {
                server,
                policy,
                paths: config.paths,
                outdir,
                recursive: config.recursive,
                connections: config.connections.unwrap_or(MANY_FILES_CONNECTIONS),
            }))
        }
    }
}

/// The basename of PATH in the current folder; or `-o`, itself when it names
/// a file, or with the basename appended when it names a folder.
fn output_path(remote: &str, output: Option<&Path>) -> Result<PathBuf, Error> {
    let name = remote
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty() && *name != "." && *name != "..");
    let need_name = || {
        name.map(PathBuf::from)
            .ok_or_else(|| UsageError::NoFileName(remote.to_owned()).into())
    };
    match output {
        None => need_name(),
        Some(dir) if dir.is_dir() || dir.as_os_str().to_string_lossy().ends_with('/') => {
            Ok(dir.join(need_name()?))
        }
        Some(file) => Ok(file.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let named = |remote: &str, out: Option<&Path>| output_path(remote, out).ok();
        assert_eq!(named("info.txt", None), Some("info.txt".into()));
        assert_eq!(named("a/b/data.bin", None), Some("data.bin".into()));
        assert_eq!(named("a/b/", None), None);
        assert_eq!(named("..", None), None);
        assert_eq!(
            named("x/data.bin", Some(dir.path())),
            Some(dir.path().join("data.bin"))
        );
        assert_eq!(
            named("data.bin", Some(Path::new("new/"))),
            Some("new/data.bin".into())
        );
        assert_eq!(
            named("data.bin", Some(Path::new("copy.bin"))),
            Some("copy.bin".into())
        );
        assert_eq!(
            named("", Some(Path::new("copy.bin"))),
            Some("copy.bin".into())
        );
    }
}
