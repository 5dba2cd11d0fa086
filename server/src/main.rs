//! `ftserve ROOT`: thin edge around the ft-server library.

mod cli;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use ft_server::{Config, Server, SHUTDOWN_GRACE};
use tokio::net::TcpListener;

/// How long the runtime waits for blocking reads to notice the shutdown.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let matches = cli::Cli::command().version(version).get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ftserve: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let config = Config {
        root: cli.root,
        max_connections: cli.max_connections as usize,
        idle_timeout: Duration::from_secs(cli.idle_timeout),
        shutdown_grace: SHUTDOWN_GRACE,
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
        let mut stdout = std::io::stdout();
        writeln!(
            stdout,
            "ftserve: serving {} read-only, listening on {addr}",
            root.display()
        )
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
        server.run(listener, shutdown_signal()).await;
        Ok(())
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
