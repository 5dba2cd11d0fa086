//! `ftget SERVER PATH...`: the thin edge around the ft-client library:
//! arguments to a `Config`, run, exit code.

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use ft_client::trust::TrustSettings;
use ft_client::{Config, Exit, Show};
use ft_protocol::Token;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let command = cli::Cli::command().version(version);
    let matches = command.clone().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let exit = match &cli.generate {
        Some(dir) => match cli::generate(command, dir) {
            Ok(()) => Exit::Success,
            Err(err) => {
                eprintln!("ftget: {err:#}");
                Exit::Failure
            }
        },
        None => match cli::token(cli.token_file.as_deref(), "FTGET_TOKEN") {
            Ok(token) => ft_client::run(config(cli, token)),
            Err(err) => {
                eprintln!("ftget: {err:#}");
                Exit::Usage
            }
        },
    };
    exit.into()
}

/// The settings the command line gives, resolved; the library never sees clap.
fn config(cli: cli::Cli, token: Option<Token>) -> Config {
    Config {
        // clap has checked that SERVER was given.
        server: cli.server.unwrap_or_default(),
        paths: cli.paths,
        output: cli.output,
        recursive: cli.recursive,
        list: cli.list,
        resume: !cli.no_resume,
        retries: cli.retries,
        timeout: Duration::from_secs(cli.timeout),
        // At most 64, by the parser's range.
        connections: cli.connections.map(|n| n as usize),
        show: Show {
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
            human: cli.human,
        },
        trust: TrustSettings {
            pin: cli.pin,
            strict: cli.strict,
            ca: cli.ca,
            known_servers: ft_client::trust::default_known_servers(),
            // -q: nothing but errors, as ssh -q leaves out "Permanently added".
            announce: !cli.quiet,
        },
        token,
    }
}
