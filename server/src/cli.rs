//! Command-line options; their doc comments are the `--help` text, and the
//! man page and shell completions are generated from them. Every option can
//! also come from the environment (`FTSERVE_*`); a flag wins over its
//! variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// Serve a folder to ftget clients, and take uploads from ftput, over TLS 1.3.
///
/// Every regular file under ROOT can be downloaded, and its folders listed;
/// nothing outside it is ever opened. Every connection is encrypted, and
/// the server proves its identity with a key kept in the state folder
/// (made on first start). Without --token-file, anyone who can reach the
/// port can read the folder; with it, only holders of a token can, each
/// within the folder its token allows. The folder is read-only unless
/// --allow-upload is given, and then only tokens made with --write may
/// upload.
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

    /// The folder to serve, or s3://BUCKET[/PREFIX] to serve a bucket of an
    /// S3-compatible store, read-only (credentials from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; never from arguments).
    #[arg(env = "FTSERVE_ROOT", required = true)]
    pub root: Option<PathBuf>,

    /// The S3 endpoint of the bucket's store (path-style requests); give it
    /// once per node of the store, and ftserve moves to the next when one
    /// stops answering [default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL,
    /// else AWS S3 itself].
    #[arg(
        long,
        value_name = "URL",
        env = "FTSERVE_S3_ENDPOINT",
        value_delimiter = ','
    )]
    pub s3_endpoint: Vec<url::Url>,

    /// The region S3 requests are signed for [default: AWS_REGION or
    /// AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, value_name = "REGION", env = "FTSERVE_S3_REGION")]
    pub s3_region: Option<String>,

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

    /// Take uploads (ftput) from tokens made with --write, within their
    /// folders. Needs --token-file. Partial uploads live in
    /// ROOT/.ftserve-partial, which is never listed or served.
    #[arg(long, env = "FTSERVE_ALLOW_UPLOAD", requires = "token_file")]
    pub allow_upload: bool,

    /// Refuse uploads larger than SIZE (bytes, or with K, M, G or T:
    /// binary units) [default: no limit but the free space].
    #[arg(long, value_name = "SIZE", env = "FTSERVE_MAX_UPLOAD_SIZE", value_parser = parse_size)]
    pub max_upload_size: Option<u64>,

    /// Remove partial uploads untouched for this long (seconds, or with
    /// s, m, h or d).
    #[arg(long, value_name = "DURATION", default_value = "1d", env = "FTSERVE_UPLOAD_TTL",
          value_parser = parse_duration)]
    pub upload_ttl: std::time::Duration,

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
        /// Let the token also upload new files (where the server runs with
        /// --allow-upload), within its folder.
        #[arg(long)]
        write: bool,
        /// Let the token also replace existing files when the client asks
        /// (ftput --overwrite); implies --write.
        #[arg(long)]
        overwrite: bool,
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

/// What ROOT names: a folder, or a bucket (`s3://BUCKET[/PREFIX]`) with
/// the store's endpoints, region and credentials from the options and the
/// usual AWS variables.
pub fn root(cli: &Cli) -> anyhow::Result<ft_server::Root> {
    use ft_server::bucket::{s3, Settings};
    let root = cli.root.clone().context("no ROOT given")?;
    let Some(rest) = root.to_str().and_then(|text| text.strip_prefix("s3://")) else {
        return Ok(ft_server::Root::Folder(root));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if !valid {
        anyhow::bail!(
            "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.' and '-'): \
             give s3://BUCKET[/PREFIX]"
        );
    }
    let prefix = ft_protocol::RemotePath::parse(prefix)
        .with_context(|| format!("{prefix:?} is not a prefix to serve"))?;
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let region = cli
        .s3_region
        .clone()
        .or_else(|| var("AWS_REGION"))
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let mut endpoints = cli.s3_endpoint.clone();
    if endpoints.is_empty() {
        if let Some(url) = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")) {
            endpoints.push(
                url.parse()
                    .with_context(|| format!("AWS_ENDPOINT_URL {url:?} is not a URL"))?,
            );
        }
    }
    let path_style = !endpoints.is_empty();
    if endpoints.is_empty() {
        let aws = format!("https://s3.{region}.amazonaws.com");
        endpoints.push(
            aws.parse()
                .with_context(|| format!("{region:?} is not a region"))?,
        );
    }
    let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
        anyhow::bail!(
            "serving a bucket needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
    };
    let credentials = match var("AWS_SESSION_TOKEN") {
        Some(token) => rusty_s3::Credentials::new_with_token(key, secret, token),
        None => rusty_s3::Credentials::new(key, secret),
    };
    Ok(ft_server::Root::Bucket(Settings {
        bucket: bucket.to_owned(),
        prefix,
        store: s3::Store {
            endpoints,
            region,
            credentials,
            path_style,
        },
    }))
}

/// A size in bytes, with an optional binary unit: `10G` is 10 GiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_unit(text);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        "T" | "TIB" => 40,
        _ => return Err(format!("unknown unit {unit:?}: use K, M, G or T")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{text:?} is not a size in bytes"))
}

/// A duration: seconds, or a number with s, m, h or d.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = split_unit(text);
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|secs| *secs > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

fn split_unit(text: &str) -> (&str, &str) {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(digits)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1X").is_err() && parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1d"),
            Ok(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_duration("2h"),
            Ok(std::time::Duration::from_secs(7200))
        );
        assert!(parse_duration("0s").is_err() && parse_duration("5w").is_err());
    }
}
