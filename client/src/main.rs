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
        None => match token(&cli) {
            Ok(token) => ft_client::run(config(cli, token)),
            Err(err) => {
                eprintln!("ftget: {err:#}");
                Exit::Usage
            }
        },
    };
    exit.into()
}

/// The access token: the first line of `--token-file`, else FTGET_TOKEN.
/// Never an argument, where other users could read it.
fn token(cli: &cli::Cli) -> anyhow::Result<Option<Token>> {
    use anyhow::Context;
    use std::io::Read;
    if let Some(path) = &cli.token_file {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(4096).read_to_string(&mut text))
            .with_context(|| format!("--token-file {}", path.display()))?;
        let line = text.lines().next().unwrap_or_default().trim();
        anyhow::ensure!(
            !line.is_empty(),
            "--token-file {}: no token on its first line",
            path.display()
        );
        return Ok(Some(Token::new(line)));
    }
    Ok(std::env::var("FTGET_TOKEN")
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .map(Token::new))
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
