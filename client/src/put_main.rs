//! `ftput SERVER LOCAL... [--to REMOTE_DIR]`: the thin edge around the
//! ft-client library's upload: arguments to a `PutConfig`, run, exit code.

mod cli;
mod put_cli;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use ft_client::trust::TrustSettings;
use ft_client::{Exit, PutConfig, Show};
use ft_protocol::Token;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let command = put_cli::Cli::command().version(version);
    let matches = command.clone().get_matches();
    let cli = put_cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let exit = match &cli.generate {
        Some(dir) => match cli::generate(command, dir) {
            Ok(()) => Exit::Success,
            Err(err) => {
                eprintln!("ftput: {err:#}");
                Exit::Failure
            }
        },
        None => match cli::token(cli.token_file.as_deref(), "FTPUT_TOKEN")
            .and_then(|token| congestion(cli.congestion.as_deref()).map(|()| token))
        {
            Ok(token) => ft_client::run_put(config(cli, token)),
            Err(err) => {
                eprintln!("ftput: {err:#}");
                Exit::Usage
            }
        },
    };
    exit.into()
}

/// Checks that the kernel lets ftput send with the congestion control the
/// user named (ftserve refuses an unknown one at start, and so does ftput);
/// the default, BBR, is tried on each connection and quietly left out where
/// the kernel does not offer it.
fn congestion(asked: Option<&str>) -> anyhow::Result<()> {
    let Some(name) = asked.filter(|name| *name != "system") else {
        return Ok(());
    };
    let probe = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    ft_protocol::connection::set_congestion(&probe, name)
        .map(|_| ())
        .map_err(|err| {
            let allowed =
                std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
                    .unwrap_or_default();
            anyhow::anyhow!(
                "--congestion {name:?}: {err} (the kernel allows: {}; `system` keeps its default)",
                allowed.trim()
            )
        })
}

/// The settings the command line gives, resolved; the library never sees clap.
fn config(cli: put_cli::Cli, token: Option<Token>) -> PutConfig {
    let congestion = match cli.congestion.as_deref() {
        None => Some("bbr".to_owned()),
        Some("system") => None,
        Some(name) => Some(name.to_owned()),
    };
    PutConfig {
        // clap has checked that SERVER was given.
        server: cli.server.unwrap_or_default(),
        locals: cli.locals,
        to: cli.to,
        recursive: cli.recursive,
        overwrite: cli.overwrite,
        retries: cli.retries,
        timeout: Duration::from_secs(cli.timeout),
        // At most 64, by the parser's range.
        connections: cli.connections.map(|n| n as usize),
        congestion,
        show: Show {
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
            human: false,
        },
        trust: TrustSettings {
            pin: cli.pin,
            strict: cli.strict,
            ca: cli.ca,
            known_servers: ft_client::trust::default_known_servers(),
            announce: !cli.quiet,
        },
        token,
    }
}
