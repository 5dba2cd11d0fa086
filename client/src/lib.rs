//! ftget: downloads files from an ftserve server, verifies them chunk by
//! chunk and as a whole, and resumes where an earlier run stopped; and
//! ftput ([`run_put`]), which uploads to one that takes uploads, with the
//! same guarantees the other way.
//!
//! [`run`] takes a plain [`Config`] and does what it says. The crate is
//! built in layers, with no import cycle: each layer uses the one under it,
//! the session (every mode holds connections and retries the same way) and
//! the foundation, and nothing above it.
//!
//! | layer | modules | job |
//! |---|---|---|
//! | top | `app`, `config`, `output` | settings to a mode, Ctrl-C, exit codes; what is printed, human and JSON |
//! | batch | `batch` (`outcome`, `plan`, `pool`, `present`, `small`, `offload`) | many files: what a job is and how it ends, plan, connection pool, up-to-date check, pipelining, blocking work for a batch |
//! | transfer, listing, upload | `transfer` (`partial`, `sink`, `swarm`), `listing`, `put` (`send`, `many`) | one file: resume decision, `Get`, the sink, ranges over several connections; a `List`; ftput's uploads, one file or many |
//! | session | `session`, `trust` | the connection (TLS, then the hello), one-reply requests, the retry policy; whom to trust as the server |
//! | foundation | `verify` (`engine`), `folder`, `progress`, `printable`, `error`, `exit`, `addr` | the verification engine, the output folder (every write beneath it, never through a link), the bar, text made safe to print, typed errors, exit codes, SERVER arguments |
//!
//! The protocol's rules (handshake, the order of a `Get` or `List` reply)
//! are not here: they are `ft_protocol`'s, fed with the frames.

mod addr;
mod app;
mod batch;
mod config;
mod error;
pub mod exit;
mod folder;
mod listing;
mod output;
mod printable;
mod progress;
mod put;
mod session;
mod transfer;
pub mod trust;
mod verify;

pub use app::run;
pub use batch::{Batch, Done, FailureReport, FileOutcome, Summary, MAX_ENTRIES};
pub use config::{resolve, server, Config, Mode};
pub use error::{Chain, ConnectError, Error, ServerError, UsageError};
pub use exit::Exit;
pub use folder::{Folder, Kind, Obstacle, Output};
pub use listing::{list, Listed};
pub use output::Show;
pub use progress::Progress;
pub use put::{run_put, PutConfig, PutReport, PutSummary};
pub use session::Server;
#[doc(hidden)]
pub use transfer::SinkError;
pub use transfer::{download, Job, Policy, Report, Target};

/// For `benches/sink.rs` only: runs an honest server's `responses` for a file
/// of `size` bytes through the download sink into `file`, with `hashers`
/// hashing threads, and returns the verified digest, or why there is none.
#[doc(hidden)]
pub fn bench_sink(
    file: std::fs::File,
    size: u64,
    responses: Vec<ft_protocol::Response>,
    hashers: usize,
) -> Result<ft_protocol::Digest, transfer::SinkError> {
    let meta = ft_protocol::FileMeta {
        size,
        mtime_secs: 0,
        mtime_nanos: 0,
        sha256: None,
    };
    let tracker = progress::Progress::new("bench", false).tracker();
    let sink = transfer::Sink::new(file, verify::Verified::start(), &meta, tracker)
        .ok_or(transfer::SinkError::Incomplete)?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let feeder = std::thread::spawn(move || {
        for response in responses {
            if tx.blocking_send(response).is_err() {
                break;
            }
        }
    });
    let report = sink.with_hashers(hashers).run(rx);
    let _ = feeder.join();
    report.result
}
