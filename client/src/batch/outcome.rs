//! What a batch is and how it ends: the job, each file's outcome, and the
//! summary with its exit code.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Chain, Error};
use crate::exit::Exit;
use crate::session::Server;
use crate::transfer::{Policy, Report};

/// Several paths, each a file or (with `recursive`) a folder.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Where from.
    pub server: Server,
    /// How hard to try.
    pub policy: Policy,
    /// Remote paths as the user gave them.
    pub paths: Vec<String>,
    /// Each PATH lands here under its own name (the root's contents directly).
    pub outdir: PathBuf,
    /// Whether folders are downloaded whole.
    pub recursive: bool,
    /// Connections used at once.
    pub connections: usize,
}

/// How one file (or one PATH that could not be listed) ended.
#[derive(Debug)]
pub struct FileOutcome {
    /// The remote path.
    pub path: String,
    /// Downloaded, already up to date, or why not.
    pub result: Result<Done, Error>,
}

/// A file that ended verified.
#[derive(Debug)]
pub enum Done {
    /// Fetched (wholly or in part) and verified.
    Downloaded(Report),
    /// Already present with the server's size and SHA-256; nothing fetched.
    UpToDate(Report),
}

impl Done {
    /// The report, whichever way the file was verified.
    pub fn report(&self) -> &Report {
        match self {
            Done::Downloaded(report) | Done::UpToDate(report) => report,
        }
    }
}

/// The whole job, for the last line (and the last `--json` object).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Files the job covered.
    pub files: u64,
    /// Files fetched and verified.
    pub downloaded: u64,
    /// Files already present and verified, left alone.
    pub up_to_date: u64,
    /// Files (or paths) that failed.
    pub failed: u64,
    /// Bytes of the verified files.
    pub bytes: u64,
    /// File bytes that crossed the network.
    pub bytes_received: u64,
    /// Entries the server left out of its listings (see PROTOCOL.md).
    pub skipped_by_server: u64,
    /// Wall time.
    pub seconds: f64,
    /// Whether every file was verified.
    pub verified: bool,
    /// What failed and why.
    pub failures: Vec<FailureReport>,
}

/// One failure in the summary.
#[derive(Debug, Serialize)]
pub struct FailureReport {
    /// The remote path.
    pub path: String,
    /// What went wrong, with its causes.
    pub error: String,
    /// The exit code it maps to.
    pub exit: Exit,
}

impl Summary {
    /// The worst exit code among the failures: success only if all were verified.
    pub fn exit(&self) -> Exit {
        self.failures
            .iter()
            .map(|failure| failure.exit)
            .max()
            .unwrap_or(Exit::Success)
    }

    pub(super) fn add(&mut self, outcome: FileOutcome) {
        match outcome.result {
            Ok(done) => {
                let report = done.report();
                self.bytes += report.size;
                self.bytes_received += report.bytes_received;
                match done {
                    Done::Downloaded(_) => self.downloaded += 1,
                    Done::UpToDate(_) => self.up_to_date += 1,
                }
            }
            Err(err) => self.fail(outcome.path, &err),
        }
    }

    pub(super) fn fail(&mut self, path: String, err: &Error) {
        self.failed += 1;
        self.failures.push(FailureReport {
            path,
            error: Chain(err).to_string(),
            exit: err.exit(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_failure_decides_the_exit_code() {
        let mut summary = Summary::default();
        assert_eq!(summary.exit(), Exit::Success);
        for exit in [Exit::Failure, Exit::Verification, Exit::Refused] {
            summary.failures.push(FailureReport {
                path: "p".into(),
                error: "e".into(),
                exit,
            });
        }
        assert_eq!(summary.exit(), Exit::Verification);
        let json = serde_json::to_value(&summary.failures[1]).unwrap_or_default();
        assert_eq!(json["exit"], 4, "an exit is its code in JSON");
    }
}
