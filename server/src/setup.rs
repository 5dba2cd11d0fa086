//! The process around the server: log output, the open-file limit, the
//! shutdown signals, the congestion control its sockets send with, and the
//! warning an exposed address deserves.

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::Context;

use crate::cli::LogFormat;
use crate::printable::{PrintableFields, PrintableWriter};

/// Human lines or JSON lines on stderr, filtered by RUST_LOG (default
/// `info`), every string in them made printable (see `printable`). Colour
/// only on a terminal; there, tracing-subscriber leaves it off when NO_COLOR
/// is set.
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    let logs = if std::io::stderr().is_terminal() {
        logs
    } else {
        logs.with_ansi(false)
    };
    match format {
        LogFormat::Human => logs
            .fmt_fields(PrintableFields::default())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => logs
            .json()
            .with_ansi(false)
            .with_writer(PrintableWriter(std::io::stderr))
            .init(),
    }
}

/// The congestion control ftserve prefers: it reads random loss as loss,
/// not as congestion (BENCHMARKS.md has the measurements).
pub const PREFERRED_CONGESTION: &str = "bbr";

/// Where the kernel lists the algorithms any process may choose.
const ALLOWED_CONGESTION: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

/// Sets the congestion control of `listener`, which its connections
/// inherit, and says which one they send with. Asked for by name, it must
/// be available; by default [`PREFERRED_CONGESTION`] is tried and, where
/// the kernel does not offer it, the system's default stays, quietly.
pub fn congestion(
    listener: &impl std::os::fd::AsFd,
    asked: Option<&str>,
) -> anyhow::Result<String> {
    use ft_protocol::connection::{congestion, set_congestion};
    let system = || congestion(listener).context("cannot read the socket's congestion control");
    match asked {
        Some("system") => system(),
        Some(name) => set_congestion(listener, name).with_context(|| {
            let allowed = std::fs::read_to_string(ALLOWED_CONGESTION).unwrap_or_default();
            format!(
                "cannot send with congestion control {name:?} (the kernel allows: {}; \
                 `system` keeps its default)",
                allowed.trim()
            )
        }),
        None => set_congestion(listener, PREFERRED_CONGESTION).or_else(|_| system()),
    }
}

/// Raises the soft limit on open files to the hard one: every connection is
/// a descriptor, and the usual soft default (1,024) is below
/// `--max-connections`' default of 512 plus their open files.
pub fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {err}");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!("cannot read the open-file limit: {err}"),
    }
}

/// A warning when `addr` can be reached from other machines and no token
/// file guards it: the folder is open to all of them.
pub fn exposure_warning(addr: SocketAddr, tokens: bool) -> Option<String> {
    (!addr.ip().is_loopback() && !tokens).then(|| {
        format!(
            "{addr} is not a loopback address: anyone who can reach this port can read the folder \
             (give --token-file to let in only token holders)"
        )
    })
}

/// How a client names this server: the address listened on, or this
/// machine's host name where that is every address.
pub fn reachable_as(addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "HOST".into());
    format!("{host}:{}", addr.port())
}

/// Installs the SIGINT and SIGTERM handlers now, so that a signal arriving
/// any time after start-up (even right after the `listening on` line) asks
/// for a clean shutdown; the future completes on the first of them.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown requested");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listening_goes_unwarned() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("an address");
        assert!(exposure_warning(addr("127.0.0.1:7878"), false).is_none());
        assert!(exposure_warning(addr("[::1]:7878"), false).is_none());
        for open in ["0.0.0.0:7878", "[::]:7878", "192.168.1.5:7878"] {
            let warning = exposure_warning(addr(open), false).unwrap_or_default();
            assert!(
                warning.contains("anyone who can reach"),
                "{open}: {warning}"
            );
            assert!(exposure_warning(addr(open), true).is_none(), "{open}");
        }
    }
}
