//! Every bound the server keeps, in one place, each with its default and the
//! reason for it, so that a test can shrink any of them.

use std::time::Duration;

/// The server's bounds on connections, time, memory and work.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; past it a new client is told `Busy` at
    /// once (`--max-connections`). 512 is far more than one disk or link
    /// needs, and each costs a task and a few buffers.
    pub max_connections: usize,
    /// Clients over the limit being told `Busy` at once (each holds a small
    /// task for at most `busy_hello_timeout`); past that they are simply
    /// closed, so a flood cannot grow the refusals without bound.
    pub max_refusals: usize,
    /// A connection silent this long is closed (`--idle-timeout`): silence
    /// between or within frames, never the length of a transfer.
    pub idle_timeout: Duration,
    /// How long a new connection has to send its hello (at most
    /// `idle_timeout`): a client that connects and says nothing (slowloris)
    /// gives its slot back soon.
    pub handshake_timeout: Duration,
    /// How long a client refused for being over the limit has to send its
    /// hello, so that the refusal is read rather than reset under it.
    pub busy_hello_timeout: Duration,
    /// First pause after a failed accept (out of descriptors, say); it
    /// doubles up to `accept_backoff_max`, so the loop never spins on an
    /// error that persists.
    pub accept_backoff_min: Duration,
    /// Longest pause after a failed accept.
    pub accept_backoff_max: Duration,
    /// How long transfers in flight may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long the binary's runtime then waits for blocking work (a
    /// hashing pass, a folder walk) to notice that its client is gone.
    pub blocking_shutdown: Duration,
    /// How often a connection busy with a request (hashing a cold file) and
    /// otherwise silent sends a keep-alive: [`ft_protocol::KEEPALIVE`], well
    /// under any client timeout.
    pub keepalive: Duration,
    /// Listing batches produced ahead of the socket per request: keeps the
    /// walk and the socket both busy while holding little.
    pub read_ahead: usize,
    /// Most pipelined `Get`s answered together: bounds what one trip to a
    /// blocking thread opens.
    pub get_batch: usize,
    /// Bytes of small files a run of pipelined `Get`s reads whole into memory
    /// (the rest are streamed from the file): with the replies' one copy on
    /// their way out, what one connection may hold of them. 128 KiB answers
    /// 32 files of 4 KiB in one write.
    pub get_batch_bytes: u64,
    /// Bytes of entries in one `Entries` frame, at most (and at most
    /// [`ft_protocol::LIST_BATCH_BYTES`]): what a listing holds per batch,
    /// on its way to a client that may not read.
    pub list_batch_bytes: usize,
    /// Chunks (4 MiB) hashed at once, server-wide, by the passes over cold
    /// files: the cores cold hashing may take however many clients ask.
    /// Passes take turns a chunk at a time; the rest wait, with keep-alives.
    pub max_hashing: usize,
    /// Bytes of cold files' chunks held, server-wide, on their way from a
    /// hashing pass to the `Get` that started it, so that a file's first
    /// download reads it once: 64 MiB is 8 such downloads at full speed.
    /// Past it, chunks are read from the page cache again instead.
    pub ride_bytes: u64,
    /// Bytes of whole-file digests and checkpoint states kept: 64 MiB covers
    /// 8 TiB of files at one 32-byte state per 4 MiB chunk.
    pub digest_cache_bytes: u64,
    /// Bytes of checkpoint states kept for cold passes cut short, so that a
    /// client resuming after a stalled link does not wait for the prefix to
    /// be hashed again: 16 MiB covers 2 TiB of prefixes.
    pub prefix_cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_refusals: 256,
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            busy_hello_timeout: Duration::from_secs(1),
            accept_backoff_min: Duration::from_millis(10),
            accept_backoff_max: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            blocking_shutdown: Duration::from_secs(1),
            keepalive: ft_protocol::KEEPALIVE,
            read_ahead: 2,
            get_batch: 32,
            get_batch_bytes: 128 * 1024,
            list_batch_bytes: 32 * 1024,
            max_hashing: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ride_bytes: 64 * 1024 * 1024,
            digest_cache_bytes: 64 * 1024 * 1024,
            prefix_cache_bytes: 16 * 1024 * 1024,
        }
    }
}
