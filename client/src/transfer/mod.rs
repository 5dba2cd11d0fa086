//! The transfer layer: one file. Describe it, decide where to start (a
//! fresh partial, or as much of an earlier one as still checks out), `Get`
//! the rest through the sink, and give the verified file its name; when the
//! connection drops, try again from the last verified chunk, as the retry
//! policy allows.

mod partial;
mod sink;

use std::time::Instant;

use ft_protocol::{boundaries, Digest, FileMeta, GetError, Request, Response, CHUNK_SIZE};
use tokio::sync::mpsc;

use crate::error::{Error, ServerError, WorkerError};
use crate::folder::Output;
use crate::progress::{Progress, Tracker};
use crate::session::{broken, lost, remote, Failure, Link, Retries, Server};
use crate::verify::{self, Verified};

pub use partial::{partial_names, suffixed_owner, Partial};
pub use sink::{Sink, SinkError};

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
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Whether a partial from an earlier run may be reused.
    pub resume: bool,
    /// Failed attempts in a row allowed before giving up.
    pub retries: u32,
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
        }
    }
}

/// What carries over from one attempt to the next.
struct Progressed {
    /// The version being fetched and how much of it is verified on disk.
    transfer: Option<(FileMeta, Verified)>,
    resumed_from: u64,
    received: u64,
}

impl Progressed {
    fn verified_offset(&self) -> u64 {
        self.transfer.map_or(0, |(_, verified)| verified.offset)
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
        transfer: None,
        resumed_from: 0,
        received: 0,
    };
    let mut known = target.listed;
    let mut retries = Retries::new(policy.retries);
    let mut bad_chunk = None;
    loop {
        let before = state.verified_offset();
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
            Failure::Mismatch(offset) => {
                if bad_chunk == Some(offset) {
                    return Err(Error::Verification {
                        path: target.remote.clone(),
                        offset,
                        partial: partial.data.shown(),
                    });
                }
                bad_chunk = Some(offset);
                continue;
            }
            // Starting over loses what was verified, so this always counts:
            // a file that never stops changing ends in an error, not a loop.
            Failure::Changed => {
                state.transfer = None;
                state.resumed_from = 0;
                Error::Server {
                    server: link.server.label.clone(),
                    source: ServerError::KeepsChanging {
                        path: target.remote.clone(),
                    },
                }
            }
            Failure::Retry(err) => {
                if state.verified_offset() > before {
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
    let meta = match known {
        Some(meta) => meta,
        None => link.stat(&target.remote).await?,
    };
    let verified = match state.transfer {
        Some((known, _)) if !known.same_version(&meta) => return Err(Failure::Changed),
        // Bytes this run verified are trusted only while the partial still
        // holds them; if it was cut or removed meanwhile, look again from disk.
        Some((_, verified)) if partial.bytes_on_disk() >= verified.offset => verified,
        _ => {
            let first = state.transfer.is_none();
            let verified = prepare(link, policy, target, partial, &meta, tracker).await?;
            if first {
                state.resumed_from = verified.offset;
            }
            verified
        }
    };
    state.transfer = Some((meta, verified));

    let get = Request::Get {
        path: target.remote.clone(),
        offset: verified.offset,
    };
    match link.ask(&get).await? {
        Response::Meta(now) if now.same_version(&meta) => {}
        Response::Meta(_) => return Err(Failure::Changed),
        Response::Error(err) => return Err(remote(server, err)),
        other => {
            let kind = other.kind();
            return Err(broken(server, GetError::NoMeta { kind }.into()));
        }
    }

    let file = partial.open_at(verified.offset).map_err(Failure::Fatal)?;
    tracker.start(meta.size, verified.offset);
    let sink = Sink::new(file, verified, &meta, tracker.clone())
        .ok_or_else(|| broken(server, ServerError::ResumePoint))?;
    let (tx, rx) = mpsc::channel(RECEIVE_AHEAD);
    let writer = tokio::task::spawn_blocking(move || sink.run(rx));
    let network = pump(link, tx).await;
    let report = writer
        .await
        .map_err(|err| Failure::Fatal(Error::Worker(err.into())))?;
    state.received += report.received;
    state.transfer = Some((meta, report.verified));
    *tracker = report.tracker;

    match report.result {
        Ok(sha256) => {
            partial.finish().map_err(Failure::Fatal)?;
            Ok((meta, sha256))
        }
        Err(SinkError::Incomplete) => Err(match network {
            Err(failure) => failure,
            Ok(()) => broken(server, ServerError::StoppedEarly),
        }),
        Err(SinkError::Mismatch { offset }) => Err(Failure::Mismatch(offset)),
        Err(SinkError::Remote(err)) => Err(remote(server, err)),
        Err(SinkError::Protocol(err)) => Err(broken(server, err.into())),
        Err(SinkError::Local(err)) => Err(Failure::Fatal(Error::local(partial.data.shown())(err))),
        Err(SinkError::Hasher) => Err(Failure::Fatal(Error::Worker(WorkerError::Hasher))),
    }
}

/// Passes frames to the sink until the transfer's last frame, the sink
/// stopping, or the connection failing.
async fn pump(link: &mut Link<'_>, tx: mpsc::Sender<Response>) -> Result<(), Failure> {
    let server = link.server;
    let conn = link.conn().await?;
    let result = loop {
        let frame = tokio::select! {
            frame = conn.read_response() => frame,
            () = tx.closed() => break Ok(()),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => break Err(lost(server, err)),
        };
        let last = matches!(frame, Response::End { .. } | Response::Error(_));
        if tx.send(frame).await.is_err() || last {
            break Ok(());
        }
    };
    if result.is_err() {
        link.reset();
    }
    result
}

/// Decides where this run starts: from a fresh partial, or from as much of an
/// earlier partial as still checks out against the server's checkpoints.
async fn prepare(
    link: &mut Link<'_>,
    policy: &Policy,
    target: &Target,
    partial: &Partial,
    meta: &FileMeta,
    tracker: &mut Tracker,
) -> Result<Verified, Failure> {
    // Nothing to resume from in a file shorter than one chunk; its partial
    // still gets a sidecar, so that a later run can tell it is ftget's.
    let resumable = boundaries(meta.size) > 0 && policy.resume;
    if !(resumable && partial.matches(&target.remote, meta)) {
        partial
            .begin(&link.server.label, &target.remote, meta)
            .map_err(Failure::Fatal)?;
        return Ok(Verified::start());
    }
    let whole_chunks = boundaries(partial.bytes_on_disk().min(meta.size));
    if whole_chunks == 0 {
        return Ok(Verified::start());
    }
    tracker.start(meta.size, 0);
    tracker.note(format!(
        "{}: checking {} MiB on disk",
        target.remote,
        whole_chunks * (CHUNK_SIZE >> 20)
    ));
    let states = link.checkpoints(&target.remote, meta, whole_chunks).await?;
    let reader = partial.clone();
    let checking = tracker.clone();
    let verified = tokio::task::spawn_blocking(move || {
        reader.verify(&states, verify::threads(), &|bytes| checking.checked(bytes))
    })
    .await
    .map_err(|err| Failure::Fatal(Error::Worker(err.into())))?
    .map_err(Failure::Fatal)?;
    tracker.note(target.remote.clone());
    Ok(verified)
}
