//! Test harness for the end-to-end tests: the real `ftserve` and `ftget` on
//! loopback, every wait bounded, every process killed by PID when its handle
//! drops.
//!
//! The binaries are found beside the test executable's folder
//! (`target/<profile>/`). `cargo test --workspace` builds them first, because
//! the server and client packages have integration tests of their own.
//!
//! One module a job: `bins` finds the binaries, `process` runs and waits for
//! child processes, `server`, `ftget` and `ftput` drive the binaries, `env` lays
//! out the folders of a test, `garage` starts a Garage cluster (and
//! HAProxy) for the bucket tests, `relay` and `misbehaving` are servers in the
//! test process that fail on purpose (on what `background` gives them both),
//! and `raw` speaks the protocol by hand. Everything public is re-exported
//! here: `use ft_tests::*;` reaches all of it.

// A harness panics on what should never happen in a test run; that is its job.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod background;
mod bins;
mod env;
mod ftget;
mod ftput;
mod garage;
mod misbehaving;
mod process;
mod raw;
mod relay;
mod server;
mod tls;

pub use bins::bin;
pub use env::{config_home, sha256_hex, state_dir, tree_contents, TestEnv};
pub use ftget::{ftget, ftget_with_cap, ftget_with_peak, spawn_ftget, Run};
pub use ftput::{add_write_token, ftput, spawn_ftput};
pub use garage::{Garage, Haproxy};
pub use misbehaving::{
    escape_names, Altered, MisbehavingServer, Misbehaviour, Reply, Served, ESCAPES, HOSTILE_PATHS,
    LISTED_THEN_GONE,
};
pub use process::{
    bytes_read, cpu_seconds, peak_rss_kib, read_pipe, rss_kib, signal, wait_bounded, wait_until,
    within, OutputWithin, POLL, RUN_TIMEOUT, START_TIMEOUT,
};
pub use raw::{shared_fingerprint, Link};
pub use raw::{Raw, IO_TIMEOUT, MAX_REPLY_FRAMES};
pub use relay::{AfterBudget, Relay};
pub use server::Server;
pub use tls::{
    add_token, contains_bytes, finish_run, ftget_env, ftserve_output, make_ca, probe,
    spawn_ftget_env, spki_fingerprint, CaFiles, ClientHome, Interceptor, Probe, Recorder,
    TlsServer,
};
