//! `ftserve ROOT`: thin edge around the ft-server library.

mod cli;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use clap_complete::Shell;
use ft_server::{Config, Server, SHUTDOWN_GRACE};
use tokio::net::TcpListener;

/// How long the runtime waits for blocking reads to notice the shutdown.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let command = cli::Cli::command().version(version);
    let matches = command.clone().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    if let Some(dir) = &cli.generate {
        return match generate(command, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ftserve: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_logs(cli.log_format);
    raise_file_limit();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ftserve: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Human lines or JSON lines on stderr, filtered by RUST_LOG (default
/// `info`). Colour only on a terminal; there, tracing-subscriber leaves it
/// off when NO_COLOR is set.
fn init_logs(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let logs = if std::io::stderr().is_terminal() {
        logs
    } else {
        logs.with_ansi(false)
    };
    match format {
        cli::LogFormat::Human => logs.init(),
        cli::LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

/// Raises the soft limit on open files to the hard one: every connection is
/// a descriptor, and the usual soft default (1,024) is below
/// `--max-connections`' default of 512 plus their open files.
fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {err}");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!("cannot read the open-file limit: {err}"),
    }
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

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // clap has checked that ROOT was given, on the command line or in the environment.
    let root = cli.root.context("no ROOT given")?;
    let config = Config {
        root,
        max_connections: cli.max_connections as usize,
        idle_timeout: Duration::from_secs(cli.idle_timeout),
        shutdown_grace: SHUTDOWN_GRACE,
        keepalive: ft_protocol::KEEPALIVE,
    };
    let root = config.root.clone();
    let server = Server::open(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let shutdown = shutdown_signal()?;
        let mut stdout = std::io::stdout();
        writeln!(
            stdout,
            "ftserve: serving {} read-only, at most {} connections, idle timeout {} s, listening on {addr}",
            root.display(),
            cli.max_connections,
            cli.idle_timeout,
        )
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
        if let Some(warning) = exposure_warning(addr) {
            eprintln!("ftserve: warning: {warning}");
        }
        server.run(listener, shutdown).await;
        Ok(())
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// A warning when `addr` can be reached from other machines: ft has no
/// authentication, so the folder is open to all of them.
fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "{addr} is not a loopback address: anyone who can reach this port can read the folder \
             (ft has no authentication or encryption)"
        )
    })
}

/// Installs the SIGINT and SIGTERM handlers now, so that a signal arriving
/// any time after start-up (even right after the `listening on` line) asks
/// for a clean shutdown; the future completes on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown requested");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listening_goes_unwarned() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("an address");
        assert!(exposure_warning(addr("127.0.0.1:7878")).is_none());
        assert!(exposure_warning(addr("[::1]:7878")).is_none());
        for open in ["0.0.0.0:7878", "[::]:7878", "192.168.1.5:7878"] {
            let warning = exposure_warning(addr(open)).unwrap_or_default();
            assert!(
                warning.contains("anyone who can reach"),
                "{open}: {warning}"
            );
        }
    }
}
