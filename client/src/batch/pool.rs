//! The connection pool of a batch: a few workers, each with a connection
//! kept from one file to the next, taking work from one queue. A worker
//! takes a run of small files (checked together if present, pipelined if
//! not) or one other file (checked, then fetched the careful way).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::outcome::{Done, FileOutcome};
use super::{present, small};
use crate::error::Error;
use crate::progress::Progress;
use crate::session::Link;
use crate::transfer::{fetch, Policy, Target};

/// Takes work from `queue` until it is empty, sending each file's outcome.
pub(super) async fn worker(
    mut link: Link<'_>,
    policy: &Policy,
    queue: &Mutex<VecDeque<Target>>,
    tx: mpsc::UnboundedSender<FileOutcome>,
    progress: &Progress,
) {
    // A download through `fetch` moved the bar as it went; any other file
    // verified is counted on it whole, once.
    let send = |path: String, result: Result<Done, Error>, tracked: bool| {
        if let (Ok(done), false) = (&result, tracked) {
            progress.tracker().set(done.report().size);
        }
        tx.send(FileOutcome { path, result }).is_ok()
    };
    loop {
        let batch = next_batch(queue);
        if batch.is_empty() {
            // This connection is free: a large file still on its way may
            // use one in its place.
            policy.spare.give(1);
            return;
        }
        // Small files already present are checked in one go; those not
        // present go out in one pipelined batch; what either hands back, and
        // everything else, goes one by one.
        let (small, mut careful): (Vec<Target>, Vec<Target>) =
            batch.into_iter().partition(small::eligible);
        let (fresh, present): (Vec<Target>, Vec<Target>) =
            small.into_iter().partition(small::absent);
        if !present.is_empty() {
            let sorted = present::sort(&mut link, present).await;
            for report in sorted.same {
                if !send(report.path.clone(), Ok(Done::UpToDate(report)), false) {
                    return;
                }
            }
            for (target, err) in sorted.failed {
                if !send(target.remote, Err(err), false) {
                    return;
                }
            }
            careful.extend(sorted.rest);
        }
        if !fresh.is_empty() {
            let fetched = small::fetch(&mut link, fresh).await;
            for (target, result) in fetched.ended {
                if !send(target.remote, result.map(Done::Downloaded), false) {
                    return;
                }
            }
            careful.extend(fetched.again);
        }
        for target in careful {
            let result = one(&mut link, policy, &target, progress).await;
            let tracked = matches!(result, Ok(Done::Downloaded(_)));
            if !send(target.remote, result, tracked) {
                return;
            }
        }
    }
}

/// The next work for a connection: a run of up to `PIPELINE` small files of
/// up to `PIPELINE_BYTES` in all (at least one), or one other file.
fn next_batch(queue: &Mutex<VecDeque<Target>>) -> Vec<Target> {
    let Ok(mut queue) = queue.lock() else {
        return Vec::new();
    };
    let mut batch = Vec::new();
    let mut bytes = 0;
    while batch.len() < small::PIPELINE {
        match queue.front() {
            Some(target) if small::eligible(target) => {
                bytes += small::listed_size(target);
                if bytes > small::PIPELINE_BYTES && !batch.is_empty() {
                    break;
                }
                batch.extend(queue.pop_front());
            }
            Some(_) if batch.is_empty() => {
                batch.extend(queue.pop_front());
                break;
            }
            _ => break,
        }
    }
    // A queue that has given out most of its targets gives their room back:
    // the failures a large batch gathers as it goes then take the place of
    // the targets they were, rather than add to it.
    if queue.capacity() > 4 * queue.len() + 1024 {
        let keep = 2 * queue.len();
        queue.shrink_to(keep);
    }
    batch
}

/// One file: left alone if already there and verified, fetched otherwise.
async fn one(
    link: &mut Link<'_>,
    policy: &Policy,
    target: &Target,
    progress: &Progress,
) -> Result<Done, Error> {
    let output = &target.output;
    if let Some(parent) = output.name().parent() {
        output.folder().make_dirs(parent).map_err(Error::folder)?;
    }
    let mut sorted = present::sort(link, vec![target.clone()]).await;
    if let Some(report) = sorted.same.pop() {
        return Ok(Done::UpToDate(report));
    }
    if let Some((_, err)) = sorted.failed.pop() {
        return Err(err);
    }
    let mut tracker = progress.tracker();
    fetch(link, policy, target, &mut tracker)
        .await
        .map(Done::Downloaded)
}
