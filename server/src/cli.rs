//! Command-line options; their doc comments are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Serve a folder, read-only, to ftget clients.
///
/// Every regular file under ROOT can be downloaded; nothing outside it is ever
/// opened. Anyone who can reach the port can read the folder.
#[derive(Debug, Parser)]
#[command(name = "ftserve", version)]
pub struct Cli {
    /// The folder to serve.
    pub root: PathBuf,

    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7878")]
    pub listen: SocketAddr,

    /// Connections served at once; past it, new clients get a busy error.
    #[arg(long, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Close a connection that has been silent this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
}
