//! Command-line options; their doc comments are the `--help` text, and the
//! man page and shell completions are generated from them. Every option can
//! also come from the environment (`FTSERVE_*`); a flag wins over its
//! variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use clap_complete::Shell;

/// Serve a folder, read-only, to ftget clients.
///
/// Every regular file under ROOT can be downloaded, and its folders listed;
/// nothing outside it is ever opened. ft has no authentication and no
/// encryption: anyone who can reach the port can read the folder.
#[derive(Debug, Parser)]
#[command(name = "ftserve", version)]
pub struct Cli {
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
