//! Small files, many at once: requests go out ahead of their replies so a
//! tree of thousands of small files costs about one round trip per batch, not
//! one per file. Each file is still verified whole against the server's
//! SHA-256 before it takes its final name. Anything out of the ordinary (a
//! file that changed, a broken reply, a digest that does not match) is handed
//! back for the careful one-file path, which retries, resumes and reports.

use std::fs::{self, File};
use std::io::{self, Write};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ft_protocol::connection::TcpConnection;
use ft_protocol::{ChainHasher, Digest, FileMeta, Request, Response, MAX_DATA};

use crate::download::{mtime, Report, Target};
use crate::error::Error;
use crate::link::{remote_failure, Failure, Link};
use crate::partial::Partial;
use crate::tree::already_there;

/// Largest file taken this way: one data frame.
pub(crate) const SMALL: u64 = MAX_DATA as u64;

/// Requests sent ahead on one connection. The replies to them are held in
/// memory until written: at most this many times `SMALL` per connection, and
/// in practice a few KiB each.
pub(crate) const PIPELINE: usize = 32;

/// Whether a listed file can go this way: small, and nothing at its output
/// yet (an existing file needs the up-to-date check first).
pub(crate) fn eligible(target: &Target) -> bool {
    target.listed.is_some_and(|meta| meta.size <= SMALL)
}

/// Whether nothing is at the target's final name.
pub(crate) fn absent(target: &Target) -> bool {
    fs::symlink_metadata(&target.output).is_err()
}

/// Of `targets`, all eligible and present locally, those whose local file
/// has the listed size and SHA-256 (checked in one blocking trip), with their
/// reports; and the rest.
pub(crate) async fn unchanged(targets: Vec<Target>) -> (Vec<Report>, Vec<Target>) {
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        let mut same = Vec::new();
        let mut rest = Vec::new();
        for target in targets {
            let report = target
                .listed
                .and_then(|meta| already_there(&target, &meta, None, started).ok().flatten());
            match report {
                Some(report) => same.push(report),
                None => rest.push(target),
            }
        }
        (same, rest)
    })
    .await
    .unwrap_or_default()
}

/// What happened to the files of a batch.
pub(crate) struct Fetched {
    /// Verified and in place, or refused by the server.
    pub ended: Vec<(Target, Result<Report, Error>)>,
    /// To be fetched the careful way.
    pub again: Vec<Target>,
}

/// Fetches `targets`, all eligible, on `link` with their requests sent at once.
pub(crate) async fn fetch(link: &mut Link<'_>, targets: Vec<Target>) -> Fetched {
    let started = Instant::now();
    let server = link.server;
    let mut fetched = Fetched {
        ended: Vec::new(),
        again: Vec::new(),
    };
    let requests: Vec<Request> = targets
        .iter()
        .map(|target| Request::Get {
            path: target.remote.clone(),
            offset: 0,
        })
        .collect();
    let sent = match link.conn().await {
        Ok(conn) => conn.send_all(&requests).await.is_ok(),
        Err(_) => false,
    };
    if !sent {
        link.reset();
        fetched.again = targets;
        return fetched;
    }
    let mut arrived = Vec::new();
    let mut rest = targets.into_iter();
    while let Some(target) = rest.next() {
        let reply = match link.conn().await {
            Ok(conn) => read_reply(conn, &target).await,
            Err(_) => Err(()),
        };
        match reply {
            Ok(Reply::File(meta, data, sha256)) => arrived.push((target, meta, data, sha256)),
            Ok(Reply::Refused(err)) => match remote_failure(server, err) {
                Failure::Fatal(err) => fetched.ended.push((target, Err(err))),
                _ => fetched.again.push(target),
            },
            Ok(Reply::Changed) => fetched.again.push(target),
            Err(()) => {
                // The stream is in an unknown state: the rest go the careful way.
                link.reset();
                fetched.again.push(target);
                fetched.again.extend(rest);
                break;
            }
        }
    }
    let written = tokio::task::spawn_blocking(move || {
        arrived
            .into_iter()
            .map(|(target, meta, data, sha256)| {
                let result = place(&target, &meta, &data, &sha256);
                (target, meta, sha256, result)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    for (target, meta, sha256, result) in written {
        match result {
            Ok(true) => {
                let report = Report {
                    path: target.remote.clone(),
                    output: target.output.display().to_string(),
                    size: meta.size,
                    sha256: ft_protocol::hash::to_hex(&sha256),
                    resumed_from: 0,
                    bytes_received: meta.size,
                    seconds,
                    verified: true,
                };
                fetched.ended.push((target, Ok(report)));
            }
            Ok(false) => fetched.again.push(target),
            Err(err) => fetched.ended.push((target, Err(err))),
        }
    }
    fetched
}

/// One reply of the batch.
enum Reply {
    /// The whole file and the server's digest of it.
    File(FileMeta, Bytes, Digest),
    /// The server refused the request (a whole reply).
    Refused(ft_protocol::RemoteError),
    /// Another version than listed (the reply was read to its end).
    Changed,
}

/// Reads the reply to one `Get`; `Err` when it breaks the protocol.
async fn read_reply(conn: &mut TcpConnection, target: &Target) -> Result<Reply, ()> {
    let meta = match conn.read_response().await.map_err(|_| ())? {
        Response::Meta(meta) => meta,
        Response::Error(err) => return Ok(Reply::Refused(err)),
        _ => return Err(()),
    };
    if meta.size > SMALL {
        return Err(());
    }
    let mut data = BytesMut::new();
    loop {
        match conn.read_response().await.map_err(|_| ())? {
            Response::Data(piece) if (data.len() + piece.len()) as u64 <= meta.size => {
                data.extend_from_slice(&piece);
            }
            Response::End { sha256 } if data.len() as u64 == meta.size => {
                let listed = target
                    .listed
                    .is_some_and(|listed| listed.same_version(&meta));
                return Ok(if listed {
                    Reply::File(meta, data.freeze(), sha256)
                } else {
                    Reply::Changed
                });
            }
            Response::Error(err) => return Ok(Reply::Refused(err)),
            _ => return Err(()),
        }
    }
}

/// Verifies `data` against `sha256` and, if it matches, writes it beside the
/// output, syncs it and renames it into place. `Ok(false)`: no match.
fn place(target: &Target, meta: &FileMeta, data: &[u8], sha256: &Digest) -> Result<bool, Error> {
    let mut hasher = ChainHasher::new();
    hasher.update(data);
    if hasher.finalize() != *sha256 {
        return Ok(false);
    }
    let partial = Partial::for_output(&target.output);
    let create = || File::create(&partial.data);
    let mut file = match create() {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            // A folder the listing did not name.
            if let Some(parent) = target.output.parent() {
                fs::create_dir_all(parent).map_err(Error::local(parent))?;
            }
            create()
        }
        other => other,
    }
    .map_err(Error::local(&partial.data))?;
    file.write_all(data).map_err(Error::local(&partial.data))?;
    if let Some(mtime) = mtime(meta) {
        let _ = file.set_modified(mtime);
    }
    file.sync_all().map_err(Error::local(&partial.data))?;
    drop(file);
    fs::rename(&partial.data, &partial.output).map_err(Error::local(&partial.output))?;
    Ok(true)
}
