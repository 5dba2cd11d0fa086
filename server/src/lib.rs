//! ftserve: serves one folder, or a bucket of an object store, over the ft
//! protocol, inside TLS: read-only, or (a folder) taking uploads from tokens
//! that may write.
//!
//! [`Server::open`] opens the folder or the bucket (and the token file, if
//! any);
//! [`Server::run`] serves a bound listener until the shutdown future
//! completes, then drains. Tests and the binary drive it the same way.
//! [`identity`] gives the key and certificate it serves with, [`tokens`]
//! the access tokens.
//!
//! The roles, from the socket inwards; each module uses only those below it
//! in this table, and nothing above it:
//!
//! | module | role |
//! |---|---|
//! | `listener` | accept, the connection limit, the TLS handshake, the busy refusal, drain on shutdown |
//! | `handler` | one connection: the handshake and its token, then requests in order |
//! | `ops` | one module per request (`stat`, `checkpoints`, `get`, `list`, `put`), what they share in `shared` |
//! | `upload` | uploads: partials out of the namespace, their re-check on resume, the chain check, the landing; `place`, every write beneath the root without following a link |
//! | `relay` | blocking work beside a connection: produce on a thread, send with keep-alives |
//! | `local` | the local folder as a backend: `files` (the root jail, reads, versions), `listing` (walks) |
//! | `bucket` | a bucket of an S3-compatible store as a backend: reads pinned to an ETag, listings, digests kept in the bucket (`stored`); `s3`, the requests, over several endpoints |
//! | `store` | files with their digests: `hashing` (the shared, bounded passes over cold files, on the threads of `workers`) and `cache` (what they leave) |
//! | `backend` | the narrow interface to where files live (open, stat, read a range, list, the digests a backend keeps beside a file) |
//! | `tokens` | the token file, the check of a token, what a token may reach |
//! | `identity` | the key and certificate (used by the binary, before any of the above) |
//!
//! Every bound is a field of [`Limits`].

mod backend;
pub mod bucket;
mod cache;
mod handler;
mod hashing;
pub mod identity;
mod limits;
mod listener;
mod local;
mod ops;
mod relay;
mod store;
pub mod tokens;
mod upload;
mod workers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use limits::Limits;
pub use upload::Settings as UploadSettings;

/// What a server serves.
#[derive(Debug, Clone)]
pub enum Root {
    /// A local folder.
    Folder(PathBuf),
    /// A bucket, or a prefix of one, of an S3-compatible store (read-only).
    Bucket(bucket::Settings),
}

/// The server's settings, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to serve.
    pub root: Root,
    /// Every bound the server keeps.
    pub limits: Limits,
    /// The TLS it serves with (see [`identity::Identity::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// The token file; without one, anyone who reaches the port may read.
    pub token_file: Option<PathBuf>,
    /// The congestion control every connection sends with; `None` leaves
    /// the kernel's choice (the system's, or the route's).
    pub congestion: Option<String>,
    /// Take uploads, with these settings (`--allow-upload`); only from
    /// tokens that may write.
    pub uploads: Option<UploadSettings>,
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
    /// The token file cannot be used.
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    /// Uploads were asked for, but the folder cannot take them.
    #[error("cannot take uploads into {}: cannot make its partials' folder", path.display())]
    Uploads {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Uploads were asked for without a token file: anonymous writes never
    /// happen.
    #[error("--allow-upload needs --token-file: only tokens made with --write may upload")]
    UploadsNeedTokens,
    /// Uploads were asked for into a bucket, which is served read-only.
    #[error("--allow-upload takes uploads into a folder; a bucket is served read-only")]
    UploadsToBucket,
    /// The bucket cannot be served.
    #[error(transparent)]
    Bucket(#[from] bucket::BucketError),
}

/// A folder or a bucket ready to be served.
pub struct Server {
    served: Served,
    tls: Arc<rustls::ServerConfig>,
    congestion: Option<String>,
}

/// The connections' shared context, by backend.
enum Served {
    Folder(Arc<ops::Context<local::LocalFiles>>),
    Bucket(Arc<ops::Context<bucket::BucketFiles>>),
}

impl Server {
    /// Opens the folder or bucket named in `config`; a bucket is asked once,
    /// now, so that wrong credentials stop the server here.
    pub async fn open(config: Config) -> Result<Self, ServerError> {
        if matches!(config.root, Root::Bucket(_)) && config.uploads.is_some() {
            return Err(ServerError::UploadsToBucket);
        }
        let gate = config
            .token_file
            .as_deref()
            .map(tokens::Gate::open)
            .transpose()?;
        let served = match config.root {
            Root::Bucket(settings) => Served::Bucket(Arc::new(ops::Context {
                store: store::Store::new(
                    bucket::BucketFiles::open(settings).await?,
                    &config.limits,
                ),
                limits: config.limits,
                gate,
                uploads: None,
            })),
            Root::Folder(root) => {
                let files =
                    local::LocalFiles::open_root(&root).map_err(|source| ServerError::Root {
                        path: root.clone(),
                        source,
                    })?;
                let uploads = match config.uploads {
                    None => None,
                    Some(_) if gate.is_none() => return Err(ServerError::UploadsNeedTokens),
                    Some(settings) => {
                        Some(upload::Uploads::open(&root, settings).map_err(|source| {
                            ServerError::Uploads {
                                path: root.clone(),
                                source,
                            }
                        })?)
                    }
                };
                Served::Folder(Arc::new(ops::Context {
                    store: store::Store::new(files, &config.limits),
                    limits: config.limits,
                    gate,
                    uploads,
                }))
            }
        };
        Ok(Self {
            served,
            tls: config.tls,
            congestion: config.congestion,
        })
    }

    /// Serves `listener` until `shutdown` completes, then stops accepting and
    /// gives transfers in flight up to the configured grace to finish.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let settings = (self.tls, self.congestion);
        match self.served {
            Served::Folder(context) => {
                let _sweeper = context
                    .uploads
                    .is_some()
                    .then(|| tokio::spawn(sweep(Arc::clone(&context))))
                    .map(tokio_util::task::AbortOnDropHandle::new);
                listener::run(listener, settings, context, shutdown).await;
            }
            Served::Bucket(context) => listener::run(listener, settings, context, shutdown).await,
        }
    }
}

/// Removes partial uploads no one has touched for the TTL: at start, then
/// every half TTL (every 10 minutes at most, every second at least).
async fn sweep(context: Arc<ops::Context<local::LocalFiles>>) {
    let Some(uploads) = context.uploads.as_ref() else {
        return;
    };
    let every = (uploads.settings().ttl / 2).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
    );
    loop {
        let swept = Arc::clone(&context);
        let removed = tokio::task::spawn_blocking(move || {
            swept
                .uploads
                .as_ref()
                .map_or(0, |uploads| uploads.sweep(std::time::SystemTime::now()))
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "removed partial uploads untouched for the TTL");
        }
        tokio::time::sleep(every).await;
    }
}
