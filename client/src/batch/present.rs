//! Whether files already at their outputs are the server's versions: the
//! one check for it, for small files and large alike. The size first, then
//! the SHA-256, checked by the verification engine against the server's
//! checkpoints chunk by chunk where the file has several. A file that is
//! the server's gets a report and is left alone.

use std::time::Instant;

use ft_protocol::{boundaries, Digest, FileMeta};

use super::offload::blocking_each;
use crate::error::Error;
use crate::folder::{FolderError, Found, Kind, Use};
use crate::session::{Failure, Link};
use crate::transfer::{Report, Target};
use crate::verify;

/// Targets sorted by what is at their outputs.
#[derive(Default)]
pub(super) struct Sorted {
    /// Already the server's version: nothing to fetch.
    pub same: Vec<Report>,
    /// To fetch.
    pub rest: Vec<Target>,
    /// The check itself failed for good.
    pub failed: Vec<(Target, Error)>,
}

/// Sorts `targets`: what the server must say of each (asked on `link` only
/// when the listing did not say it), then one trip to a blocking thread
/// that checks them all.
pub(super) async fn sort(link: &mut Link<'_>, targets: Vec<Target>) -> Sorted {
    let started = Instant::now();
    let mut sorted = Sorted::default();
    let mut checks = Vec::new();
    for target in targets {
        match evidence(link, &target).await {
            Ok(Some((meta, states))) => checks.push((target, meta, states)),
            Ok(None) => sorted.rest.push(target),
            Err(err) => sorted.failed.push((target, err)),
        }
    }
    if checks.is_empty() {
        return sorted;
    }
    let checked = blocking_each(checks, move |(target, meta, states)| {
        already_there(target, meta, states.as_deref(), started)
    });
    for ((target, ..), result) in checked.await {
        match result {
            Ok(Ok(Some(report))) => sorted.same.push(report),
            Ok(Ok(None)) => sorted.rest.push(target),
            Ok(Err(err)) | Err(err) => sorted.failed.push((target, err)),
        }
    }
    sorted
}

/// What the local file must match: the server's description with its
/// digest, and its checkpoint states when it has several chunks. `None`
/// when the local file cannot be the server's (absent, not a regular file,
/// another size), or when asking failed in a way the download will retry
/// and report.
async fn evidence(
    link: &mut Link<'_>,
    target: &Target,
) -> Result<Option<(FileMeta, Option<Vec<Digest>>)>, Error> {
    // Nothing to ask: the check on the blocking thread looks at the file.
    if let Some(meta) = target.listed.filter(|meta| meta.sha256.is_some()) {
        if boundaries(meta.size) < 2 {
            return Ok(Some((meta, None)));
        }
    }
    // Asking costs a round trip: only when the local file may be the server's.
    let Some(local) = regular_file(target) else {
        return Ok(None);
    };
    if target.listed.is_some_and(|meta| meta.size != local.len) {
        return Ok(None);
    }
    let meta = match target.listed {
        Some(meta) if meta.sha256.is_some() => meta,
        _ => match link.digest(&target.remote).await {
            Ok(meta) => meta,
            Err(Failure::Fatal(err)) => return Err(err),
            Err(_) => return Ok(None),
        },
    };
    // Of another size, it is not the server's; and the size a server
    // claims must not decide how many checkpoints are asked for.
    if meta.size != local.len {
        return Ok(None);
    }
    // A file of several chunks is checked against the server's checkpoints,
    // its chunks on one thread per core, rather than hashed in one pass.
    let chunks = boundaries(meta.size);
    if chunks < 2 {
        return Ok(Some((meta, None)));
    }
    match link.checkpoints(&target.remote, &meta, chunks).await {
        Ok((states, _)) => Ok(Some((meta, Some(states)))),
        Err(Failure::Fatal(err)) => Err(err),
        Err(_) => Ok(None),
    }
}

/// The report for `target` when its output already is the version `meta`
/// describes: a regular file of that size and SHA-256 (hashed here, so
/// this blocks). `None` when it is not, or when `meta` has no digest.
fn already_there(
    target: &Target,
    meta: &FileMeta,
    states: Option<&[Digest]>,
    started: Instant,
) -> Result<Option<Report>, Error> {
    let Some(remote) = meta.sha256 else {
        return Ok(None);
    };
    let output = &target.output;
    let file = match output.folder().open_existing(output.name(), Use::Read) {
        Ok(file) => file,
        // Not a regular file, or none: not the server's.
        Err(FolderError::InTheWay { .. }) => return Ok(None),
        Err(err) if err.is_missing() => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    if file.metadata().map_err(Error::local(output.shown()))?.len() != meta.size {
        return Ok(None);
    }
    let local = verify::hash_file(file, states.unwrap_or(&[]), verify::threads())
        .map_err(Error::unchecked(output.shown()))?;
    if local != Some(remote) {
        return Ok(None);
    }
    Ok(Some(Report {
        resumed_from: meta.size,
        ..Report::new(target, meta.size, &remote, started)
    }))
}

/// What is at the target's output when it is a regular file, seen beneath
/// the output folder without following links; `None` otherwise (the
/// download names whatever is in the way).
fn regular_file(target: &Target) -> Option<Found> {
    let output = &target.output;
    match output.folder().lstat(output.name()) {
        Ok(Some(found)) if found.kind == Kind::File => Some(found),
        _ => None,
    }
}
