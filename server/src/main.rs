//! `ftserve ROOT`: the thin edge around the ft-server library: arguments to
//! a `Config`, the listener and the signals, the banner, the exit code.

mod cli;
mod printable;
mod setup;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use ft_server::{Config, Limits, Server};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let command = cli::Cli::command().version(version);
    let matches = command.clone().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let result = match &cli.generate {
        Some(dir) => cli::generate(command, dir),
        None => {
            setup::init_logs(cli.log_format);
            setup::raise_file_limit();
            run(cli)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ftserve: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // clap has checked that ROOT was given, on the command line or in the environment.
    let root = cli.root.context("no ROOT given")?;
    let config = Config {
        root: root.clone(),
        limits: Limits {
            max_connections: cli.max_connections as usize,
            idle_timeout: Duration::from_secs(cli.idle_timeout),
            ..Limits::default()
        },
    };
    let blocking_shutdown = config.limits.blocking_shutdown;
    let server = Server::open(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let shutdown = setup::shutdown_signal()?;
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
        if let Some(warning) = setup::exposure_warning(addr) {
            eprintln!("ftserve: warning: {warning}");
        }
        server.run(listener, shutdown).await;
        Ok(())
    });
    runtime.shutdown_timeout(blocking_shutdown);
    result
}
