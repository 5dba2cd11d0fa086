//! One download: connect, describe, resume or begin, stream, verify, rename,
//! and try again when the connection drops.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ft_protocol::{boundaries, Digest, FileMeta, Request, Response, CHUNK_SIZE, MAX_CHECKPOINTS};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::link::{lost, protocol, remote_failure, Failure, Link, Server};
use crate::partial::{Partial, Verified};
use crate::progress::{Progress, Tracker};
use crate::sink::{Sink, SinkError};

/// Frames received ahead of the disk: at 1 MiB each, bounds the client's
/// buffering to a few MiB whatever the file size.
const RECEIVE_AHEAD: usize = 4;

/// First pause before a retry; it doubles with each failure in a row.
const RETRY_BASE: Duration = Duration::from_millis(250);

/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Target {
    /// Path on the server.
    pub remote: String,
    /// The final local name.
    pub output: PathBuf,
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

/// What carries over from one attempt to the next.
struct Progressed {
    /// The version being fetched and how much of it is verified on disk.
    transfer: Option<(FileMeta, Verified)>,
    resumed_from: u64,
    received: u64,
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
    let mut failures = 0u32;
    let mut bad_chunk = None;
    loop {
        let before = verified_offset(&state);
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
                    path: target.remote.clone(),
                    output: target.output.display().to_string(),
                    size: meta.size,
                    sha256: ft_protocol::hash::to_hex(&sha256),
                    resumed_from: state.resumed_from,
                    bytes_received: state.received,
                    seconds: started.elapsed().as_secs_f64(),
                    verified: true,
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
                    // The file is gone or forbidden: a partial of it is useless.
                    partial.discard();
                }
                return Err(err);
            }
            Failure::Mismatch(offset) => {
                if bad_chunk == Some(offset) {
                    return Err(Error::Verification {
                        path: target.remote.clone(),
                        offset,
                        partial: partial.data.clone(),
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
                    reason: format!("{} keeps changing on the server", target.remote),
                }
            }
            Failure::Retry(err) => {
                // A connection that drops after verified progress starts a
                // fresh count: a flaky link that keeps moving gets through.
                if verified_offset(&state) > before {
                    failures = 0;
                }
                err
            }
        };
        failures += 1;
        if failures > policy.retries {
            return Err(give_up(retry_error, policy.retries));
        }
        tokio::time::sleep(backoff(failures)).await;
    }
}

fn verified_offset(state: &Progressed) -> u64 {
    state.transfer.map_or(0, |(_, verified)| verified.offset)
}

fn give_up(err: Error, retries: u32) -> Error {
    match err {
        Error::Connection { server, reason } if retries > 0 => Error::Connection {
            server,
            reason: format!("{reason} (gave up after {retries} retries)"),
        },
        other => other,
    }
}

/// Exponential backoff with jitter: half to all of `RETRY_BASE * 2^(n-1)`.
pub(crate) fn backoff(failures: u32) -> Duration {
    let exp = RETRY_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    exp.min(RETRY_MAX).mul_f64(0.5 + fastrand::f64() * 0.5)
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
        Response::Error(err) => return Err(remote_failure(server, err)),
        _ => return Err(protocol(server, "unexpected reply to a download request")),
    }

    let file = partial.open_at(verified.offset).map_err(Failure::Fatal)?;
    tracker.start(meta.size, verified.offset);
    let sink = Sink::new(file, verified, &meta, tracker.clone())
        .ok_or_else(|| protocol(server, "resume point is not on a block boundary"))?;
    let (tx, rx) = mpsc::channel(RECEIVE_AHEAD);
    let writer = tokio::task::spawn_blocking(move || sink.run(rx));
    let network = pump(link.conn().await?, tx).await;
    let report = writer
        .await
        .map_err(|err| Failure::Fatal(Error::local(&partial.data)(std::io::Error::other(err))))?;
    state.received += report.received;
    state.transfer = Some((meta, report.verified));
    *tracker = report.tracker;

    match report.result {
        Ok(sha256) => {
            finish(partial).map_err(Failure::Fatal)?;
            Ok((meta, sha256))
        }
        Err(SinkError::Incomplete) => Err(match network {
            Err(err) => lost(server)(err),
            Ok(()) => protocol(server, "the transfer stopped before its end"),
        }),
        Err(SinkError::Mismatch { offset }) => Err(Failure::Mismatch(offset)),
        Err(SinkError::Remote(err)) => Err(remote_failure(server, err)),
        Err(SinkError::Protocol(reason)) => Err(protocol(server, &reason)),
        Err(SinkError::Local(err)) => Err(Failure::Fatal(Error::local(&partial.data)(err))),
    }
}

/// Passes responses to the sink until the transfer's last frame, the sink
/// stopping, or the connection failing.
async fn pump(
    conn: &mut ft_protocol::connection::TcpConnection,
    tx: mpsc::Sender<Response>,
) -> Result<(), ft_protocol::ConnectionError> {
    loop {
        let response = tokio::select! {
            response = conn.read_response() => response?,
            () = tx.closed() => return Ok(()),
        };
        let last = matches!(response, Response::End { .. } | Response::Error(_));
        if tx.send(response).await.is_err() || last {
            return Ok(());
        }
    }
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
    if boundaries(meta.size) == 0 {
        // Nothing to resume from in a file shorter than one chunk: no sidecar.
        return Ok(Verified::start());
    }
    if !(policy.resume && partial.matches(&target.remote, meta)) {
        partial
            .begin(&target.remote, meta)
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
    let states = checkpoints(link, target, meta, whole_chunks).await?;
    let reader = partial.clone();
    let checking = tracker.clone();
    let verified = tokio::task::spawn_blocking(move || {
        reader.verify(&states, crate::sink::hashing_threads(), &|bytes| {
            checking.checked(bytes)
        })
    })
    .await
    .map_err(|err| Failure::Fatal(Error::local(&partial.data)(std::io::Error::other(err))))?
    .map_err(Failure::Fatal)?;
    tracker.note(target.remote.clone());
    Ok(verified)
}

/// The server's checkpoint states for boundaries `1..=count`, in pages.
pub(crate) async fn checkpoints(
    link: &mut Link<'_>,
    target: &Target,
    meta: &FileMeta,
    count: u64,
) -> Result<Vec<Digest>, Failure> {
    let mut states = Vec::new();
    while (states.len() as u64) < count {
        let next = states.len() as u64 + 1;
        let want = (count - states.len() as u64).min(u64::from(MAX_CHECKPOINTS)) as u32;
        let request = Request::Checkpoints {
            path: target.remote.clone(),
            first: next,
            count: want,
        };
        match link.ask(&request).await? {
            Response::Checkpoints { meta: now, .. } if !now.same_version(meta) => {
                return Err(Failure::Changed)
            }
            Response::Checkpoints {
                first,
                states: page,
                ..
            } if first == next && !page.is_empty() && page.len() <= want as usize => {
                states.extend(page);
            }
            Response::Error(err) => return Err(remote_failure(link.server, err)),
            _ => return Err(protocol(link.server, "bad reply to a checkpoints request")),
        }
    }
    Ok(states)
}

/// Gives the verified partial its final name, in one atomic rename.
fn finish(partial: &Partial) -> Result<(), Error> {
    fs::rename(&partial.data, &partial.output).map_err(Error::local(&partial.output))?;
    let _ = fs::remove_file(&partial.sidecar);
    Ok(())
}

/// The server's modification time for a file, when it is one the system can hold.
pub(crate) fn mtime(meta: &FileMeta) -> Option<SystemTime> {
    let secs = Duration::from_secs(meta.mtime_secs.unsigned_abs());
    let whole = if meta.mtime_secs >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    whole.and_then(|t| t.checked_add(Duration::from_nanos(meta.mtime_nanos.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for failures in 1..40 {
            let full = RETRY_BASE
                .saturating_mul(1 << (failures - 1).min(16))
                .min(RETRY_MAX);
            let pause = backoff(failures);
            assert!(pause >= full / 2 && pause <= full, "{failures}: {pause:?}");
        }
        assert!(backoff(30) <= RETRY_MAX);
    }
}
