//! ftput's command-line options; their doc comments are the `--help`
//! text, and the man page and shell completions are generated from them.
//! The connection, retry and trust settings can also come from the
//! environment (`FTPUT_*`); a flag wins over its variable.

use std::path::PathBuf;

use clap::Parser;

/// Upload files and folders to an ftserve server that takes uploads,
/// verified by SHA-256 and resumable, over TLS.
///
/// The server checks every 4 MiB chunk as it lands and the whole file's
/// SHA-256 before the file takes its name; until then it keeps the upload
/// out of sight, and a file already there is never replaced without
/// --overwrite. Run the same command again after an interruption and it
/// continues from what the server holds, verified; a local file that
/// changed meanwhile starts over.
///
/// The first connection to a server records its key in
/// ~/.config/ft/known_servers (shared with ftget); a later change of key is
/// refused (exit 6).
#[derive(Debug, Parser)]
#[command(name = "ftput", version)]
pub struct Cli {
    /// The server: host, host:port or [v6addr]:port (default port 7878).
    // This text is --help, not rustdoc: the brackets are literal, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(required = true)]
    pub server: Option<String>,

    /// Local files to upload, or with -r folders (each lands under its own
    /// name).
    #[arg(value_name = "LOCAL", required = true)]
    pub locals: Vec<PathBuf>,

    /// The folder on the server to upload into [default: the served folder].
    #[arg(long, value_name = "REMOTE_DIR")]
    pub to: Option<String>,

    /// Upload folders whole, keeping their layout under their own names.
    /// Links and special files inside them are left out.
    #[arg(short, long)]
    pub recursive: bool,

    /// Replace files already on the server (the token must allow it).
    #[arg(long)]
    pub overwrite: bool,

    /// Print a line for every file as it ends.
    #[arg(short, long)]
    pub verbose: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,

    /// Print JSON on stdout: one object per file (path, remote, size,
    /// sha256, resumed_from, bytes_sent, seconds, verified) and, for -r or
    /// several LOCALs, a summary object last.
    #[arg(long)]
    pub json: bool,

    /// Retries after a failed connection in a row, with exponential backoff.
    #[arg(long, value_name = "N", default_value_t = 3, env = "FTPUT_RETRIES")]
    pub retries: u32,

    /// Seconds to wait for a connection, or for the server to say anything.
    #[arg(long, value_name = "SECS", default_value_t = 30, env = "FTPUT_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// Connections used at once. One file goes over one connection, and
    /// over more, up to N, while each step up makes it faster [default:
    /// 16]. With -r or several LOCALs, N connections share the files
    /// [default: 8].
    #[arg(long, value_name = "N", env = "FTPUT_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections: Option<u64>,

    /// TCP congestion control to send with, e.g. bbr or cubic; `system`
    /// keeps the system's [default: bbr where the kernel lets it be chosen].
    #[arg(long, value_name = "NAME", env = "FTPUT_CONGESTION")]
    pub congestion: Option<String>,

    /// Accept only the server whose key has this fingerprint (as ftserve
    /// prints it at start: SHA256:...).
    #[arg(long, value_name = "SHA256:...", env = "FTPUT_PIN")]
    pub pin: Option<ft_protocol::tls::Fingerprint>,

    /// Refuse a server that is not pinned, not in the known-servers file
    /// and has no certificate from a trusted CA, instead of recording it.
    #[arg(long, env = "FTPUT_STRICT")]
    pub strict: bool,

    /// Also trust servers whose certificate chains to a CA in this PEM file.
    #[arg(long, value_name = "FILE", env = "FTPUT_CA")]
    pub ca: Option<PathBuf>,

    /// Read the access token from the first line of FILE. The token can
    /// also come from FTPUT_TOKEN; never give it on the command line.
    #[arg(long, value_name = "FILE", env = "FTPUT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Write the man page ftput.1 and completions for bash (ftput.bash), zsh
    /// (_ftput) and fish (ftput.fish) into DIR, then exit.
    #[arg(long, value_name = "DIR", exclusive = true)]
    pub generate: Option<PathBuf>,
}
