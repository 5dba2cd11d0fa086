//! ftput: uploads local files and folders to an ftserve server that takes
//! them, each verified by the server chunk by chunk and as a whole before
//! it takes its name, and resumed from what the server holds after any
//! interruption. [`run_put`] takes a plain [`PutConfig`]: it plans what
//! goes where (`plan`), sends one file over as many connections as help,
//! or many files over a pool of connections, small ones pipelined
//! (`send`, `many`), and prints what happened.

mod many;
mod send;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::HumanBytes;
use serde::Serialize;

use crate::error::{Error, UsageError};
use crate::exit::Exit;
use crate::output::{failed, print_json, say, Show};
use crate::progress::Progress;
use crate::session::{Link, Server};
use crate::trust::TrustSettings;
use send::{Item, Options};

/// Connections one file may use by default; the controller adds them only
/// while they make the upload faster.
pub const ONE_FILE_CONNECTIONS: usize = 16;

/// Connections a batch's files share by default.
pub const MANY_FILES_CONNECTIONS: usize = 8;

/// The settings of one ftput run, as the user gave them.
#[derive(Debug, Clone)]
pub struct PutConfig {
    /// SERVER as written.
    pub server: String,
    /// LOCAL files and folders.
    pub locals: Vec<PathBuf>,
    /// `--to`: the folder on the server to upload into [default: its root].
    pub to: Option<String>,
    /// `-r`: upload folders whole.
    pub recursive: bool,
    /// `--overwrite`: replace files already on the server.
    pub overwrite: bool,
    /// Failed attempts in a row allowed.
    pub retries: u32,
    /// Connect and silence bound.
    pub timeout: std::time::Duration,
    /// Connections used at once, if the user chose.
    pub connections: Option<usize>,
    /// Congestion control to send with (`None`: the kernel's).
    pub congestion: Option<String>,
    /// What to print.
    pub show: Show,
    /// Whom to trust as the server.
    pub trust: TrustSettings,
    /// The access token to present.
    pub token: Option<ft_protocol::Token>,
}

/// One file's outcome, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct PutReport {
    /// The local file.
    pub path: String,
    /// Its path on the server.
    pub remote: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, as the server verified it.
    pub sha256: String,
    /// Bytes the server already held, verified, when this run began.
    pub resumed_from: u64,
    /// File bytes this run sent.
    pub bytes_sent: u64,
    /// Wall time.
    pub seconds: f64,
    /// Whether the server verified the whole file.
    pub verified: bool,
    /// Most connections used at once.
    #[serde(skip)]
    pub connections: usize,
    /// The server had this very file under its name already (nothing was
    /// sent: `resumed_from` is the size, `bytes_sent` 0).
    #[serde(skip)]
    pub up_to_date: bool,
}

/// The end of a run of several files, as `--json` prints it last.
#[derive(Debug, Default, Serialize)]
pub struct PutSummary {
    /// Files the run covered.
    pub files: u64,
    /// Files stored and verified.
    pub uploaded: u64,
    /// Files the server had already, the same size and SHA-256, left alone.
    pub up_to_date: u64,
    /// Files that failed.
    pub failed: u64,
    /// Bytes of the stored files.
    pub bytes: u64,
    /// File bytes sent.
    pub bytes_sent: u64,
    /// Wall time.
    pub seconds: f64,
    /// Whether every file was stored verified.
    pub verified: bool,
    /// What failed and why.
    pub failures: Vec<crate::FailureReport>,
    /// Entries of the local folders left out: links, special files, names
    /// that are not UTF-8.
    pub skipped: u64,
}

/// Does what `config` asks, prints what it should, and says how it ended.
pub fn run_put(config: PutConfig) -> Exit {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            failed(None, &err);
            return Exit::Failure;
        }
    };
    let server = match server(&config) {
        Ok(server) => Arc::new(server),
        Err(err) => {
            failed(None, &err);
            return err.exit();
        }
    };
    let (items, skipped) = match plan(&config) {
        Ok(planned) => planned,
        Err(err) => {
            failed(None, &err);
            return err.exit();
        }
    };
    let show = config.show;
    let many = config.recursive || config.locals.len() > 1;
    let options = Options {
        retries: config.retries,
        overwrite: config.overwrite,
        connections: config.connections.unwrap_or(match many {
            true => MANY_FILES_CONNECTIONS,
            false => ONE_FILE_CONNECTIONS,
        }),
    };
    let work = async {
        if many {
            many::run(&server, items, &options, show, skipped).await
        } else {
            one(&server, &items[0], &options, show).await
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            exit = work => Some(exit),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    outcome.unwrap_or_else(|| {
        say("ftput: interrupted; run the same command again to resume: the server keeps what it verified");
        Exit::Interrupted
    })
}

/// One file: a bar, a line, one JSON object.
async fn one(server: &Arc<Server>, item: &Item, options: &Options, show: Show) -> Exit {
    let progress = Progress::new(&item.remote, show.bar());
    let mut tracker = progress.tracker();
    let mut link = Link::new(server);
    let started = Instant::now();
    let sent = match at_once(server, &mut link, item, options, &progress).await {
        Some(done) => done,
        None => send::send(server, &mut link, item, options, &mut tracker)
            .await
            .map(|sent| report(item, &sent, started)),
    };
    progress.clear();
    match sent {
        Ok(report) => {
            if show.json {
                print_json(&report);
            }
            if !show.quiet {
                say(&format!("ftput: {}", describe(&report)));
            }
            Exit::Success
        }
        Err(err) => {
            failed(
                Some(&format!("cannot upload {}", item.local.display())),
                &err,
            );
            err.exit()
        }
    }
}

/// A small file (under one chunk) sent as a batch's small files are: its
/// `Put`, chunk and `Commit` in one write, one round trip in all. `None`
/// for a larger file, or when the connection is lost: then the usual way,
/// with its retries.
async fn at_once(
    server: &Arc<Server>,
    link: &mut Link<'_>,
    item: &Item,
    options: &Options,
    progress: &Progress,
) -> Option<Result<PutReport, Error>> {
    let size = std::fs::metadata(&item.local).ok()?.len();
    if size >= ft_protocol::CHUNK_SIZE {
        return None;
    }
    let (done, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let run = vec![(item.clone(), size)];
    match many::pipelined(server, link, run, options, progress, &done).await {
        Ok(()) => ended.try_recv().ok().map(|(_, result)| result),
        Err(_) => {
            link.reset();
            None
        }
    }
}

fn report(item: &Item, sent: &send::Sent, started: Instant) -> PutReport {
    PutReport {
        path: item.local.display().to_string(),
        remote: item.remote.clone(),
        size: sent.size,
        sha256: ft_protocol::hash::to_hex(&sent.sha256),
        resumed_from: sent.resumed_from,
        bytes_sent: sent.bytes_sent,
        seconds: started.elapsed().as_secs_f64(),
        verified: true,
        connections: sent.connections,
        up_to_date: sent.up_to_date,
    }
}

fn describe(report: &PutReport) -> String {
    if report.up_to_date {
        return format!(
            "{} -> {}: {}, sha256 {} already on the server",
            report.path,
            report.remote,
            HumanBytes(report.size),
            report.sha256
        );
    }
    let resumed = match report.resumed_from {
        0 => String::new(),
        held => format!(", resumed from {}", HumanBytes(held)),
    };
    let over = match report.connections {
        0 | 1 => String::new(),
        n => format!(", over {n} connections"),
    };
    let rate = report.bytes_sent as f64 / report.seconds.max(1e-6);
    format!(
        "{} -> {}: {} in {:.2} s ({}/s{resumed}{over}), sha256 {} verified by the server",
        report.path,
        report.remote,
        HumanBytes(report.size),
        report.seconds,
        HumanBytes(rate as u64),
        report.sha256,
    )
}

/// The server part of the settings, checked.
fn server(config: &PutConfig) -> Result<Server, Error> {
    Server::new(
        &config.server,
        config.timeout,
        config.trust.clone(),
        config.token.clone(),
        config.congestion.clone(),
    )
}

/// What goes where: each LOCAL file to `--to`/its name; with `-r`, each
/// LOCAL folder's tree under `--to`/its name. Entries of a tree that are
/// links, special files or names that are not UTF-8 are left out and
/// counted.
fn plan(config: &PutConfig) -> Result<(Vec<Item>, u64), Error> {
    let to = match config.to.as_deref() {
        None | Some("") | Some(".") => None,
        Some(to) => Some(
            ft_protocol::RemotePath::parse(to.trim_end_matches('/')).map_err(|source| {
                UsageError::InvalidPath {
                    path: to.to_owned(),
                    source,
                }
            })?,
        ),
    };
    let under = |name: &str| match &to {
        Some(to) if !to.is_root() => format!("{to}/{name}"),
        _ => name.to_owned(),
    };
    let mut items = Vec::new();
    let mut skipped = 0;
    for local in &config.locals {
        let meta = std::fs::metadata(local).map_err(Error::local(local))?;
        let name = local_name(local)?;
        if meta.is_dir() {
            if !config.recursive {
                return Err(UsageError::Folder(local.clone()).into());
            }
            walk(local, &under(&name), &mut items, &mut skipped)?;
        } else if meta.is_file() {
            items.push(Item {
                local: local.clone(),
                remote: under(&name),
            });
        } else {
            return Err(UsageError::NotAFile(local.clone()).into());
        }
    }
    if items.is_empty() && !config.recursive {
        return Err(UsageError::NoPath.into());
    }
    Ok((items, skipped))
}

/// The name `local` has, for the server: its last component, in UTF-8.
fn local_name(local: &Path) -> Result<String, Error> {
    let absolute = std::path::absolute(local).unwrap_or_else(|_| local.to_path_buf());
    let name = absolute
        .components()
        .rfind(|c| matches!(c, std::path::Component::Normal(_)))
        .and_then(|c| c.as_os_str().to_str())
        .filter(|name| !name.is_empty());
    name.map(str::to_owned)
        .ok_or_else(|| UsageError::NoFileName(local.display().to_string()).into())
}

/// Every regular file below `dir`, in name order, as items under `remote`.
fn walk(dir: &Path, remote: &str, items: &mut Vec<Item>, skipped: &mut u64) -> Result<(), Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::local(dir))?
        .collect::<Result<_, _>>()
        .map_err(Error::local(dir))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            *skipped += 1;
            continue;
        };
        let kind = entry.file_type().map_err(Error::local(&path))?;
        let remote = format!("{remote}/{name}");
        if kind.is_dir() {
            walk(&path, &remote, items, skipped)?;
        } else if kind.is_file() {
            items.push(Item {
                local: path,
                remote,
            });
        } else {
            *skipped += 1;
        }
    }
    Ok(())
}
