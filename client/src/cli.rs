//! Command-line options; their doc comments are the `--help` text, and the
//! man page and shell completions are generated from them. The connection
//! and retry settings can also come from the environment (`FTGET_*`); a
//! flag wins over its variable.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use clap_complete::Shell;

/// Download files and folders from an ftserve server, verified by SHA-256
/// and resumable, over TLS.
///
/// The first connection to a server records its key in
/// ~/.config/ft/known_servers; a later change of key is refused (exit 6).
///
/// A file is written under NAME.part (with NAME.part.json beside it when it
/// is over 4 MiB) and takes its final name only once its SHA-256 matches the
/// server's. Run the same command again after an interruption and it
/// continues where it stopped; with -r, files already present and verified
/// are left alone.
#[derive(Debug, Parser)]
#[command(name = "ftget", version, disable_help_flag = true)]
pub struct Cli {
    /// The server: host, host:port or [v6addr]:port (default port 7878).
    // This text is --help, not rustdoc: the brackets are literal, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(required = true)]
    pub server: Option<String>,

    /// Paths on the server, relative to the served folder. Folders need -r;
    /// with --list, the folder to list [default: the served folder].
    #[arg(value_name = "PATH", required_unless_present = "list")]
    pub paths: Vec<String>,

    /// Download folders whole, keeping their layout under the output folder.
    #[arg(short, long)]
    pub recursive: bool,

    /// List a folder instead of downloading: type, size, modification time,
    /// name. With -r, the whole tree.
    #[arg(short, long)]
    pub list: bool,

    /// With --list, sizes in human-readable units.
    #[arg(short = 'h', long)]
    pub human: bool,

    /// Output file, or folder to put the download in [default: the current
    /// folder]. With -r or several PATHs, always a folder (created if need
    /// be); each PATH lands in it under its own name.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Print a line for every file as it ends.
    #[arg(short, long)]
    pub verbose: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,

    /// Print JSON on stdout: one object per file (path, output, size, sha256,
    /// resumed_from, bytes_received, seconds, verified) and, for -r or several
    /// PATHs, a summary object last. With --list, one object per entry
    /// (name, type, size, mtime).
    #[arg(long)]
    pub json: bool,

    /// Start over, ignoring any partial download from an earlier run.
    #[arg(long, env = "FTGET_NO_RESUME")]
    pub no_resume: bool,

    /// Retries after a failed connection in a row, with exponential backoff.
    #[arg(long, value_name = "N", default_value_t = 3, env = "FTGET_RETRIES")]
    pub retries: u32,

    /// Seconds to wait for a connection, or for the server to say anything.
    #[arg(long, value_name = "SECS", default_value_t = 30, env = "FTGET_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// Connections used at once. One file comes over one connection, and
    /// over more, up to N, while each step up makes it faster (on long,
    /// lossy links) [default: 16]. With -r or several PATHs, N connections
    /// share the files, a large file taking those the others leave
    /// [default: 8].
    #[arg(long, value_name = "N", env = "FTGET_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections: Option<u64>,

    /// Accept only the server whose key has this fingerprint (as ftserve
    /// prints it at start: SHA256:...).
    #[arg(long, value_name = "SHA256:...", env = "FTGET_PIN")]
    pub pin: Option<ft_protocol::tls::Fingerprint>,

    /// Refuse a server that is not pinned, not in the known-servers file
    /// and has no certificate from a trusted CA, instead of recording it.
    #[arg(long, env = "FTGET_STRICT")]
    pub strict: bool,

    /// Also trust servers whose certificate chains to a CA in this PEM file.
    #[arg(long, value_name = "FILE", env = "FTGET_CA")]
    pub ca: Option<PathBuf>,

    /// Read the access token from the first line of FILE. The token can
    /// also come from FTGET_TOKEN; never give it on the command line.
    #[arg(long, value_name = "FILE", env = "FTGET_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Write the man page ftget.1 and completions for bash (ftget.bash), zsh
    /// (_ftget) and fish (ftget.fish) into DIR, then exit.
    #[arg(long, value_name = "DIR", exclusive = true)]
    pub generate: Option<PathBuf>,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
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

/// The access token: the first line of `--token-file`, else the variable
/// `var`. Never an argument, where other users could read it.
pub fn token(file: Option<&Path>, var: &str) -> anyhow::Result<Option<ft_protocol::Token>> {
    use std::io::Read;
    if let Some(path) = file {
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
        return Ok(Some(ft_protocol::Token::new(line)));
    }
    Ok(std::env::var(var)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .map(ft_protocol::Token::new))
}
