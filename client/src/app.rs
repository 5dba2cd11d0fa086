//! The top of ftget: a [`Config`] becomes a mode's work on a runtime, under
//! Ctrl-C, and its outcome becomes output and an exit code.

use std::future::Future;
use std::io::Write;

use tokio::runtime::Runtime;

use crate::batch::{self, Batch};
use crate::config::{resolve, server, Config, Mode};
use crate::exit::Exit;
use crate::listing::{self, Listed};
use crate::output::{self, Show};
use crate::progress::Progress;
use crate::transfer::{self, Job};

/// Does what `config` asks, prints what it should, and says how it ended.
pub fn run(config: Config) -> Exit {
    let runtime = match Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            output::failed(Some("cannot start the async runtime"), &err);
            return Exit::Failure;
        }
    };
    // Past a file-size limit (RLIMIT_FSIZE) the kernel sends SIGXFSZ, which
    // kills at once; with a handler installed, the write fails with EFBIG
    // instead, and ftget reports it and keeps the partial.
    let _file_size_signal = {
        let _runtime = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
    };
    let show = config.show;
    if config.list {
        return list(&runtime, &config);
    }
    match resolve(config) {
        Ok(Mode::One(job)) => one(&runtime, show, &job),
        Ok(Mode::Many(batch)) => many(&runtime, show, &batch),
        Err(err) => {
            output::failed(None, &err);
            err.exit()
        }
    }
}

/// Runs `work` to its end, or until Ctrl-C: `None` then.
fn interruptible<T>(runtime: &Runtime, work: impl Future<Output = T>) -> Option<T> {
    runtime.block_on(async {
        tokio::select! {
            done = work => Some(done),
            _ = tokio::signal::ctrl_c() => None,
        }
    })
}

/// One file to one name: a bar for it, a summary line, one JSON object.
fn one(runtime: &Runtime, show: Show, job: &Job) -> Exit {
    let remote = &job.target.remote;
    let progress = Progress::new(remote, show.bar());
    let outcome = interruptible(runtime, transfer::download(job, &progress));
    progress.clear();
    match outcome {
        Some(Ok(report)) => {
            show.downloaded(&report);
            Exit::Success
        }
        Some(Err(err)) => {
            output::failed(Some(&format!("cannot download {remote}")), &err);
            err.exit()
        }
        None => {
            output::interrupted(&job.target.output.shown().display().to_string());
            Exit::Interrupted
        }
    }
}

/// Several files or folders: one bar for the job, a line per file with -v,
/// the failures and a summary at the end.
fn many(runtime: &Runtime, show: Show, batch: &Batch) -> Exit {
    let visible = show.bar();
    let mut shown = None;
    let job = batch::run(
        batch,
        |files, bytes| {
            let progress = Progress::many(files, bytes, visible);
            shown = Some(progress.clone());
            progress
        },
        |outcome, progress| show.file(outcome, progress),
    );
    let outcome = interruptible(runtime, job);
    if let Some(progress) = shown {
        progress.clear();
    }
    let Some(summary) = outcome else {
        let place = if batch.outdir == std::path::Path::new(".") {
            "the downloads in the current folder".to_owned()
        } else {
            format!("the downloads in {}", batch.outdir.display())
        };
        output::interrupted(&place);
        return Exit::Interrupted;
    };
    show.summary(&summary);
    summary.exit()
}

/// `--list`: one line (or JSON object) per entry, in the server's order,
/// for each PATH (the served folder when there is none).
fn list(runtime: &Runtime, config: &Config) -> Exit {
    let show = config.show;
    let server = match server(config) {
        Ok(server) => server,
        Err(err) => {
            output::failed(None, &err);
            return err.exit();
        }
    };
    let paths = if config.paths.is_empty() {
        vec![String::new()]
    } else {
        config.paths.clone()
    };
    let mut worst = Exit::Success;
    for path in &paths {
        let mut out = std::io::stdout().lock();
        let shown_path = if path.is_empty() { "." } else { path };
        let each = |entry| show.entry(&mut out, &entry);
        let work = listing::list(&server, config.retries, path, config.recursive, each);
        let listed = interruptible(runtime, work);
        let failure = match listed {
            None => return Exit::Interrupted,
            Some(Ok(Listed::Folder { skipped })) => {
                show.left_out(skipped, shown_path);
                None
            }
            Some(Ok(Listed::File(meta))) => {
                show.file_entry(&mut out, path, &meta);
                None
            }
            Some(Err(err)) => Some(err),
        };
        let _ = out.flush();
        if let Some(err) = failure {
            output::failed(Some(&format!("cannot list {shown_path}")), &err);
            worst = worst.max(err.exit());
        }
    }
    worst
}
