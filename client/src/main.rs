//! `ftget SERVER PATH...`: the thin edge around the ft-client library:
//! arguments to a `Config`, run, exit code.

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use ft_client::{Config, Exit, Show};

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
        None => ft_client::run(config(cli)),
    };
    exit.into()
}

/// The settings the command line gives, resolved; the library never sees clap.
fn config(cli: cli::Cli) -> Config {
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
        connections: cli.connections as usize,
        show: Show {
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
            human: cli.human,
        },
    }
}
