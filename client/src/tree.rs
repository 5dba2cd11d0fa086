//! Many files in one job: several PATHs, whole trees with `-r`. Each PATH is
//! listed (or stat'ed) once, every entry the server names is checked as a
//! hostile path before anything is written, and the files are then fetched
//! by a small pool of connections, each keeping its connection from one file
//! to the next. A file already present with the server's size and SHA-256 is
//! left alone; a partial is resumed.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ft_protocol::{Entry, EntryKind, ErrorCode, RemotePath, Request, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::download::{backoff, fetch, Policy, Report, Target};
use crate::error::Error;
use crate::exit::Exit;
use crate::link::{protocol, remote_failure, Failure, Link, Server};
use crate::partial;
use crate::progress::Progress;
use crate::small;

/// Most entries one `-r` PATH may list: what the plan holds in memory for
/// them (a few hundred bytes each) stays bounded whatever a server sends.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Several paths, each a file or (with `recursive`) a folder.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Where from.
    pub server: Server,
    /// How hard to try.
    pub policy: Policy,
    /// Remote paths as the user gave them.
    pub paths: Vec<String>,
    /// Each PATH lands here under its own name (the root's contents directly).
    pub outdir: PathBuf,
    /// Whether folders are downloaded whole.
    pub recursive: bool,
    /// Connections used at once.
    pub connections: usize,
}

/// How one file (or one PATH that could not be listed) ended.
#[derive(Debug)]
pub struct FileOutcome {
    /// The remote path.
    pub path: String,
    /// Downloaded, already up to date, or why not.
    pub result: Result<Done, Error>,
}

/// A file that ended verified.
#[derive(Debug)]
pub enum Done {
    /// Fetched (wholly or in part) and verified.
    Downloaded(Report),
    /// Already present with the server's size and SHA-256; nothing fetched.
    UpToDate(Report),
}

impl Done {
    /// The report, whichever way the file was verified.
    pub fn report(&self) -> &Report {
        match self {
            Done::Downloaded(report) | Done::UpToDate(report) => report,
        }
    }
}

/// The whole job, for the last line (and the last `--json` object).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Files the job covered.
    pub files: u64,
    /// Files fetched and verified.
    pub downloaded: u64,
    /// Files already present and verified, left alone.
    pub up_to_date: u64,
    /// Files (or paths) that failed.
    pub failed: u64,
    /// Bytes of the verified files.
    pub bytes: u64,
    /// File bytes that crossed the network.
    pub bytes_received: u64,
    /// Entries the server left out of its listings (see PROTOCOL.md).
    pub skipped_by_server: u64,
    /// Wall time.
    pub seconds: f64,
    /// Whether every file was verified.
    pub verified: bool,
    /// What failed and why.
    pub failures: Vec<FailureReport>,
}

/// One failure in the summary.
#[derive(Debug, Serialize)]
pub struct FailureReport {
    /// The remote path.
    pub path: String,
    /// What went wrong.
    pub error: String,
    /// The exit code it maps to.
    pub exit: u8,
}

impl Summary {
    /// The worst exit code among the failures: 0 only if all were verified.
    pub fn exit(&self) -> Exit {
        self.failures
            .iter()
            .map(|failure| failure.exit)
            .max()
            .map_or(Exit::Success, Exit::from_code)
    }
}

/// What the planning found: folders to create, files to fetch, and paths
/// that failed already.
#[derive(Default)]
struct Plan {
    dirs: Vec<PathBuf>,
    targets: Vec<Target>,
    failed: Vec<FileOutcome>,
    skipped: u64,
}

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
    let mut plan = plan(&mut link, batch).await;
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
        if let Err(err) = fs::create_dir_all(dir) {
            summary.failed += 1;
            summary.failures.push(FailureReport {
                path: dir.display().to_string(),
                error: format!("cannot create folder {}: {err}", dir.display()),
                exit: Exit::Failure.code(),
            });
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
            .map(|link| worker(link, &batch.policy, &queue, tx.clone(), &progress)),
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

impl Summary {
    fn add(&mut self, outcome: FileOutcome) {
        match outcome.result {
            Ok(done) => {
                let report = done.report();
                self.bytes += report.size;
                self.bytes_received += report.bytes_received;
                match done {
                    Done::Downloaded(_) => self.downloaded += 1,
                    Done::UpToDate(_) => self.up_to_date += 1,
                }
            }
            Err(err) => {
                self.failed += 1;
                self.failures.push(FailureReport {
                    path: outcome.path,
                    error: err.to_string(),
                    exit: err.exit().code(),
                });
            }
        }
    }
}

async fn worker(
    mut link: Link<'_>,
    policy: &Policy,
    queue: &Mutex<VecDeque<Target>>,
    tx: mpsc::UnboundedSender<FileOutcome>,
    progress: &Progress,
) {
    loop {
        let batch = next_batch(queue);
        if batch.is_empty() {
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
            let (same, rest) = small::unchanged(present).await;
            for report in same {
                progress.tracker().set(report.size);
                let outcome = FileOutcome {
                    path: report.path.clone(),
                    result: Ok(Done::UpToDate(report)),
                };
                if tx.send(outcome).is_err() {
                    return;
                }
            }
            careful.extend(rest);
        }
        if !fresh.is_empty() {
            let fetched = small::fetch(&mut link, fresh).await;
            for (target, result) in fetched.ended {
                if let Ok(report) = &result {
                    progress.tracker().set(report.size);
                }
                let outcome = FileOutcome {
                    path: target.remote,
                    result: result.map(Done::Downloaded),
                };
                if tx.send(outcome).is_err() {
                    return;
                }
            }
            careful.extend(fetched.again);
        }
        for target in careful {
            let result = one(&mut link, policy, &target, progress).await;
            let outcome = FileOutcome {
                path: target.remote,
                result,
            };
            if tx.send(outcome).is_err() {
                return;
            }
        }
    }
}

/// The next work for a connection: a run of up to `PIPELINE` small files, or
/// one other file.
fn next_batch(queue: &Mutex<VecDeque<Target>>) -> Vec<Target> {
    let Ok(mut queue) = queue.lock() else {
        return Vec::new();
    };
    let mut batch = Vec::new();
    while batch.len() < small::PIPELINE {
        match queue.front() {
            Some(target) if small::eligible(target) => batch.extend(queue.pop_front()),
            Some(_) if batch.is_empty() => {
                batch.extend(queue.pop_front());
                break;
            }
            _ => break,
        }
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
    let mut tracker = progress.tracker();
    if let Some(parent) = target.output.parent() {
        fs::create_dir_all(parent).map_err(Error::local(parent))?;
    }
    if let Some(report) = up_to_date(link, target).await? {
        tracker.set(report.size);
        return Ok(Done::UpToDate(report));
    }
    fetch(link, policy, target, &mut tracker)
        .await
        .map(Done::Downloaded)
}

/// A report for the local file when it already has the server's size and
/// SHA-256; `None` when it must be fetched.
async fn up_to_date(link: &mut Link<'_>, target: &Target) -> Result<Option<Report>, Error> {
    let started = Instant::now();
    let Ok(local) = fs::metadata(&target.output) else {
        return Ok(None);
    };
    if !local.is_file() || target.listed.is_some_and(|meta| meta.size != local.len()) {
        return Ok(None);
    }
    let meta = match target.listed {
        Some(meta) if meta.sha256.is_some() => meta,
        _ => match link.digest(&target.remote).await {
            Ok(meta) => meta,
            Err(Failure::Fatal(err)) => return Err(err),
            // Fetching will retry, and report, as it should.
            Err(_) => return Ok(None),
        },
    };
    // A file of several chunks is checked against the server's checkpoints,
    // its chunks on one thread per core, rather than hashed in one pass.
    let chunks = ft_protocol::boundaries(meta.size);
    let states = if chunks >= 2 {
        match crate::download::checkpoints(link, target, &meta, chunks).await {
            Ok(states) => Some(states),
            Err(Failure::Fatal(err)) => return Err(err),
            // Fetching will retry, and report, as it should.
            Err(_) => return Ok(None),
        }
    } else {
        None
    };
    let checked = target.clone();
    tokio::task::spawn_blocking(move || already_there(&checked, &meta, states.as_deref(), started))
        .await
        .map_err(|err| Error::local(&target.output)(std::io::Error::other(err)))?
        .map_err(Error::local(&target.output))
}

/// The report for `target` when its output already is the version `meta`
/// describes: a regular file of that size and SHA-256 (hashed here, so this
/// blocks; checked chunk by chunk on several threads when the server's
/// checkpoint `states` are given). `None` when it is not, or when `meta` has
/// no digest.
pub(crate) fn already_there(
    target: &Target,
    meta: &ft_protocol::FileMeta,
    states: Option<&[ft_protocol::Digest]>,
    started: Instant,
) -> std::io::Result<Option<Report>> {
    let Some(remote) = meta.sha256 else {
        return Ok(None);
    };
    match fs::symlink_metadata(&target.output) {
        Ok(local) if local.is_file() && local.len() == meta.size => {}
        _ => return Ok(None),
    }
    let local = match states {
        Some(states) => {
            partial::hash_file_checked(&target.output, states, crate::sink::hashing_threads())?
        }
        None => Some(partial::hash_file(&target.output)?),
    };
    if local != Some(remote) {
        return Ok(None);
    }
    Ok(Some(Report {
        path: target.remote.clone(),
        output: target.output.display().to_string(),
        size: meta.size,
        sha256: ft_protocol::hash::to_hex(&remote),
        resumed_from: meta.size,
        bytes_received: 0,
        seconds: started.elapsed().as_secs_f64(),
        verified: true,
    }))
}

/// Lists or notes every PATH; failures are recorded, not fatal to the rest.
async fn plan(link: &mut Link<'_>, batch: &Batch) -> Plan {
    let mut plan = Plan::default();
    for path in &batch.paths {
        let failed = |err: Error| FileOutcome {
            path: path.clone(),
            result: Err(err),
        };
        let remote = match RemotePath::parse(path) {
            Ok(remote) => remote,
            Err(err) => {
                plan.failed.push(failed(Error::Usage(format!(
                    "invalid path {path:?}: {err}"
                ))));
                continue;
            }
        };
        let base = match remote.file_name() {
            // `docs`, not `./docs`, in what the user reads.
            Some(name) if batch.outdir == Path::new(".") => PathBuf::from(name),
            Some(name) => batch.outdir.join(name),
            None => batch.outdir.clone(),
        };
        if !batch.recursive {
            plan.targets.push(Target {
                remote: remote.to_string(),
                output: base,
                listed: None,
            });
            continue;
        }
        // Digests are worth asking for only where local files may match: a
        // cold server hashes every file it lists with them before it sends
        // the listing, and a first run into an empty folder needs none.
        let digests = fs::read_dir(&base).is_ok_and(|mut entries| entries.next().is_some());
        let mut entries = Vec::new();
        let text = remote.to_string();
        let listed = with_retries(link, &batch.policy, async |link: &mut Link<'_>| {
            entries.clear();
            list_entries(link, &text, true, digests, |entry| {
                if entries.len() >= MAX_ENTRIES {
                    return Err(protocol(
                        &batch.server,
                        &format!(
                            "the listing of {text} has more than {MAX_ENTRIES} entries; \
                             download its folders one by one"
                        ),
                    ));
                }
                entries.push(entry);
                Ok(())
            })
            .await
        })
        .await;
        match listed {
            Ok(skipped) => {
                plan.skipped += skipped;
                plan.dirs.push(base.clone());
                add_entries(&mut plan, &batch.server, &remote, &base, entries);
            }
            Err(Error::Refused { reason, .. }) if reason.code == ErrorCode::NotADirectory => {
                plan.targets.push(Target {
                    remote: remote.to_string(),
                    output: base,
                    listed: None,
                });
            }
            Err(err) => plan.failed.push(failed(err)),
        }
    }
    refuse_clashes(&mut plan);
    plan
}

/// Turns a folder's entries into folders and files to fetch, refusing any
/// path that is not plainly below the folder.
fn add_entries(
    plan: &mut Plan,
    server: &Server,
    remote: &RemotePath,
    base: &Path,
    entries: Vec<Entry>,
) {
    let mut seen = HashSet::new();
    for entry in entries {
        let refuse = |why: String| FileOutcome {
            path: format!("{}/{}", remote, entry.path.escape_debug()),
            result: Err(Error::Server {
                server: server.label.clone(),
                reason: why,
            }),
        };
        let relative = match RemotePath::parse(&entry.path) {
            Ok(relative) if !relative.is_root() => relative,
            Ok(_) => {
                plan.failed.push(refuse(format!(
                    "refused an empty path in the listing of {remote}"
                )));
                continue;
            }
            Err(err) => {
                plan.failed.push(refuse(format!(
                    "refused an unsafe path in the listing of {remote}: {:?}: {err}",
                    entry.path
                )));
                continue;
            }
        };
        if !seen.insert(relative.to_string()) {
            plan.failed.push(refuse(format!(
                "{:?} is listed twice in {remote}",
                entry.path
            )));
            continue;
        }
        let output = base.join(relative.to_relative());
        match entry.kind {
            EntryKind::Dir => plan.dirs.push(output),
            EntryKind::File => plan.targets.push(Target {
                remote: remote.join(&relative).to_string(),
                output,
                listed: Some(entry.meta()),
            }),
        }
    }
}

/// Two targets with one output (`a/x` and `b/x` given as PATHs) would
/// write over each other, and a file named as another's partial (`NAME.part`,
/// `NAME.part.json`) would be overwritten by that download: the later ones
/// fail instead, explicitly.
fn refuse_clashes(plan: &mut Plan) {
    let outputs: HashSet<PathBuf> = plan.targets.iter().map(|t| t.output.clone()).collect();
    let partial_of = |output: &Path| {
        let name = output.to_str()?;
        let owner = name
            .strip_suffix(".part")
            .or_else(|| name.strip_suffix(".part.json"))?;
        outputs.contains(Path::new(owner)).then(|| owner.to_owned())
    };
    let mut taken = HashSet::new();
    let mut kept = Vec::new();
    for target in std::mem::take(&mut plan.targets) {
        let why = if let Some(owner) = partial_of(&target.output) {
            format!(
                "{} is the partial-download name of {owner}; download it on its own with -o",
                target.output.display()
            )
        } else if !taken.insert(target.output.clone()) {
            format!(
                "{} is already the output of another PATH; download it on its own with -o",
                target.output.display()
            )
        } else {
            kept.push(target);
            continue;
        };
        plan.failed.push(FileOutcome {
            path: target.remote.clone(),
            result: Err(Error::Usage(why)),
        });
    }
    plan.targets = kept;
}

/// What `--list PATH` found.
#[derive(Debug)]
pub enum Listed {
    /// A folder, whose entries went to the callback; the server left out
    /// this many.
    Folder {
        /// Entries left out.
        skipped: u64,
    },
    /// A single file.
    File(ft_protocol::FileMeta),
}

/// Lists `path` on the server, each entry to `each`, in the server's sorted
/// order; or describes it, if it is a file.
pub async fn list(
    server: &Server,
    policy: &Policy,
    path: &str,
    recursive: bool,
    mut each: impl FnMut(Entry),
) -> Result<Listed, Error> {
    let mut link = Link::new(server);
    let listed = with_retries(&mut link, policy, async |link: &mut Link<'_>| {
        list_entries(link, path, recursive, false, |entry| {
            each(entry);
            Ok(())
        })
        .await
    })
    .await;
    match listed {
        Ok(skipped) => Ok(Listed::Folder { skipped }),
        Err(Error::Refused { reason, .. }) if reason.code == ErrorCode::NotADirectory => {
            let meta = with_retries(&mut link, policy, async |link: &mut Link<'_>| {
                link.stat(path).await
            })
            .await?;
            Ok(Listed::File(meta))
        }
        Err(err) => Err(err),
    }
}

/// Lists `path`, handing each entry to `each`; the count of entries the
/// server left out.
async fn list_entries(
    link: &mut Link<'_>,
    path: &str,
    recursive: bool,
    digests: bool,
    mut each: impl FnMut(Entry) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let server = link.server;
    let request = Request::List {
        path: path.to_owned(),
        recursive,
        digests,
    };
    let mut reply = link.ask(&request).await?;
    loop {
        match reply {
            Response::Entries(entries) => {
                for entry in entries {
                    each(entry)?;
                }
            }
            Response::ListEnd { skipped } => return Ok(skipped),
            Response::Error(err) => return Err(remote_failure(server, err)),
            _ => {
                link.reset();
                return Err(protocol(server, "unexpected reply to a list request"));
            }
        }
        reply = match link.conn().await?.read_response().await {
            Ok(reply) => reply,
            Err(err) => {
                link.reset();
                return Err(crate::link::lost(server)(err));
            }
        };
    }
}

/// Runs `step` until it succeeds, fails for good, or the retries run out.
pub(crate) async fn with_retries<'s, T>(
    link: &mut Link<'s>,
    policy: &Policy,
    mut step: impl AsyncFnMut(&mut Link<'s>) -> Result<T, Failure>,
) -> Result<T, Error> {
    let mut failures = 0;
    loop {
        let err = match step(link).await {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Retry(err)) => err,
            Err(Failure::Changed | Failure::Mismatch(_)) => Error::Server {
                server: link.server.label.clone(),
                reason: "the listing changed while it was read".into(),
            },
        };
        link.reset();
        failures += 1;
        if failures > policy.retries {
            return Err(err);
        }
        tokio::time::sleep(backoff(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(remote: &str, output: &str) -> Target {
        Target {
            remote: remote.into(),
            output: output.into(),
            listed: None,
        }
    }

    #[test]
    fn clashing_outputs_fail_instead_of_overwriting() {
        let mut plan = Plan {
            targets: vec![
                target("d/x", "out/x"),
                target("d/x.part", "out/x.part"),
                target("d/x.part.json", "out/x.part.json"),
                target("a/y", "out/y"),
                target("b/y", "out/y"),
                target("d/z.part", "out/z.part"),
            ],
            ..Plan::default()
        };
        refuse_clashes(&mut plan);
        let kept: Vec<&str> = plan.targets.iter().map(|t| t.remote.as_str()).collect();
        assert_eq!(kept, ["d/x", "a/y", "d/z.part"]);
        let failed: Vec<&str> = plan.failed.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(failed, ["d/x.part", "d/x.part.json", "b/y"]);
        assert!(plan
            .failed
            .iter()
            .all(|f| matches!(f.result, Err(Error::Usage(_)))));
    }

    #[test]
    fn the_worst_failure_decides_the_exit_code() {
        let mut summary = Summary::default();
        assert_eq!(summary.exit(), Exit::Success);
        for code in [1, 4, 3] {
            summary.failures.push(FailureReport {
                path: "p".into(),
                error: "e".into(),
                exit: code,
            });
        }
        assert_eq!(summary.exit(), Exit::Verification);
    }
}
