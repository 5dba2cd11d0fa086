//! Command-line options; their doc comments are the `--help` text.

use std::path::PathBuf;

use clap::Parser;

/// Download a file from an ftserve server, verified by SHA-256 and resumable.
///
/// The file is written under NAME.part (with NAME.part.json beside it) and takes
/// its final name only once its SHA-256 matches the server's. Run the same
/// command again after an interruption and it continues where it stopped.
#[derive(Debug, Parser)]
#[command(name = "ftget", version)]
pub struct Cli {
    /// The server: host, host:port or [v6addr]:port (default port 7878).
    // This text is --help, not rustdoc: the brackets are literal, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    pub server: String,

    /// Path of the file on the server, relative to the served folder.
    pub path: String,

    /// Output file, or an existing folder to put it in [default: the file's
    /// name in the current folder].
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,

    /// Print one JSON object per file on stdout: path, output, size, sha256,
    /// resumed_from, bytes_received, seconds, verified.
    #[arg(long)]
    pub json: bool,

    /// Start over, ignoring any partial download from an earlier run.
    #[arg(long)]
    pub no_resume: bool,

    /// Retries after a failed connection in a row, with exponential backoff.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// Seconds to wait for a connection, or for the server to say anything.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}
