//! The batch layer: many files in one job (several PATHs, whole trees with
//! `-r`). `plan` lists or notes each PATH once and checks every path the
//! server names before anything is written; `pool` fetches the files over a
//! few connections, each kept from one file to the next, small files
//! pipelined (`small`), files already there left alone (`present`). This
//! module holds the job's outcome types and runs it.

mod plan;
mod pool;
mod present;
mod small;

use std::collections::VecDeque;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Chain, Error};
use crate::exit::Exit;
use crate::progress::Progress;
use crate::session::{Link, Server};
use crate::transfer::{Policy, Report};

pub use plan::MAX_ENTRIES;

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

    fn add(&mut self, outcome: FileOutcome) {
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

    fn fail(&mut self, path: String, err: &Error) {
        self.failed += 1;
        self.failures.push(FailureReport {
            path,
            error: Chain(err).to_string(),
            exit: err.exit(),
        });
    }
}

/// Runs the batch: plans it, then fetches every file. `make_progress` gets
/// the number of files and bytes once they are known; `on_file` hears of
/// each file as it ends.
pub async fn run(
    batch: &Batch,
    make_progress: impl FnOnce(u64, u64) -> Progress,
    mut on_file: impl FnMut(&FileOutcome, &Progress),
) -> Summary {
    let started = Instant::now();
    let mut link = Link::new(&batch.server);
    let mut plan = plan::plan(&mut link, batch).await;
    let bytes = plan
        .targets
        .iter()
        .filter_map(|target| target.listed.map(|meta| meta.size))
        .sum();
    let total = (plan.targets.len() + plan.failed.len()) as u64;
    let progress = make_progress(total, bytes);
    let mut summary = Summary {
        files: total,
        skipped_by_server: plan.skipped,
        ..Summary::default()
    };
    let mut take = |outcome: FileOutcome, summary: &mut Summary| {
        progress.file_done();
        on_file(&outcome, &progress);
        summary.add(outcome);
    };
    for outcome in std::mem::take(&mut plan.failed) {
        take(outcome, &mut summary);
    }
    for dir in &plan.dirs {
        if let Err(source) = fs::create_dir_all(dir) {
            let err = Error::Folder {
                path: dir.clone(),
                source,
            };
            summary.fail(dir.display().to_string(), &err);
        }
    }

    let queue = Mutex::new(VecDeque::from(plan.targets));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let workers = batch.connections.max(1);
    let mut links = vec![link];
    links.extend((1..workers).map(|_| Link::new(&batch.server)));
    let pool = futures_util::future::join_all(
        links
            .into_iter()
            .map(|link| pool::worker(link, &batch.policy, &queue, tx.clone(), &progress)),
    );
    drop(tx);
    let collect = async {
        while let Some(outcome) = rx.recv().await {
            take(outcome, &mut summary);
        }
    };
    tokio::join!(pool, collect);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.verified = summary.failures.is_empty();
    summary
}

/// Runs `work` on each item, in order, on one blocking thread: one trip
/// for a batch of small files. If that thread panics, every item fails with
/// the panic as its cause; none is dropped.
async fn blocking_each<T, R>(
    items: Vec<T>,
    work: impl Fn(&T) -> R + Send + 'static,
) -> Vec<(T, Result<R, Error>)>
where
    T: Clone + Send + Sync + 'static,
    R: Send + 'static,
{
    let items = Arc::new(items);
    let shared = Arc::clone(&items);
    let done = tokio::task::spawn_blocking(move || shared.iter().map(work).collect::<Vec<_>>());
    let done = done.await;
    // The thread's handle on the items ended with it, panic or not: they
    // are this task's alone again (a copy only if that ever failed).
    let items = Arc::try_unwrap(items).unwrap_or_else(|items| items.as_ref().clone());
    match done {
        Ok(results) => items.into_iter().zip(results.into_iter().map(Ok)).collect(),
        Err(err) => {
            let err = Arc::new(err);
            let failed = |item| (item, Err(Error::Worker(Arc::clone(&err))));
            items.into_iter().map(failed).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_worker_fails_every_file_it_had() {
        let done = blocking_each(vec![1, 2, 3], |n| {
            assert!(*n != 2, "a file that breaks the worker");
            n * 10
        })
        .await;
        assert_eq!(done.len(), 3, "no file dropped");
        for (item, result) in &done {
            assert!(
                matches!(result, Err(Error::Worker(_))),
                "{item}: {result:?}"
            );
            let err = result.as_ref().err().map(|err| Chain(err).to_string());
            assert!(
                err.as_deref().is_some_and(
                    |e| e.starts_with("a worker thread failed: ") && e.contains("panicked")
                ),
                "{err:?}"
            );
        }
        let fine = blocking_each(vec![1, 2], |n| n * 10).await;
        let values: Vec<_> = fine.into_iter().map(|(n, r)| (n, r.ok())).collect();
        assert_eq!(values, [(1, Some(10)), (2, Some(20))]);
    }

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
