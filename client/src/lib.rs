//! ftget: downloads a file from an ftserve server, verifies it chunk by chunk
//! and as a whole, and resumes where an earlier run stopped.
//!
//! [`resolve`] turns plain settings into a [`Mode`]: one file is a [`Job`]
//! that [`download`] carries out; several files or folders are a [`Batch`]
//! for [`tree::run`]. [`list`] lists a folder.

mod addr;
mod download;
mod error;
pub mod exit;
mod link;
mod partial;
mod progress;
mod sink;
mod small;
mod tree;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use download::{download, Job, Policy, Report, Target};
pub use error::Error;
pub use exit::Exit;
pub use ft_protocol::{Entry, EntryKind, FileMeta};
pub use link::Server;
pub use progress::Progress;
pub use tree::{list, run as run_batch, Batch, Done, FailureReport, FileOutcome, Listed, Summary};

/// Settings as the user gave them.
#[derive(Debug, Clone)]
pub struct Config {
    /// SERVER as written.
    pub server: String,
    /// PATHs on the server.
    pub paths: Vec<String>,
    /// `-o`, if given.
    pub output: Option<PathBuf>,
    /// `-r`: download folders whole.
    pub recursive: bool,
    /// Whether to reuse a partial from an earlier run.
    pub resume: bool,
    /// Failed attempts in a row allowed.
    pub retries: u32,
    /// Connect and silence bound.
    pub timeout: Duration,
    /// Connections used at once for many files.
    pub connections: usize,
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
    let (host, port) = addr::parse_server(&config.server).map_err(Error::Usage)?;
    Ok(Server {
        label: config.server.clone(),
        host,
        port,
        timeout: config.timeout,
    })
}

/// Checks the settings and works out what to fetch and where to.
pub fn resolve(config: Config) -> Result<Mode, Error> {
    let server = server(&config)?;
    let policy = Policy {
        resume: config.resume,
        retries: config.retries,
    };
    match config.paths.as_slice() {
        [] => Err(Error::Usage("no PATH given".into())),
        [remote] if !config.recursive => Ok(Mode::One(Job {
            server,
            target: Target {
                remote: remote.clone(),
                output: output_path(remote, config.output.as_deref())?,
                listed: None,
            },
            policy,
        })),
        _ => {
            let outdir = config.output.unwrap_or_else(|| PathBuf::from("."));
            if outdir.exists() && !outdir.is_dir() {
                return Err(Error::Usage(format!(
                    "-o {}: with -r or several PATHs, -o names a folder",
                    outdir.display()
                )));
            }
            Ok(Mode::Many(Batch {
                server,
                policy,
                paths: config.paths,
                outdir,
                recursive: config.recursive,
                connections: config.connections,
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
        name.map(PathBuf::from).ok_or_else(|| {
            Error::Usage(format!(
                "cannot tell a file name from {remote:?}; name one with -o"
            ))
        })
    };
    match output {
        None => need_name(),
        Some(dir) if dir.is_dir() || dir.as_os_str().to_string_lossy().ends_with('/') => {
            Ok(dir.join(need_name()?))
        }
        Some(file) => Ok(file.to_owned()),
    }
}

/// For `benches/sink.rs` only: runs an honest server's `responses` for a file
/// of `size` bytes through the download sink into `file`, with `hashers`
/// hashing threads, and returns the verified digest, or why there is none.
#[doc(hidden)]
pub fn bench_sink(
    file: std::fs::File,
    size: u64,
    responses: Vec<ft_protocol::Response>,
    hashers: usize,
) -> Result<ft_protocol::Digest, String> {
    let meta = ft_protocol::FileMeta {
        size,
        mtime_secs: 0,
        mtime_nanos: 0,
        sha256: None,
    };
    let tracker = progress::Progress::new("bench", false).tracker();
    let sink = sink::Sink::new(file, partial::Verified::start(), &meta, tracker)
        .ok_or("the start is not on a block boundary")?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let feeder = std::thread::spawn(move || {
        for response in responses {
            if tx.blocking_send(response).is_err() {
                break;
            }
        }
    });
    let report = sink.with_hashers(hashers).run(rx);
    let _ = feeder.join();
    report.result.map_err(|err| format!("{err:?}"))
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
