//! Many files up: a pool of connections takes them in order; each worker
//! sends small files (one chunk or none) in pipelined runs, every request
//! of a run in one write and the answers read after, and a large file on
//! its own through `send`. A connection lost mid-run puts the files it had
//! not finished back in the queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use ft_protocol::{Digest, ErrorCode, Request, Response, CHUNK_SIZE};

use super::send::{self, Item, Options, Sent, Version};
use super::{describe, report, PutReport, PutSummary};
use crate::error::{Chain, Error};
use crate::exit::Exit;
use crate::output::Show;
use crate::output::{count, print_json, say};
use crate::progress::Progress;
use crate::session::{remote, Failure, Link, Retries, Server};

/// Small files sent ahead of their answers on one connection, at most.
const RUN_FILES: usize = 32;

/// Bytes of small files in one run, at most.
const RUN_BYTES: u64 = 8 << 20;

/// The queue the workers share.
type Queue = Arc<Mutex<VecDeque<(Item, u64)>>>;

/// One file's end.
type Outcome = (Item, Result<PutReport, Error>);

/// Uploads `items` over a pool of connections; prints each file's outcome
/// as it ends and a summary last.
pub(super) async fn run(
    server: &Arc<Server>,
    items: Vec<Item>,
    options: &Options,
    show: Show,
    skipped: u64,
) -> Exit {
    let started = Instant::now();
    let sized: VecDeque<(Item, u64)> = items
        .into_iter()
        .map(|item| {
            let size = std::fs::metadata(&item.local).map_or(0, |meta| meta.len());
            (item, size)
        })
        .collect();
    let files = sized.len() as u64;
    let bytes = sized.iter().map(|(_, size)| size).sum();
    let progress = Progress::many(files, bytes, show.bar());
    let workers = options.connections.clamp(1, sized.len().max(1));
    let queue: Queue = Arc::new(Mutex::new(sized));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut pool = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (server, queue, tx, progress) = (
            Arc::clone(server),
            Arc::clone(&queue),
            tx.clone(),
            progress.clone(),
        );
        let options = Options {
            connections: 1,
            ..options.clone()
        };
        pool.spawn(async move { worker(&server, &queue, &options, &progress, &tx).await });
    }
    drop(tx);
    let mut summary = PutSummary {
        files,
        skipped,
        ..PutSummary::default()
    };
    while let Some((item, result)) = rx.recv().await {
        progress.file_done();
        match result {
            Ok(report) => {
                match report.up_to_date {
                    true => summary.up_to_date += 1,
                    false => summary.uploaded += 1,
                }
                summary.bytes += report.size;
                summary.bytes_sent += report.bytes_sent;
                if show.json {
                    print_json(&report);
                }
                if show.verbose && !show.quiet {
                    progress.line(&format!("ftput: {}", describe(&report)));
                }
            }
            Err(err) => {
                summary.failed += 1;
                summary.failures.push(crate::FailureReport {
                    path: item.local.display().to_string(),
                    error: Chain(&err).to_string(),
                    exit: err.exit(),
                });
            }
        }
    }
    while pool.join_next().await.is_some() {}
    progress.clear();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.verified = summary.failed == 0;
    for failure in &summary.failures {
        say(&format!(
            "ftput: cannot upload {}: {}",
            failure.path, failure.error
        ));
    }
    if show.json {
        print_json(&summary);
    }
    if !show.quiet {
        let files = count(summary.files, "file", "files");
        let mut line = format!(
            "ftput: {files}, {}: {} uploaded, {} already on the server, {} failed; {} sent in {:.2} s",
            indicatif::HumanBytes(summary.bytes),
            summary.uploaded,
            summary.up_to_date,
            summary.failed,
            indicatif::HumanBytes(summary.bytes_sent),
            summary.seconds
        );
        if summary.skipped > 0 {
            line.push_str(&format!(
                " (left out {} links, special files or names that are not UTF-8)",
                summary.skipped
            ));
        }
        say(&line);
    }
    let worst = summary.failures.iter().map(|f| f.exit).max();
    match (worst, summary.skipped) {
        (Some(worst), _) => worst,
        (None, 0) => Exit::Success,
        (None, _) => Exit::Success,
    }
}

/// One connection of the pool: takes files until the queue is empty.
async fn worker(
    server: &Arc<Server>,
    queue: &Queue,
    options: &Options,
    progress: &Progress,
    done: &tokio::sync::mpsc::UnboundedSender<Outcome>,
) {
    let mut link = Link::new(server);
    let mut retries = Retries::new(options.retries);
    loop {
        let run = take_run(queue);
        let Some((first, size)) = run.first().cloned() else {
            return;
        };
        if size > CHUNK_SIZE || run.len() == 1 && size == CHUNK_SIZE {
            let started = Instant::now();
            let mut tracker = progress.tracker();
            let result = send::send(server, &mut link, &first, options, &mut tracker).await;
            let result = result.map(|sent| report(&first, &sent, started));
            let _ = done.send((first, result));
            continue;
        }
        match pipelined(server, &mut link, run, options, progress, done).await {
            Ok(()) => retries.progressed(),
            Err((left, err)) => {
                link.reset();
                if let Err(err) = retries.failed(err).await {
                    // Out of retries: what this worker held fails with it,
                    // the first file with the failure itself.
                    let copies: Vec<Error> = left.iter().skip(1).map(|_| copy(&err)).collect();
                    let errors = std::iter::once(err).chain(copies);
                    for ((item, _), err) in left.into_iter().zip(errors) {
                        let _ = done.send((item, Err(err)));
                    }
                    return;
                }
                // Back in the queue, for this worker or another.
                queue.lock().unwrap_or_else(|e| e.into_inner()).extend(left);
            }
        }
    }
}

/// The same failure again, for each further file it ends, with the same
/// exit code where it matters (a connection lost: 5).
fn copy(err: &Error) -> Error {
    match err {
        Error::Connection { server, .. } => Error::Connection {
            server: server.clone(),
            source: crate::error::ConnectError::Lost(ft_protocol::ConnectionError::Closed),
        },
        other => Error::Server {
            server: Chain(other).to_string(),
            source: crate::error::ServerError::Lost,
        },
    }
}

/// The next files: one large one, or a run of small ones.
fn take_run(queue: &Queue) -> Vec<(Item, u64)> {
    let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Vec::new();
    let mut bytes = 0;
    while let Some((_, size)) = queue.front() {
        let small = *size < CHUNK_SIZE;
        if !run.is_empty() && (!small || run.len() >= RUN_FILES || bytes + size > RUN_BYTES) {
            break;
        }
        let Some(next) = queue.pop_front() else {
            break;
        };
        bytes += next.1;
        run.push(next);
        if !small {
            break;
        }
    }
    run
}

/// Sends a run of small files, every request in one write, then reads the
/// answers. Files that end (stored or refused) are reported; on a lost
/// connection, the files not yet ended come back with the failure.
pub(super) async fn pipelined(
    server: &Arc<Server>,
    link: &mut Link<'_>,
    run: Vec<(Item, u64)>,
    options: &Options,
    progress: &Progress,
    done: &tokio::sync::mpsc::UnboundedSender<Outcome>,
) -> Result<(), (Vec<(Item, u64)>, Error)> {
    let started = Instant::now();
    // Each file: its version, and its SHA-256.
    let mut versions: Vec<Option<(Version, Digest)>> = Vec::with_capacity(run.len());
    let mut requests = Vec::new();
    let paths: Vec<_> = run.iter().map(|(item, _)| item.local.clone()).collect();
    let hashed = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|path| send::hash_whole(path))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for ((item, _), hashed) in run.iter().zip(
        hashed
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat_with(|| None)),
    ) {
        let hashed = hashed.unwrap_or(Err(Error::Worker(crate::error::WorkerError::Hasher)));
        match hashed {
            // Grown past one chunk since it was planned: on its own.
            Ok(None) => {
                let result = alone(server, item, options, progress).await;
                let _ = done.send((item.clone(), result));
                versions.push(None);
            }
            Ok(Some(send::Whole {
                version,
                states,
                sha256,
                bytes,
            })) => {
                requests.push(send::put_request(&item.remote, &version, options.overwrite));
                if let Some((start, end)) = states {
                    requests.push(Request::Chunk {
                        index: 0,
                        start,
                        end,
                    });
                    requests.extend(
                        send::pieces(Bytes::from(bytes))
                            .into_iter()
                            .map(Request::Data),
                    );
                }
                requests.push(Request::Commit { sha256 });
                versions.push(Some((version, sha256)));
            }
            Err(err) => {
                let _ = done.send((item.clone(), Err(err)));
                versions.push(None);
            }
        }
    }
    let lost =
        |err: Failure, from: usize, run: &[(Item, u64)], versions: &[Option<(Version, Digest)>]| {
            let left: Vec<(Item, u64)> = run[from..]
                .iter()
                .zip(&versions[from..])
                .filter(|(_, version)| version.is_some())
                .map(|(entry, _)| entry.clone())
                .collect();
            let err = match err {
                Failure::Retry(err) | Failure::Fatal(err) => err,
                _ => Error::Server {
                    server: server.label.clone(),
                    source: crate::error::ServerError::Lost,
                },
            };
            (left, err)
        };
    if requests.is_empty() {
        return Ok(());
    }
    if let Err(failure) = link.send_all(&requests).await {
        return Err(lost(failure, 0, &run, &versions));
    }
    for (at, ((item, _), version)) in run.iter().zip(&versions).enumerate() {
        let Some((version, sha256)) = version else {
            continue;
        };
        let answers = 2 + usize::from(version.size > 0);
        let mut outcome: Result<(), Failure> = Ok(());
        let mut meta = None;
        for _ in 0..answers {
            match link.read().await {
                Ok(Response::Error(err)) => {
                    if outcome.is_ok() {
                        outcome = Err(match err.code {
                            ErrorCode::Mismatch => Failure::Mismatch(0),
                            _ => remote(server, err),
                        });
                    }
                }
                Ok(Response::Meta(got)) => meta = Some(got),
                Ok(Response::Held { .. } | Response::Stored { .. }) => {}
                Ok(_) => {
                    link.reset();
                    return Err(lost(
                        Failure::Retry(Error::Server {
                            server: server.label.clone(),
                            source: crate::error::ServerError::UploadReply,
                        }),
                        at,
                        &run,
                        &versions,
                    ));
                }
                Err(failure) => return Err(lost(failure, at, &run, &versions)),
            }
        }
        let result = match (outcome, meta) {
            (Ok(()), Some(meta)) if meta.sha256 == Some(*sha256) => {
                let sent = Sent {
                    up_to_date: false,
                    size: version.size,
                    sha256: *sha256,
                    resumed_from: 0,
                    bytes_sent: version.size,
                    connections: 1,
                };
                progress.tracker().set(version.size);
                Ok(report(item, &sent, started))
            }
            // Perhaps this very file, stored by an earlier run: `send`
            // tells.
            (Err(Failure::Fatal(Error::Refused { reason, .. })), _)
                if reason.code == ErrorCode::AlreadyExists =>
            {
                alone(server, item, options, progress).await
            }
            (Err(Failure::Fatal(err)), _) => Err(err),
            // A changed file or a chunk found corrupt: again, on its own,
            // where both are handled.
            _ => alone(server, item, options, progress).await,
        };
        let _ = done.send((item.clone(), result));
    }
    Ok(())
}

/// A file of a run sent on its own connection, the way `send` sends any
/// file: what a run cannot settle (a file grown past one chunk, one found
/// corrupt or changed, a name taken that may hold this very file).
async fn alone(
    server: &Arc<Server>,
    item: &Item,
    options: &Options,
    progress: &Progress,
) -> Result<PutReport, Error> {
    let started = Instant::now();
    let mut tracker = progress.tracker();
    let mut own = Link::new(server);
    send::send(server, &mut own, item, options, &mut tracker)
        .await
        .map(|sent| report(item, &sent, started))
}
