//! Small files, many at once: requests go out ahead of their replies so a
//! tree of thousands of small files costs about one round trip per batch, not
//! one per file. Each reply is checked in order by the protocol's
//! [`GetReply`], and each file verified whole against the server's SHA-256
//! before it takes its final name. Anything out of the ordinary (a file that
//! changed, a broken reply, a digest that does not match) is handed back for
//! the careful one-file path, which retries, resumes and reports.

use std::fs::File;
use std::io::{self, Write};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ft_protocol::{Digest, FileMeta, GetEvent, GetReply, RemoteError, Request, MAX_DATA};

use super::offload::blocking_each;
use crate::error::Error;
use crate::session::{remote, Failure, Link};
use crate::transfer::{Partial, Report, Target};
use crate::verify;

/// Largest file taken this way: one data frame.
pub(super) const SMALL: u64 = MAX_DATA as u64;

/// Requests sent ahead on one connection. The replies to them are held in
/// memory until written: at most `PIPELINE_BYTES` per connection, and in
/// practice a few KiB each.
pub(super) const PIPELINE: usize = 32;

/// Most bytes of listed files in one run of requests sent ahead, and so
/// held by a connection before they are written (each reply may be no
/// longer than its listing said): 32 files of 1 MiB would be 32 MiB a
/// connection, 2 GiB at 64 connections.
pub(super) const PIPELINE_BYTES: u64 = 8 * 1024 * 1024;

/// Whether a listed file can go this way: small, and listed (so its version
/// is known before it is asked for).
pub(super) fn eligible(target: &Target) -> bool {
    target.listed.is_some_and(|meta| meta.size <= SMALL)
}

/// The size a listing gave the target (eligible ones have one).
pub(super) fn listed_size(target: &Target) -> u64 {
    target.listed.map_or(0, |meta| meta.size)
}

/// Whether nothing is at the target's final name (seen beneath the output
/// folder, without following links).
pub(super) fn absent(target: &Target) -> bool {
    let output = &target.output;
    match output.folder().lstat(output.name()) {
        Ok(found) => found.is_none(),
        // A folder the listing did not name, made when the file is placed.
        Err(err) => err.is_missing(),
    }
}

/// What happened to the files of a batch.
pub(super) struct Fetched {
    /// Verified and in place, or failed for good.
    pub ended: Vec<(Target, Result<Report, Error>)>,
    /// To be fetched the careful way.
    pub again: Vec<Target>,
}

/// One reply of the batch.
enum Reply {
    /// The whole file and the server's digest of it.
    File(FileMeta, Bytes, Digest),
    /// The server refused the request (a whole reply).
    Refused(RemoteError),
    /// Another version than listed (the reply was read to its end).
    Changed,
}

/// Fetches `targets`, all eligible, on `link` with their requests sent at once.
pub(super) async fn fetch(link: &mut Link<'_>, targets: Vec<Target>) -> Fetched {
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
    if link.send_all(&requests).await.is_err() {
        fetched.again = targets;
        return fetched;
    }
    let mut arrived = Vec::new();
    let mut rest = targets.into_iter();
    while let Some(target) = rest.next() {
        match read_reply(link, &target).await {
            Some(Reply::File(meta, data, sha256)) => arrived.push((target, meta, data, sha256)),
            Some(Reply::Refused(err)) => match remote(server, err) {
                Failure::Fatal(err) => fetched.ended.push((target, Err(err))),
                _ => fetched.again.push(target),
            },
            Some(Reply::Changed) => fetched.again.push(target),
            None => {
                // The stream is in an unknown state: the rest go the careful way.
                link.reset();
                fetched.again.push(target);
                fetched.again.extend(rest);
                break;
            }
        }
    }
    let placed = blocking_each(arrived, |(target, meta, data, sha256)| {
        place(target, meta, data, sha256)
    });
    let seconds = started.elapsed().as_secs_f64();
    for ((target, meta, _, sha256), result) in placed.await {
        match result {
            Ok(Ok(true)) => {
                let report = Report {
                    bytes_received: meta.size,
                    seconds,
                    ..Report::new(&target, meta.size, &sha256, started)
                };
                fetched.ended.push((target, Ok(report)));
            }
            Ok(Ok(false)) => fetched.again.push(target),
            Ok(Err(err)) | Err(err) => fetched.ended.push((target, Err(err))),
        }
    }
    fetched
}

/// Reads the reply to one `Get`; `None` when it breaks the protocol or the
/// connection fails.
async fn read_reply(link: &mut Link<'_>, target: &Target) -> Option<Reply> {
    let mut reply = GetReply::new(0);
    let mut meta = None;
    let mut data = BytesMut::new();
    loop {
        let frame = link.read().await.ok()?;
        match reply.feed(frame).ok()? {
            GetEvent::Meta(announced) if announced.size > listed_size(target) => return None,
            GetEvent::Meta(announced) => meta = Some(announced),
            GetEvent::Data(piece) => data.extend_from_slice(&piece),
            GetEvent::Checkpoint { .. } => {}
            GetEvent::End { sha256 } => {
                let meta = meta?;
                let listed = target.listed.is_some_and(|l| l.same_version(&meta));
                return Some(match listed {
                    true => Reply::File(meta, data.freeze(), sha256),
                    false => Reply::Changed,
                });
            }
            GetEvent::Failed(err) => return Some(Reply::Refused(err)),
        }
    }
}

/// Verifies `data` against `sha256` and, if it matches, writes it into a
/// new file with no name yet, syncs it and names it: the output when
/// nothing is there, else the partial, renamed over the output. A run
/// killed while it writes leaves nothing behind, and whatever is at the
/// partial's name is not touched (nor needed). Where the file system has
/// no unnamed files, a fresh partial is written instead. `Ok(false)`: no
/// match, or something in the way (the careful path says what, or
/// resumes it if it is ftget's).
fn place(target: &Target, meta: &FileMeta, data: &[u8], sha256: &Digest) -> Result<bool, Error> {
    if !verify::matches(data, sha256) {
        return Ok(false);
    }
    let output = &target.output;
    let folder = output.folder();
    let partial = Partial::for_output(output);
    let made = match folder.create_unnamed(output.name()) {
        Err(err) if err.is_missing() => {
            // A folder the listing did not name.
            if let Some(parent) = output.name().parent() {
                folder.make_dirs(parent).map_err(Error::folder)?;
            }
            folder.create_unnamed(output.name())
        }
        other => other,
    };
    let mut file = match made {
        Ok(Some(file)) => file,
        Ok(None) => return place_as_partial(target, meta, data),
        // Whatever is in the way, the careful path names it.
        Err(_) => return Ok(false),
    };
    write_whole(&mut file, data, meta).map_err(Error::local(output.shown()))?;
    if folder.publish(&file, output.name()).is_ok() {
        return Ok(true);
    }
    if folder.publish(&file, partial.data.name()).is_err() {
        return Ok(false);
    }
    partial.rename().map(|()| true)
}

/// [`place`] where unnamed files cannot be made: a fresh partial, written,
/// synced and renamed into place.
fn place_as_partial(target: &Target, meta: &FileMeta, data: &[u8]) -> Result<bool, Error> {
    let output = &target.output;
    let partial = Partial::for_output(output);
    let Ok(mut file) = partial.create() else {
        return Ok(false);
    };
    let written = write_whole(&mut file, data, meta)
        .map_err(Error::local(partial.data.shown()))
        .and_then(|()| partial.rename());
    if written.is_err() {
        // Made fresh by this call a moment ago: ours to remove, so no
        // partial without a sidecar is left for a later run to refuse.
        let _ = output.folder().remove(partial.data.name());
    }
    written.map(|()| true)
}

/// Writes `data` whole into `file`, with the server's modification time,
/// and syncs it.
fn write_whole(file: &mut File, data: &[u8], meta: &FileMeta) -> io::Result<()> {
    file.write_all(data)?;
    if let Some(mtime) = meta.modified() {
        // The server's time is a courtesy; failing to set it loses nothing.
        let _ = file.set_modified(mtime);
    }
    file.sync_all()
}
