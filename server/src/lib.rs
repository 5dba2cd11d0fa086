//! ftserve: serves one folder, read-only, over the ft protocol.
//!
//! [`Server::open`] opens the folder; [`Server::run`] serves a bound listener
//! until the shutdown future completes, then drains. Tests and the binary
//! drive it the same way.

mod files;
mod handler;
mod listener;
mod listing;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

/// How long transfers in flight may go on after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The server's settings, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// The folder to serve.
    pub root: PathBuf,
    /// Connections served at once; more get the busy error.
    pub max_connections: usize,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// How long transfers in flight may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How often a connection busy with a request (hashing a cold file) and
    /// otherwise silent sends a keep-alive: [`ft_protocol::KEEPALIVE`].
    pub keepalive: Duration,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The folder to serve cannot be opened.
    #[error("cannot serve {}", path.display())]
    Root {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A folder ready to be served.
pub struct Server {
    config: Config,
    context: Arc<handler::Context>,
}

impl Server {
    /// Opens the folder named in `config`.
    pub fn open(config: Config) -> Result<Self, ServerError> {
        let files = files::Files::open_root(&config.root).map_err(|source| ServerError::Root {
            path: config.root.clone(),
            source,
        })?;
        let context = Arc::new(handler::Context {
            files,
            idle_timeout: config.idle_timeout,
            keepalive: config.keepalive,
        });
        Ok(Self { config, context })
    }

    /// Serves `listener` until `shutdown` completes, then stops accepting and
    /// gives transfers in flight up to the configured grace to finish.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        listener::run(listener, &self.config, self.context, shutdown).await;
    }
}
