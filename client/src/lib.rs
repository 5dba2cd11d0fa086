//! ftget: downloads a file from an ftserve server, verifies it chunk by chunk
//! and as a whole, and resumes where an earlier run stopped.
//!
//! [`resolve`] turns plain settings into a [`Job`]; [`download`] carries it out.

mod addr;
mod download;
mod error;
pub mod exit;
mod partial;
mod progress;
mod sink;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use download::{download, Job, Report};
pub use error::Error;
pub use exit::Exit;
pub use progress::Progress;

/// Settings as the user gave them.
#[derive(Debug, Clone)]
pub struct Config {
    /// SERVER as written.
    pub server: String,
    /// PATH on the server.
    pub remote: String,
    /// `-o`, if given.
    pub output: Option<PathBuf>,
    /// Whether to reuse a partial from an earlier run.
    pub resume: bool,
    /// Failed attempts in a row allowed.
    pub retries: u32,
    /// Connect and silence bound.
    pub timeout: Duration,
}

/// Checks the settings and works out the output path.
pub fn resolve(config: Config) -> Result<Job, Error> {
    let (host, port) = addr::parse_server(&config.server).map_err(Error::Usage)?;
    let output = output_path(&config.remote, config.output.as_deref())?;
    Ok(Job {
        server: config.server,
        host,
        port,
        remote: config.remote,
        output,
        resume: config.resume,
        retries: config.retries,
        timeout: config.timeout,
    })
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
