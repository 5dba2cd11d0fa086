//! `ftget SERVER PATH`: thin edge around the ft-client library.

mod cli;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use ft_client::{Config, Exit, Progress, Report};
use indicatif::HumanBytes;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let matches = cli::Cli::command().version(version).get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    run(cli).into()
}

fn run(cli: cli::Cli) -> Exit {
    let config = Config {
        server: cli.server,
        remote: cli.path,
        output: cli.output,
        resume: !cli.no_resume,
        retries: cli.retries,
        timeout: Duration::from_secs(cli.timeout),
    };
    let job = match ft_client::resolve(config) {
        Ok(job) => job,
        Err(err) => return fail(&anyhow::Error::new(err)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            return fail(&anyhow::Error::new(err).context("cannot start the async runtime"))
        }
    };
    let progress = Progress::new(&job.remote, !cli.quiet && std::io::stderr().is_terminal());
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = ft_client::download(&job, &progress) => Some(result),
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
                summarize(&report);
            }
            Exit::Success
        }
        Some(Err(err)) => {
            let context = format!("cannot download {}", job.remote);
            fail(&anyhow::Error::new(err).context(context))
        }
        None => {
            eprintln!(
                "ftget: interrupted; run the same command again to resume {}",
                job.output.display()
            );
            Exit::Interrupted
        }
    }
}

/// Prints the error with its whole chain on one line; returns its exit code.
fn fail(err: &anyhow::Error) -> Exit {
    eprintln!("ftget: {err:#}");
    err.downcast_ref::<ft_client::Error>()
        .map_or(Exit::Failure, ft_client::Error::exit)
}

fn print_json(report: &Report) {
    let mut stdout = std::io::stdout();
    let written = serde_json::to_writer(&mut stdout, report)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout))
        .and_then(|()| stdout.flush());
    if let Err(err) = written {
        eprintln!("ftget: cannot write to stdout: {err}");
    }
}

fn summarize(report: &Report) {
    let resumed = if report.resumed_from > 0 {
        format!(", resumed from {}", HumanBytes(report.resumed_from))
    } else {
        String::new()
    };
    let rate = report.bytes_received as f64 / report.seconds.max(1e-6);
    eprintln!(
        "ftget: {} -> {}: {} in {:.2} s ({}/s{resumed}), sha256 {} verified",
        report.path,
        report.output,
        HumanBytes(report.size),
        report.seconds,
        HumanBytes(rate as u64),
        report.sha256,
    );
}
