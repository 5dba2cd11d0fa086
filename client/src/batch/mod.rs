//! The batch layer: many files in one job (several PATHs, whole trees with
//! `-r`). `plan` lists or notes each PATH once and checks every path the
//! server names before anything is written; `pool` fetches the files over a
//! few connections, each kept from one file to the next, small files
//! pipelined (`small`), files already there left alone (`present`).
//! `outcome` says what a job is and how it ended; this module runs it.

mod offload;
mod outcome;
mod plan;
mod pool;
mod present;
mod small;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::error::Error;
use crate::progress::Progress;
use crate::session::Link;

pub use outcome::{Batch, Done, FailureReport, FileOutcome, Summary};
pub use plan::MAX_ENTRIES;

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
        if let Err(err) = plan.folder.make_dirs(dir) {
            let shown = plan.folder.shown(dir).display().to_string();
            summary.fail(shown, &Error::folder(err));
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
