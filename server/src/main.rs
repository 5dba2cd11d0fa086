//! `ftserve ROOT`: the thin edge around the ft-server library: arguments to
//! a `Config`, the identity, the listener and the signals, the banner, the
//! exit code; and `ftserve token`, which manages the token file.

mod cli;
mod printable;
mod setup;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use ft_server::{Config, Limits, Server};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let version = ft_protocol::version_text(env!("CARGO_PKG_VERSION"));
    let command = cli::Cli::command().version(version);
    let matches = command.clone().get_matches();
    let mut cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let result = match (&cli.generate, cli.command.take()) {
        (Some(dir), _) => cli::generate(command, dir),
        (None, Some(cli::Command::Token(action))) => tokens(action),
        (None, None) => {
            setup::init_logs(cli.log_format);
            setup::raise_file_limit();
            run(cli)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ftserve: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ftserve token add|list|remove`.
fn tokens(action: cli::TokenCommand) -> anyhow::Result<()> {
    use ft_server::tokens;
    let mut stdout = std::io::stdout().lock();
    match action {
        cli::TokenCommand::Add {
            name,
            token_file,
            path,
            write,
            overwrite,
        } => {
            let access = match (write, overwrite) {
                (_, true) => tokens::Access::Overwrite,
                (true, false) => tokens::Access::Write,
                (false, false) => tokens::Access::Read,
            };
            let token = tokens::add(&token_file, &name, path.as_deref(), access)?;
            let limit = match path {
                Some(path) => format!(", limited to {}", path.trim_end_matches('/')),
                None => String::new(),
            };
            let may = match access.word() {
                Some(word) => format!(" ({word})"),
                None => " (read-only)".to_owned(),
            };
            writeln!(
                stdout,
                "ftserve: added token {name}{may}{limit} to {}; it is shown this once:",
                token_file.display()
            )?;
            writeln!(stdout, "{}", token.expose())?;
        }
        cli::TokenCommand::List { token_file } => {
            for entry in tokens::Tokens::read(&token_file)?.entries() {
                let may = entry.access.word().unwrap_or("read");
                match &entry.scope {
                    Some(scope) => writeln!(stdout, "{}\t{may}\t{scope}/", entry.name)?,
                    None => writeln!(stdout, "{}\t{may}\t(everything)", entry.name)?,
                }
            }
        }
        cli::TokenCommand::Remove { name, token_file } => {
            tokens::remove(&token_file, &name)?;
            writeln!(stdout, "ftserve: removed token {name}")?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// The key and certificate to serve with: the given PEM files, or the state
/// folder's (made there on first start).
fn identity(cli: &cli::Cli) -> anyhow::Result<ft_server::identity::Identity> {
    use ft_server::identity::{default_state_dir, Identity};
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        return Ok(Identity::from_pem_files(cert, key)?);
    }
    let dir =
        cli.state_dir.clone().or_else(default_state_dir).context(
            "no state folder for the server's key: set HOME, XDG_STATE_HOME or --state-dir",
        )?;
    Identity::in_state_dir(&dir)
        .with_context(|| format!("cannot keep the server's identity in {}", dir.display()))
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // clap has checked that ROOT was given, on the command line or in the environment.
    let root = cli::root(&cli)?;
    let shown = match &root {
        ft_server::Root::Folder(path) => path.display().to_string(),
        ft_server::Root::Bucket(bucket) => match bucket.prefix.is_root() {
            true => format!("s3://{}", bucket.bucket),
            false => format!("s3://{}/{}", bucket.bucket, bucket.prefix),
        },
    };
    let identity = identity(&cli)?;
    let config = Config {
        root,
        limits: Limits {
            max_connections: cli.max_connections as usize,
            idle_timeout: Duration::from_secs(cli.idle_timeout),
            ..Limits::default()
        },
        tls: identity.server_config()?,
        token_file: cli.token_file.clone(),
        congestion: None,
        uploads: cli.allow_upload.then_some(ft_server::UploadSettings {
            max_size: cli.max_upload_size,
            ttl: cli.upload_ttl,
        }),
    };
    let blocking_shutdown = config.limits.blocking_shutdown;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let congestion = setup::congestion(&listener, cli.congestion.as_deref())?;
        tracing::info!(congestion, "sending with congestion control {congestion}");
        // What ftserve chose, every connection gets; the system's own
        // choice stays the kernel's to make, route by route.
        let chosen = match cli.congestion.as_deref() {
            Some("system") => None,
            Some(_) => Some(congestion.clone()),
            None => (congestion == setup::PREFERRED_CONGESTION).then(|| congestion.clone()),
        };
        let server = Server::open(Config {
            congestion: chosen,
            ..config
        })
        .await?;
        let shutdown = setup::shutdown_signal()?;
        // Past a file-size limit (RLIMIT_FSIZE) the kernel sends SIGXFSZ,
        // which kills at once; with a handler installed, the write fails
        // with EFBIG instead, and the upload ends with a clean `NoSpace`.
        let _file_size_signal =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ));
        let mut stdout = std::io::stdout();
        let access = match (cli.allow_upload, cli.token_file.is_some()) {
            (true, _) => "to token holders, uploads from tokens that may write",
            (false, true) => "read-only to token holders",
            (false, false) => "read-only to anyone",
        };
        writeln!(
            stdout,
            "ftserve: serving {shown} {access}, at most {} connections, idle timeout {} s, \
             congestion control {congestion}, fingerprint {}, listening on {addr}",
            cli.max_connections, cli.idle_timeout, identity.fingerprint,
        )
        .and_then(|()| {
            writeln!(
                stdout,
                "ftserve: clients can pin this server with: ftget --pin {} {} PATH{}",
                identity.fingerprint,
                setup::reachable_as(addr),
                if cli.allow_upload {
                    " (and ftput --pin, the same)"
                } else {
                    ""
                }
            )
        })
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
        if let Some(warning) = setup::exposure_warning(addr, cli.token_file.is_some()) {
            eprintln!("ftserve: warning: {warning}");
        }
        server.run(listener, shutdown).await;
        Ok(())
    });
    runtime.shutdown_timeout(blocking_shutdown);
    result
}
