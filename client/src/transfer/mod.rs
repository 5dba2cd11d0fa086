//! The transfer layer: one file. Describe it (a fresh download learns it
//! from its `Get`'s reply), decide where to start (a fresh partial, or the
//! chunks of an earlier one that still check out), fetch the holes (the
//! front stream through the sink, ranges beside it, see `swarm`), and give
//! the verified file its name; when a connection drops, go on with the
//! holes, as the retry policy allows.

mod chunks;
mod partial;
mod sink;
mod swarm;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ft_protocol::{Digest, FileMeta, GetError, Request, Response, CHUNK_SIZE};
use tokio::sync::mpsc;

use crate::error::{Error, ServerError, WorkerError};
use crate::folder::Output;
use crate::progress::{Progress, Tracker};
use crate::session::{broken, lost, remote as remote_failure, Failure, Link, Retries, Server};
use crate::verify::{self, Verified};
use chunks::Chunks;
use swarm::{Swarm, Table};

pub use partial::{partial_names, suffixed_owner, Partial};
pub use sink::{Sink, SinkError};
pub(crate) use swarm::Adapt;
pub use swarm::Spare;

/// Frames received ahead of the disk: at 1 MiB each, bounds the client's
/// buffering to a few MiB whatever the file size.
const RECEIVE_AHEAD: usize = 4;

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Target {
    /// Path on the server.
    pub remote: String,
    /// The final local name, beneath the output folder.
    pub output: Output,
    /// What a listing said of the file, which saves asking again.
    pub listed: Option<FileMeta>,
}

/// How downloads treat earlier partials and failures.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether a partial from an earlier run may be reused.
    pub resume: bool,
    /// Failed attempts in a row allowed before giving up.
    pub retries: u32,
    /// Connections a file may add beside its own, shared by all files.
    pub spare: Arc<Spare>,
}

/// One download, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Job {
    /// Where from.
    pub server: Server,
    /// What and where to.
    pub target: Target,
    /// How hard to try.
    pub policy: Policy,
}

/// What a finished download reports (`--json` prints exactly these fields).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The remote path.
    pub path: String,
    /// The local file written.
    pub output: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// Verified bytes reused from an earlier run's partial.
    pub resumed_from: u64,
    /// File bytes that crossed the network in this run.
    pub bytes_received: u64,
    /// Wall time of this run.
    pub seconds: f64,
    /// Whether the digest matched the server's (always, for a report).
    pub verified: bool,
    /// The most connections the file came over at once.
    #[serde(skip)]
    pub connections: usize,
}

impl Report {
    /// The report for `target`, verified as `sha256`.
    pub(crate) fn new(target: &Target, size: u64, sha256: &Digest, started: Instant) -> Self {
        Self {
            path: target.remote.clone(),
            output: target.output.shown().display().to_string(),
            size,
            sha256: ft_protocol::hash::to_hex(sha256),
            resumed_from: 0,
            bytes_received: 0,
            seconds: started.elapsed().as_secs_f64(),
            verified: true,
            connections: 1,
        }
    }
}

/// What carries over from one attempt to the next.
struct Progressed {
    /// The version being fetched.
    meta: Option<FileMeta>,
    /// Its chunks verified on disk.
    done: Vec<u64>,
    /// The server's states of it, once asked for.
    table: Option<Arc<Table>>,
    resumed_from: u64,
    received: u64,
    /// The most connections used at once.
    connections: usize,
}

impl Progressed {
    fn verified_bytes(&self) -> u64 {
        self.meta.map_or(0, |meta| {
            self.done
                .iter()
                .map(|&k| {
                    let (start, end) = chunks::bytes(k, meta.size);
                    end - start
                })
                .sum()
        })
    }

    /// Starting over: nothing of the last version counts.
    fn forget(&mut self) {
        self.meta = None;
        self.done.clear();
        self.table = None;
        self.resumed_from = 0;
    }
}

/// Downloads one file on a connection of its own, with its own progress bar.
pub async fn download(job: &Job, progress: &Progress) -> Result<Report, Error> {
    let mut link = Link::new(&job.server);
    let mut tracker = progress.tracker();
    fetch(&mut link, &job.policy, &job.target, &mut tracker).await
}

/// Downloads `target.remote` to `target.output`, verified, retrying as the
/// policy allows, on `link`'s connection (kept for the next file on success).
pub(crate) async fn fetch(
    link: &mut Link<'_>,
    policy: &Policy,
    target: &Target,
    tracker: &mut Tracker,
) -> Result<Report, Error> {
    let started = Instant::now();
    let partial = Partial::for_output(&target.output);
    let mut state = Progressed {
        meta: None,
        done: Vec::new(),
        table: None,
        resumed_from: 0,
        received: 0,
        connections: 1,
    };
    let mut known = target.listed;
    let mut retries = Retries::new(policy.retries);
    loop {
        let before = state.verified_bytes();
        let outcome = attempt(
            link,
            policy,
            target,
            known.take(),
            &partial,
            &mut state,
            tracker,
        );
        let failure = match outcome.await {
            Ok((meta, sha256)) => {
                return Ok(Report {
                    resumed_from: state.resumed_from,
                    bytes_received: state.received,
                    connections: state.connections,
                    ..Report::new(target, meta.size, &sha256, started)
                })
            }
            Err(failure) => failure,
        };
        // A refusal is a whole reply; anything else may leave the connection
        // mid-transfer.
        if !matches!(failure, Failure::Fatal(Error::Refused { .. })) {
            link.reset();
        }
        let retry_error = match failure {
            Failure::Fatal(err) => {
                if matches!(err, Error::Refused { .. }) {
                    // The file is gone or forbidden: a partial of it is
                    // useless, if it is ftget's, of this file, from here.
                    partial.discard(&link.server.label, &target.remote);
                }
                return Err(err);
            }
            // The swarm counts the failures of each chunk itself.
            Failure::Mismatch(_) => continue,
            // Starting over loses what was verified, so this always counts:
            // a file that never stops changing ends in an error, not a loop.
            Failure::Changed => {
                state.forget();
                Error::Server {
                    server: link.server.label.clone(),
                    source: ServerError::KeepsChanging {
                        path: target.remote.clone(),
                    },
                }
            }
            Failure::Retry(err) => {
                if state.verified_bytes() > before {
                    retries.progressed();
                }
                err
            }
        };
        // A download that gives up says how hard it tried (a listing, as
        // before, gives its last failure alone).
        let allowed = retries.allowed();
        retries
            .failed(retry_error)
            .await
            .map_err(|err| err.gave_up(allowed))?;
    }
}

/// One attempt: the version and what of it is on disk already, then the
/// front stream from the first hole and, beside it, as many range workers
/// as make it faster, until every chunk is verified.
async fn attempt(
    link: &mut Link<'_>,
    policy: &Policy,
    target: &Target,
    known: Option<FileMeta>,
    partial: &Partial,
    state: &mut Progressed,
    tracker: &mut Tracker,
) -> Result<(FileMeta, Digest), Failure> {
    let server = link.server;
    // A fresh download (nothing of ours beside the output) asks for the
    // file at once: the reply's `Meta` tells what a `Stat` would have.
    let fresh = state.meta.is_none() && known.is_none() && !(policy.resume && partial.is_ours());
    let mut asked = None;
    let meta = if fresh {
        link.conn().await?;
        let sent = Instant::now();
        let meta = front_meta(link, &target.remote, 0, None).await?;
        asked = Some(sent.elapsed());
        partial
            .begin(&server.label, &target.remote, &meta)
            .map_err(Failure::Fatal)?;
        state.forget();
        state.meta = Some(meta);
        meta
    } else {
        let meta = match known {
            Some(meta) => meta,
            None => link.stat(&target.remote).await?,
        };
        match state.meta {
            Some(known) if !known.same_version(&meta) => return Err(Failure::Changed),
            // Chunks this run verified are trusted only while the partial
            // still holds them; if it was cut or removed meanwhile, look
            // again from disk.
            Some(_) if partial.bytes_on_disk() >= state.verified_bytes() && partial.is_ours() => {}
            _ => {
                let first = state.meta.is_none();
                prepare(link, policy, target, partial, &meta, state, tracker).await?;
                state.meta = Some(meta);
                if first {
                    state.resumed_from = state.verified_bytes();
                }
            }
        }
        state.meta = Some(meta);
        meta
    };

    let chunks = Chunks::new(meta.size, state.done.iter().copied());
    // With every chunk on disk, the table's digest names the file; with
    // no table (an empty file, say), the front asks for it.
    let front_from = match (chunks.first_hole(), &state.table) {
        (Some(k), _) => Some(k * CHUNK_SIZE),
        (None, None) => Some(0),
        (None, Some(_)) => None,
    };
    let front_start = match front_from {
        None | Some(0) => Verified::start(),
        Some(offset) => {
            let table = state.table.as_ref();
            let state = table.and_then(|table| table.start(offset / CHUNK_SIZE));
            Verified {
                offset,
                state: state.ok_or_else(|| broken(server, ServerError::ResumePoint))?,
            }
        }
    };
    if let (Some(offset), None) = (front_from, asked) {
        let sent = Instant::now();
        front_meta(link, &target.remote, offset, Some(&meta)).await?;
        asked = Some(sent.elapsed());
    }
    tracker.start(meta.size, state.verified_bytes());
    let opened = partial.open_rw().map_err(Failure::Fatal)?;
    let swarm = Arc::new(Swarm::new(
        link.server.clone(),
        target.remote.clone(),
        meta,
        (opened, partial.data.shown()),
        chunks,
        state.table.clone(),
        policy.spare.clone(),
    ));
    let front_running = AtomicBool::new(front_from.is_some());
    let front_received = AtomicU64::new(0);
    let control = swarm::control(
        &swarm,
        asked.unwrap_or_default(),
        (&front_running, &front_received),
        partial,
        tracker.clone(),
        policy.retries,
    );
    tokio::pin!(control);
    let mut front_end = None;
    let mut front_digest = None;
    if let Some(offset) = front_from {
        let front = front(
            link,
            partial,
            (&meta, front_start),
            &swarm,
            &front_received,
            tracker,
        );
        let outcome = tokio::select! {
            outcome = front => outcome,
            controlled = &mut control => {
                // The download failed beside the front: nothing it brings
                // is wanted now.
                link.reset();
                finish_state(state, &swarm, &front_received, tracker);
                return Err(controlled.err().unwrap_or(Failure::Changed));
            }
        };
        front_running.store(false, Ordering::Release);
        match outcome {
            // The sink checked the bytes after the last boundary against
            // the digest itself.
            Ok(FrontEnd::Whole(sha256)) => {
                swarm.front_stopped(meta.size);
                front_digest = Some(sha256);
            }
            Ok(FrontEnd::Stopped(verified)) => {
                swarm.front_stopped(verified.offset);
                if verified.offset > offset {
                    front_end = Some(verified);
                }
            }
            Err((failure, verified)) => {
                swarm.front_stopped(verified.offset);
                if verified.offset > offset {
                    front_end = Some(verified);
                }
                match failure {
                    // The rest comes by ranges, if the retries allow one.
                    Failure::Retry(_) if swarm.ranged && !swarm.lost_one(policy.retries).1 => {
                        link.reset()
                    }
                    Failure::Mismatch(at) => {
                        link.reset();
                        swarm.front_mismatch(at);
                    }
                    failure => {
                        finish_state(state, &swarm, &front_received, tracker);
                        return Err(failure);
                    }
                }
            }
        }
    }
    // The controller hears at once that the front has ended, and how.
    swarm.wake.notify_one();
    let controlled = control.await;
    finish_state(state, &swarm, &front_received, tracker);
    state.connections = state.connections.max(*controlled.as_ref().unwrap_or(&1));
    controlled?;

    // Every chunk is verified: against the front's own checkpoints below
    // where it stopped, against the table above. Where they meet, both
    // must name the same state, or they are not one version.
    let table = swarm.table();
    let sha256 = match (front_digest, &table) {
        (Some(front), Some(table)) if front != table.sha256 => return Err(Failure::Changed),
        (Some(front), _) => front,
        (None, Some(table)) => {
            let joined = front_end.is_none_or(|end: Verified| {
                end.offset >= meta.size || table.start(end.offset / CHUNK_SIZE) == Some(end.state)
            });
            if !joined {
                return Err(Failure::Changed);
            }
            table.sha256
        }
        (None, None) => return Err(broken(server, ServerError::StoppedEarly)),
    };
    if front_digest.is_none() {
        swarm.settle(meta.modified()).map_err(Failure::Fatal)?;
    }
    partial.finish().map_err(Failure::Fatal)?;
    Ok((meta, sha256))
}

/// What this attempt leaves for the next: the verified chunks, the table,
/// the bytes received.
fn finish_state(
    state: &mut Progressed,
    swarm: &Swarm,
    front_received: &AtomicU64,
    tracker: &mut Tracker,
) {
    state.done = swarm.done();
    state.table = swarm.table().or(state.table.take());
    let front = front_received.load(Ordering::Acquire);
    state.received += front + swarm.received();
    tracker.moved(front + swarm.bar_moved.load(Ordering::Acquire));
}

/// Sends `Get` from `offset` and reads its `Meta`: the version, which must
/// be `expected` when one is.
async fn front_meta(
    link: &mut Link<'_>,
    remote: &str,
    offset: u64,
    expected: Option<&FileMeta>,
) -> Result<FileMeta, Failure> {
    let server = link.server;
    let get = Request::Get {
        path: remote.to_owned(),
        offset,
    };
    match link.ask(&get).await? {
        Response::Meta(now) if expected.is_none_or(|meta| now.same_version(meta)) => Ok(now),
        Response::Meta(_) => Err(Failure::Changed),
        Response::Error(err) => Err(remote_failure(server, err)),
        other => {
            let kind = other.kind();
            Err(broken(server, GetError::NoMeta { kind }.into()))
        }
    }
}

/// How the front stream ended.
enum FrontEnd {
    /// It reached `End`: the file's digest, the whole file verified.
    Whole(Digest),
    /// It stopped where the ranges had been, verified up to there.
    Stopped(Verified),
}

/// The front stream: the rest of the `Get` whose `Meta` has come, through
/// the sink, until its end or the first chunk someone else has.
async fn front(
    link: &mut Link<'_>,
    partial: &Partial,
    (meta, start): (&FileMeta, Verified),
    swarm: &Swarm,
    received: &AtomicU64,
    tracker: &Tracker,
) -> Result<FrontEnd, (Failure, Verified)> {
    let server = link.server;
    let file = partial
        .open_from(start.offset)
        .map_err(|err| (Failure::Fatal(err), start))?;
    let share = tracker.share(start.offset);
    let sink = Sink::new(file, start, meta, share)
        .ok_or_else(|| (broken(server, ServerError::ResumePoint), start))?;
    let (tx, rx) = mpsc::channel(RECEIVE_AHEAD);
    let writer = tokio::task::spawn_blocking(move || sink.run(rx));
    let network = pump(link, tx, (start.offset, swarm), received).await;
    let report = writer
        .await
        .map_err(|err| (Failure::Fatal(Error::Worker(err.into())), start))?;
    let verified = report.verified;
    let failure = match report.result {
        Ok(sha256) => return Ok(FrontEnd::Whole(sha256)),
        Err(SinkError::Incomplete) => match network {
            Err(failure) => failure,
            Ok(true) => return Ok(FrontEnd::Stopped(verified)),
            Ok(false) => broken(server, ServerError::StoppedEarly),
        },
        Err(SinkError::Mismatch { offset }) => Failure::Mismatch(offset),
        Err(SinkError::Remote(err)) => remote_failure(server, err),
        Err(SinkError::Protocol(err)) => broken(server, err.into()),
        Err(SinkError::Local(err)) => Failure::Fatal(Error::local(partial.data.shown())(err)),
        Err(SinkError::Hasher) => Failure::Fatal(Error::Worker(WorkerError::Hasher)),
    };
    Err((failure, verified))
}

/// Passes frames to the sink until the transfer's last frame, the sink
/// stopping, the connection failing, or the next chunk being someone
/// else's: `Ok(true)` when it stopped for that.
async fn pump(
    link: &mut Link<'_>,
    tx: mpsc::Sender<Response>,
    (mut pos, swarm): (u64, &Swarm),
    received: &AtomicU64,
) -> Result<bool, Failure> {
    let server = link.server;
    let conn = link.conn().await?;
    let result = loop {
        let frame = tokio::select! {
            frame = conn.read_response() => frame,
            () = tx.closed() => break Ok(false),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => break Err(lost(server, err)),
        };
        if let Response::Data(data) = &frame {
            if pos.is_multiple_of(CHUNK_SIZE) && !swarm.front_enters(pos / CHUNK_SIZE) {
                break Ok(true);
            }
            pos += data.len() as u64;
            received.fetch_add(data.len() as u64, Ordering::Release);
        }
        let last = matches!(frame, Response::End { .. } | Response::Error(_));
        if tx.send(frame).await.is_err() || last {
            break Ok(false);
        }
    };
    // A stream stopped midway still has the rest of its reply on the way.
    if !matches!(result, Ok(false)) {
        link.reset();
    }
    result
}

/// Decides where this run starts: from a fresh partial, or from the chunks
/// of an earlier partial (those its sidecar records, or else its whole
/// chunks from the start) that check out against the server's states.
async fn prepare(
    link: &mut Link<'_>,
    policy: &Policy,
    target: &Target,
    partial: &Partial,
    meta: &FileMeta,
    state: &mut Progressed,
    tracker: &mut Tracker,
) -> Result<(), Failure> {
    state.done.clear();
    if !(policy.resume && partial.matches(&target.remote, meta)) {
        return partial
            .begin(&link.server.label, &target.remote, meta)
            .map_err(Failure::Fatal);
    }
    let len = chunks::count(meta.size);
    let on_disk = partial.bytes_on_disk().min(meta.size);
    let candidates: Vec<u64> = match partial.recorded_chunks() {
        Some(runs) => chunks::from_runs(&runs, len)
            .into_iter()
            .filter(|&k| chunks::bytes(k, meta.size).1 <= on_disk)
            .collect(),
        None => (0..ft_protocol::boundaries(on_disk)).collect(),
    };
    if candidates.is_empty() {
        return Ok(());
    }
    tracker.start(meta.size, 0);
    tracker.note(format!(
        "{}: checking {} MiB on disk",
        target.remote,
        candidates.len() as u64 * (CHUNK_SIZE >> 20)
    ));
    // The states of the chunks on disk and the next: bounded by the
    // partial, whatever size the server announces.
    let upto = candidates.iter().max().map_or(0, |last| last + 2);
    let table = match &state.table {
        Some(table) if table.meta.same_version(meta) && table.covers(upto) => Arc::clone(table),
        _ => Arc::new(swarm::table(link, &target.remote, meta, upto).await?),
    };
    state.table = Some(Arc::clone(&table));
    let reader = partial.clone();
    let checking = tracker.clone();
    let done = tokio::task::spawn_blocking(move || {
        reader.check_chunks(&table, &candidates, verify::threads(), &|bytes| {
            checking.checked(bytes)
        })
    })
    .await
    .map_err(|err| Failure::Fatal(Error::Worker(err.into())))?
    .map_err(Failure::Fatal)?;
    state.done = done;
    tracker.note(target.remote.clone());
    Ok(())
}
