//! One download: connect, describe, resume or begin, stream, verify, rename,
//! and try again when the connection drops.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use ft_protocol::connection::TcpConnection;
use ft_protocol::{
    boundaries, ConnectionError, Digest, ErrorCode, FileMeta, RemoteError, Request, Response,
    CHUNK_SIZE, MAGIC, MAX_CHECKPOINTS, VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::partial::{Partial, Verified};
use crate::progress::Progress;
use crate::sink::{Sink, SinkError};

/// Frames received ahead of the disk: at 1 MiB each, bounds the client's
/// buffering to a few MiB whatever the file size.
const RECEIVE_AHEAD: usize = 4;

/// First pause before a retry; it doubles with each failure in a row.
const RETRY_BASE: Duration = Duration::from_millis(250);

/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What to download, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Job {
    /// The server as the user wrote it, for messages.
    pub server: String,
    /// Host to resolve.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path on the server.
    pub remote: String,
    /// The final local name.
    pub output: PathBuf,
    /// Whether a partial from an earlier run may be reused.
    pub resume: bool,
    /// Failed attempts in a row allowed before giving up.
    pub retries: u32,
    /// Bound on connecting and on any silence from the server.
    pub timeout: Duration,
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

/// Why one attempt ended without a file.
enum Failure {
    /// Worth another attempt after a pause.
    Retry(Error),
    /// The chunk at this offset failed verification.
    Mismatch(u64),
    /// The remote file is another version now: start over.
    Changed,
    /// No point trying again.
    Fatal(Error),
}

/// What carries over from one attempt to the next.
struct Progressed {
    /// The version being fetched and how much of it is verified on disk.
    transfer: Option<(FileMeta, Verified)>,
    resumed_from: u64,
    received: u64,
}

/// Downloads `job.remote` to `job.output`, verified, retrying as allowed.
pub async fn download(job: &Job, progress: &Progress) -> Result<Report, Error> {
    let started = Instant::now();
    let partial = Partial::for_output(&job.output);
    let mut state = Progressed {
        transfer: None,
        resumed_from: 0,
        received: 0,
    };
    let mut failures = 0u32;
    let mut bad_chunk = None;
    loop {
        let before = verified_offset(&state);
        let failure = match attempt(job, &partial, &mut state, progress).await {
            Ok((meta, sha256)) => {
                return Ok(Report {
                    path: job.remote.clone(),
                    output: job.output.display().to_string(),
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
                        path: job.remote.clone(),
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
                    server: job.server.clone(),
                    reason: format!("{} keeps changing on the server", job.remote),
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
        if failures > job.retries {
            return Err(give_up(retry_error, job.retries));
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
fn backoff(failures: u32) -> Duration {
    let exp = RETRY_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    exp.min(RETRY_MAX).mul_f64(0.5 + fastrand::f64() * 0.5)
}

async fn attempt(
    job: &Job,
    partial: &Partial,
    state: &mut Progressed,
    progress: &Progress,
) -> Result<(FileMeta, Digest), Failure> {
    let mut conn = connect(job).await?;
    let meta = stat(&mut conn, job).await?;
    let verified = match state.transfer {
        Some((known, _)) if !known.same_version(&meta) => return Err(Failure::Changed),
        // Bytes this run verified are trusted only while the partial still
        // holds them; if it was cut or removed meanwhile, look again from disk.
        Some((_, verified)) if partial.bytes_on_disk() >= verified.offset => verified,
        _ => {
            let first = state.transfer.is_none();
            let verified = prepare(&mut conn, job, partial, &meta, progress).await?;
            if first {
                state.resumed_from = verified.offset;
            }
            verified
        }
    };
    state.transfer = Some((meta, verified));

    let get = Request::Get {
        path: job.remote.clone(),
        offset: verified.offset,
    };
    conn.send(&get).await.map_err(lost(job))?;
    match conn.read_response().await.map_err(lost(job))? {
        Response::Meta(now) if now.same_version(&meta) => {}
        Response::Meta(_) => return Err(Failure::Changed),
        Response::Error(err) => return Err(remote_failure(job, err)),
        _ => return Err(protocol(job, "unexpected reply to a download request")),
    }

    let file = partial.open_at(verified.offset).map_err(Failure::Fatal)?;
    progress.start(meta.size, verified.offset);
    let sink = Sink::new(file, verified, meta.size, progress.clone())
        .ok_or_else(|| protocol(job, "resume point is not on a block boundary"))?;
    let (tx, rx) = mpsc::channel(RECEIVE_AHEAD);
    let writer = tokio::task::spawn_blocking(move || sink.run(rx));
    let network = pump(&mut conn, tx).await;
    let report = writer
        .await
        .map_err(|err| Failure::Fatal(Error::local(&partial.data)(std::io::Error::other(err))))?;
    state.received += report.received;
    state.transfer = Some((meta, report.verified));

    match report.result {
        Ok(sha256) => {
            finish(partial, &meta).map_err(Failure::Fatal)?;
            Ok((meta, sha256))
        }
        Err(SinkError::Incomplete) => Err(match network {
            Err(err) => lost(job)(err),
            Ok(()) => protocol(job, "the transfer stopped before its end"),
        }),
        Err(SinkError::Mismatch { offset }) => Err(Failure::Mismatch(offset)),
        Err(SinkError::Remote(err)) => Err(remote_failure(job, err)),
        Err(SinkError::Protocol(reason)) => Err(protocol(job, &reason)),
        Err(SinkError::Local(err)) => Err(Failure::Fatal(Error::local(&partial.data)(err))),
    }
}

/// Passes responses to the sink until the transfer's last frame, the sink
/// stopping, or the connection failing.
async fn pump(conn: &mut TcpConnection, tx: mpsc::Sender<Response>) -> Result<(), ConnectionError> {
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

async fn connect(job: &Job) -> Result<TcpConnection, Failure> {
    let unreachable = |reason: String| {
        Failure::Retry(Error::Connection {
            server: job.server.clone(),
            reason,
        })
    };
    let addrs = tokio::net::lookup_host((job.host.as_str(), job.port))
        .await
        .map_err(|err| unreachable(format!("cannot resolve {}: {err}", job.host)))?;
    let mut last = format!("{} resolves to no address", job.host);
    let mut stream = None;
    for addr in addrs {
        match tokio::time::timeout(job.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(connected)) => {
                stream = Some(connected);
                break;
            }
            Ok(Err(err)) => last = format!("cannot connect to {addr}: {err}"),
            Err(_) => last = format!("cannot connect to {addr}: timed out"),
        }
    }
    let stream = stream.ok_or_else(|| unreachable(last))?;
    let mut conn = TcpConnection::tcp(stream, job.timeout);
    let hello = Request::Hello {
        magic: MAGIC,
        version: VERSION,
    };
    conn.send(&hello).await.map_err(lost(job))?;
    match conn.read_response().await.map_err(lost(job))? {
        Response::Welcome { version } if version == VERSION => Ok(conn),
        Response::Welcome { version } => Err(protocol(
            job,
            &format!("server speaks protocol version {version}; this ftget speaks {VERSION}"),
        )),
        Response::Error(err) => Err(remote_failure(job, err)),
        _ => Err(protocol(job, "unexpected reply to the handshake")),
    }
}

async fn stat(conn: &mut TcpConnection, job: &Job) -> Result<FileMeta, Failure> {
    let request = Request::Stat {
        path: job.remote.clone(),
    };
    conn.send(&request).await.map_err(lost(job))?;
    match conn.read_response().await.map_err(lost(job))? {
        Response::Meta(meta) => Ok(meta),
        Response::Error(err) => Err(remote_failure(job, err)),
        _ => Err(protocol(job, "unexpected reply to a stat request")),
    }
}

/// Decides where this run starts: from a fresh partial, or from as much of an
/// earlier partial as still checks out against the server's checkpoints.
async fn prepare(
    conn: &mut TcpConnection,
    job: &Job,
    partial: &Partial,
    meta: &FileMeta,
    progress: &Progress,
) -> Result<Verified, Failure> {
    if !(job.resume && partial.matches(&job.remote, meta)) {
        partial.begin(&job.remote, meta).map_err(Failure::Fatal)?;
        return Ok(Verified::start());
    }
    let whole_chunks = boundaries(partial.bytes_on_disk().min(meta.size));
    if whole_chunks == 0 {
        return Ok(Verified::start());
    }
    progress.start(meta.size, 0);
    progress.note(format!(
        "{}: checking {} MiB already on disk",
        job.remote,
        whole_chunks * (CHUNK_SIZE >> 20)
    ));
    let states = checkpoints(conn, job, meta, whole_chunks).await?;
    let reader = partial.clone();
    let verified = tokio::task::spawn_blocking(move || reader.verify(&states))
        .await
        .map_err(|err| Failure::Fatal(Error::local(&partial.data)(std::io::Error::other(err))))?
        .map_err(Failure::Fatal)?;
    progress.note(job.remote.clone());
    Ok(verified)
}

/// The server's checkpoint states for boundaries `1..=count`, in pages.
async fn checkpoints(
    conn: &mut TcpConnection,
    job: &Job,
    meta: &FileMeta,
    count: u64,
) -> Result<Vec<Digest>, Failure> {
    let mut states = Vec::new();
    while (states.len() as u64) < count {
        let next = states.len() as u64 + 1;
        let want = (count - states.len() as u64).min(u64::from(MAX_CHECKPOINTS)) as u32;
        let request = Request::Checkpoints {
            path: job.remote.clone(),
            first: next,
            count: want,
        };
        conn.send(&request).await.map_err(lost(job))?;
        match conn.read_response().await.map_err(lost(job))? {
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
            Response::Error(err) => return Err(remote_failure(job, err)),
            _ => return Err(protocol(job, "bad reply to a checkpoints request")),
        }
    }
    Ok(states)
}

/// Gives the verified partial the server's modification time and its final
/// name, in one atomic rename.
fn finish(partial: &Partial, meta: &FileMeta) -> Result<(), Error> {
    let secs = Duration::from_secs(meta.mtime_secs.unsigned_abs());
    let whole = if meta.mtime_secs >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    if let Some(mtime) =
        whole.and_then(|t| t.checked_add(Duration::from_nanos(meta.mtime_nanos.into())))
    {
        // The time is a courtesy; failing to set it loses nothing.
        let _ = fs::File::options()
            .write(true)
            .open(&partial.data)
            .and_then(|file| file.set_modified(mtime));
    }
    fs::rename(&partial.data, &partial.output).map_err(Error::local(&partial.output))?;
    let _ = fs::remove_file(&partial.sidecar);
    Ok(())
}

/// Maps a connection failure: a garbled stream means the peer is not an ft
/// server (final); anything else may pass (worth a retry).
fn lost(job: &Job) -> impl Fn(ConnectionError) -> Failure + '_ {
    move |err| match err {
        ConnectionError::Codec(_) | ConnectionError::FrameTooLarge { .. } => {
            protocol(job, &format!("not an ft server, or a broken one: {err}"))
        }
        err => Failure::Retry(Error::Connection {
            server: job.server.clone(),
            reason: format!("connection lost: {err}"),
        }),
    }
}

fn protocol(job: &Job, reason: &str) -> Failure {
    Failure::Fatal(Error::Server {
        server: job.server.clone(),
        reason: reason.to_owned(),
    })
}

fn remote_failure(job: &Job, err: RemoteError) -> Failure {
    let server = job.server.clone();
    match err.code {
        ErrorCode::NotFound
        | ErrorCode::NotAFile
        | ErrorCode::InvalidPath
        | ErrorCode::PermissionDenied => Failure::Fatal(Error::Refused {
            server,
            reason: err,
        }),
        ErrorCode::Busy => Failure::Retry(Error::Connection {
            server,
            reason: err.message,
        }),
        ErrorCode::FileChanged => Failure::Changed,
        ErrorCode::Internal => Failure::Retry(Error::Server {
            server,
            reason: err.message,
        }),
        ErrorCode::UnsupportedVersion | ErrorCode::BadRequest => Failure::Fatal(Error::Server {
            server,
            reason: err.message,
        }),
    }
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
