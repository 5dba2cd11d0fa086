//! `ftget SERVER PATH...`: thin edge around the ft-client library.

mod cli;

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use clap_complete::Shell;
use ft_client::{
    Batch, Config, Done, Entry, EntryKind, Exit, FileMeta, FileOutcome, Job, Listed, Mode, Policy,
    Progress, Report, Summary,
};
use indicatif::HumanBytes;
use serde::Serialize;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let command = cli::Cli::command().version(version);
    let matches = command.clone().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    if let Some(dir) = &cli.generate {
        return match generate(command, dir) {
            Ok(()) => Exit::Success,
            Err(err) => fail(&err),
        }
        .into();
    }
    run(cli).into()
}

/// Writes the man page and the bash, zsh and fish completions for `command`
/// into `dir`, and prints their paths.
fn generate(mut command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    let failed = || format!("cannot write into {}", dir.display());
    std::fs::create_dir_all(dir).with_context(failed)?;
    let name = command.get_name().to_owned();
    let mut written = vec![clap_mangen::Man::new(command.clone())
        .generate_to(dir)
        .with_context(failed)?];
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        written.push(
            clap_complete::generate_to(shell, &mut command, &name, dir).with_context(failed)?,
        );
    }
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn run(cli: cli::Cli) -> Exit {
    let config = Config {
        // clap has checked that SERVER was given.
        server: cli.server.clone().unwrap_or_default(),
        paths: cli.paths.clone(),
        output: cli.output.clone(),
        recursive: cli.recursive,
        resume: !cli.no_resume,
        retries: cli.retries,
        timeout: Duration::from_secs(cli.timeout),
        // At most 64, by the parser's range.
        connections: cli.connections as usize,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            return fail(&anyhow::Error::new(err).context("cannot start the async runtime"))
        }
    };
    // Past a file-size limit (RLIMIT_FSIZE) the kernel sends SIGXFSZ, which
    // kills at once; with a handler installed, the write fails with EFBIG
    // instead, and ftget reports it and keeps the partial.
    let _file_size_signal = {
        let _runtime = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
    };
    if cli.list {
        return list(&runtime, &cli, &config);
    }
    match ft_client::resolve(config) {
        Ok(Mode::One(job)) => one(&runtime, &cli, &job),
        Ok(Mode::Many(batch)) => many(&runtime, &cli, &batch),
        Err(err) => fail(&anyhow::Error::new(err)),
    }
}

/// One file to one name: a bar for it, a summary line, one JSON object.
fn one(runtime: &tokio::runtime::Runtime, cli: &cli::Cli, job: &Job) -> Exit {
    let remote = &job.target.remote;
    let progress = Progress::new(remote, show_bar(cli));
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = ft_client::download(job, &progress) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    progress.clear();
    match outcome {
        Some(Ok(report)) => {
            if cli.json {
                print_json(&report);
            }
            if !cli.quiet {
                eprintln!("ftget: {}", describe(&report, "verified"));
            }
            Exit::Success
        }
        Some(Err(err)) => {
            fail(&anyhow::Error::new(err).context(format!("cannot download {remote}")))
        }
        None => interrupted(&job.target.output.display().to_string()),
    }
}

/// Several files or folders: one bar for the job, a line per file with -v,
/// the failures and a summary at the end.
fn many(runtime: &tokio::runtime::Runtime, cli: &cli::Cli, batch: &Batch) -> Exit {
    let visible = show_bar(cli);
    let mut shown = None;
    let outcome = runtime.block_on(async {
        let job = ft_client::run_batch(
            batch,
            |files, bytes| {
                let progress = Progress::many(files, bytes, visible);
                shown = Some(progress.clone());
                progress
            },
            |outcome, progress| on_file(cli, outcome, progress),
        );
        tokio::select! {
            summary = job => Some(summary),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    if let Some(progress) = shown {
        progress.clear();
    }
    let Some(summary) = outcome else {
        let place = if batch.outdir == std::path::Path::new(".") {
            "the downloads in the current folder".to_owned()
        } else {
            format!("the downloads in {}", batch.outdir.display())
        };
        return interrupted(&place);
    };
    for failure in &summary.failures {
        eprintln!(
            "ftget: cannot download {}: {}",
            printable(&failure.path),
            failure.error
        );
    }
    if cli.json {
        print_json(&summary);
    }
    if !cli.quiet {
        eprintln!("ftget: {}", totals(&summary));
    }
    summary.exit()
}

fn on_file(cli: &cli::Cli, outcome: &FileOutcome, progress: &Progress) {
    let Ok(done) = &outcome.result else {
        return;
    };
    if cli.json {
        print_json(done.report());
    }
    if cli.verbose && !cli.quiet {
        let how = match done {
            Done::Downloaded(_) => "verified",
            Done::UpToDate(_) => "already up to date",
        };
        progress.line(&format!("ftget: {}", describe(done.report(), how)));
    }
}

/// `n` and the noun that goes with it: "1 file", "2 files".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn totals(summary: &Summary) -> String {
    let mut line = format!(
        "{}, {}: {} downloaded, {} already up to date, {} failed; {} received in {:.2} s",
        count(summary.files, "file", "files"),
        HumanBytes(summary.bytes),
        summary.downloaded,
        summary.up_to_date,
        summary.failed,
        HumanBytes(summary.bytes_received),
        summary.seconds,
    );
    if summary.skipped_by_server > 0 {
        line.push_str(&format!(
            " (the server left out {} it cannot serve: see its log)",
            count(summary.skipped_by_server, "entry", "entries")
        ));
    }
    line
}

/// `--list`: one line (or JSON object) per entry, in the server's order.
fn list(runtime: &tokio::runtime::Runtime, cli: &cli::Cli, config: &Config) -> Exit {
    let server = match ft_client::server(config) {
        Ok(server) => server,
        Err(err) => return fail(&anyhow::Error::new(err)),
    };
    let policy = Policy {
        resume: false,
        retries: config.retries,
    };
    let paths = if config.paths.is_empty() {
        vec![String::new()]
    } else {
        config.paths.clone()
    };
    let mut worst = Exit::Success;
    for path in &paths {
        let mut out = std::io::stdout().lock();
        let mut show = |entry: &Entry| show_entry(&mut out, cli, entry);
        let shown_path = if path.is_empty() { "." } else { path };
        let listed = runtime.block_on(async {
            tokio::select! {
                listed = ft_client::list(&server, &policy, path, cli.recursive, |e| show(&e)) => Some(listed),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let shown = match listed {
            None => return Exit::Interrupted,
            Some(Ok(Listed::Folder { skipped })) => {
                if skipped > 0 && !cli.quiet {
                    eprintln!(
                        "ftget: the server left out {} of {shown_path} it cannot serve",
                        count(skipped, "entry", "entries")
                    );
                }
                Ok(())
            }
            Some(Ok(Listed::File(meta))) => {
                let name = path.rsplit('/').find(|n| !n.is_empty()).unwrap_or(path);
                show(&file_entry(name, &meta));
                Ok(())
            }
            Some(Err(err)) => Err(err),
        };
        let _ = std::io::stdout().flush();
        if let Err(err) = shown {
            let exit = fail(&anyhow::Error::new(err).context(format!("cannot list {shown_path}")));
            if exit.code() > worst.code() {
                worst = exit;
            }
        }
    }
    worst
}

fn file_entry(name: &str, meta: &FileMeta) -> Entry {
    Entry {
        path: name.to_owned(),
        kind: EntryKind::File,
        size: meta.size,
        mtime_secs: meta.mtime_secs,
        mtime_nanos: meta.mtime_nanos,
        sha256: meta.sha256,
    }
}

/// What `--list --json` prints for an entry.
#[derive(Serialize)]
struct JsonEntry<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: String,
}

fn show_entry(out: &mut impl Write, cli: &cli::Cli, entry: &Entry) {
    let timestamp =
        jiff::Timestamp::new(entry.mtime_secs, 0).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let written = if cli.json {
        let json = JsonEntry {
            name: &entry.path,
            kind: match entry.kind {
                EntryKind::File => "file",
                EntryKind::Dir => "dir",
            },
            size: entry.size,
            mtime: timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        };
        serde_json::to_writer(&mut *out, &json)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let (kind, slash) = match entry.kind {
            EntryKind::File => ('-', ""),
            EntryKind::Dir => ('d', "/"),
        };
        let size = if cli.human {
            HumanBytes(entry.size).to_string()
        } else {
            entry.size.to_string()
        };
        let local = timestamp.to_zoned(jiff::tz::TimeZone::system());
        writeln!(
            out,
            "{kind} {size:>12} {} {}{slash}",
            local.strftime("%Y-%m-%d %H:%M"),
            printable(&entry.path)
        )
    };
    if let Err(err) = written {
        eprintln!("ftget: cannot write to stdout: {err}");
    }
}

fn show_bar(cli: &cli::Cli) -> bool {
    !cli.quiet && std::io::stderr().is_terminal()
}

fn interrupted(what: &str) -> Exit {
    eprintln!("ftget: interrupted; run the same command again to resume {what}");
    Exit::Interrupted
}

/// Prints the error with its whole chain on one line; returns its exit code.
fn fail(err: &anyhow::Error) -> Exit {
    eprintln!("ftget: {err:#}");
    err.downcast_ref::<ft_client::Error>()
        .map_or(Exit::Failure, ft_client::Error::exit)
}

fn print_json(value: &impl Serialize) {
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout))
        .and_then(|()| stdout.flush());
    if let Err(err) = written {
        eprintln!("ftget: cannot write to stdout: {err}");
    }
}

fn describe(report: &Report, how: &str) -> String {
    let resumed = if report.resumed_from > 0 && report.bytes_received > 0 {
        format!(", resumed from {}", HumanBytes(report.resumed_from))
    } else {
        String::new()
    };
    let rate = report.bytes_received as f64 / report.seconds.max(1e-6);
    format!(
        "{} -> {}: {} in {:.2} s ({}/s{resumed}), sha256 {} {how}",
        printable(&report.path),
        printable(&report.output),
        HumanBytes(report.size),
        report.seconds,
        HumanBytes(rate as u64),
        report.sha256,
    )
}

/// A name from the server, with control characters shown as `?` (as `ls`
/// does) so it cannot drive the terminal.
fn printable(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_control) {
        Cow::Owned(
            name.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(name)
    }
}
