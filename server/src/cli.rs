//! Command-line options; their doc comments are the `--help` text, and the
//! man page and shell completions are generated from them. Every option can
//! also come from the environment (`FTSERVE_*`); a flag wins over its
//! variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// Serve a folder, read-only, to ftget clients, over TLS 1.3.
///
/// Every regular file under ROOT can be downloaded, and its folders listed;
/// nothing outside it is ever opened. Every connection is encrypted, and
/// the server proves its identity with a key kept in the state folder
/// (made on first start). Without --token-file, anyone who can reach the
/// port can read the folder; with it, only holders of a token can, each
/// within the folder its token allows.
#[derive(Debug, Parser)]
#[command(
    name = "ftserve",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Manage access tokens instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The folder to serve.
    #[arg(env = "FTSERVE_ROOT", required = true)]
    pub root: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:7878",
        env = "FTSERVE_LISTEN"
    )]
    pub listen: SocketAddr,

    /// Connections served at once; past it, new clients get a busy error.
    #[arg(long, value_name = "N", default_value_t = 512, env = "FTSERVE_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Close a connection that has been silent this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, env = "FTSERVE_IDLE_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,

    /// Folder that keeps the server's identity (key.pem, mode 0600, and
    /// cert.pem), made on first start [default: $XDG_STATE_HOME/ftserve,
    /// else ~/.local/state/ftserve].
    #[arg(long, value_name = "DIR", env = "FTSERVE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Serve with this PEM certificate chain (e.g. one from a CA) instead of
    /// the state folder's. Needs --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "FTSERVE_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert; only its owner may read it.
    #[arg(
        long,
        value_name = "FILE",
        env = "FTSERVE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Let in only clients with a token from FILE (see `ftserve token add`);
    /// the file is read again whenever it changes.
    #[arg(long, value_name = "FILE", env = "FTSERVE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// TCP congestion control to send with, e.g. bbr or cubic; `system`
    /// keeps the system's default [default: bbr where the kernel offers it,
    /// else the system's].
    #[arg(long, value_name = "NAME", env = "FTSERVE_CONGESTION")]
    pub congestion: Option<String>,

    /// Log format on stderr. Filter with RUST_LOG (default `info`); colour
    /// only on a terminal, never when NO_COLOR is set.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "human",
        env = "FTSERVE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Write the man page ftserve.1 and completions for bash (ftserve.bash),
    /// zsh (_ftserve) and fish (ftserve.fish) into DIR, then exit.
    #[arg(long, value_name = "DIR", exclusive = true)]
    pub generate: Option<PathBuf>,
}

/// What ftserve does other than serve.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the token file: add, list or remove access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// The token file's commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new token, add its hash to the file (made, mode 0600, if
    /// need be) and print the token once, alone on the last line.
    Add {
        /// Who the token is for; logs name it. A-Z a-z 0-9 . _ - @
        name: String,
        /// The token file.
        #[arg(long, value_name = "FILE", env = "FTSERVE_TOKEN_FILE")]
        token_file: PathBuf,
        /// Limit the token to this folder and what is below it.
        #[arg(long, value_name = "PREFIX")]
        path: Option<String>,
    },
    /// List the tokens' names and the folders they are limited to.
    List {
        /// The token file.
        #[arg(long, value_name = "FILE", env = "FTSERVE_TOKEN_FILE")]
        token_file: PathBuf,
    },
    /// Remove a token: clients holding it are refused from their next
    /// connection on.
    Remove {
        /// The token's name.
        name: String,
        /// The token file.
        #[arg(long, value_name = "FILE", env = "FTSERVE_TOKEN_FILE")]
        token_file: PathBuf,
    },
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// Writes the man page and the bash, zsh and fish completions for `command`
/// into `dir`, and prints their paths.
pub fn generate(mut command: clap::Command, dir: &Path) -> anyhow::Result<()> {
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
