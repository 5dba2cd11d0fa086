//! `MisbehavingServer`: a protocol server in the test process that serves
//! one file honestly but for one [`Misbehaviour`], to see how ftget copes,
//! and keeps a log of what it sent. It speaks TLS with the identity every
//! server of the test process shows, so ftget trusts it as it trusts them;
//! its misbehaviour is inside TLS.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

use ft_protocol::get::piece_len;
use ft_protocol::{
    ChainHasher, Entry, EntryKind, ErrorCode, FileMeta, RemoteError, Request, Response,
    ServerHandshake, CHUNK_SIZE, LIST_BATCH_BYTES, MAX_CHECKPOINTS, MAX_DATA,
};

use crate::background::{accept, listen, Stop};
use crate::process::RUN_TIMEOUT;
use crate::raw::{read_frame, shared_identity, IO_TIMEOUT};

/// One connection of a [`MisbehavingServer`]: TLS over a blocking socket.
type Conn = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// The TLS server configuration of every [`MisbehavingServer`]: the shared
/// identity, as ftserve serves it.
fn server_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        shared_identity()
            .server_config()
            .expect("a TLS server configuration")
    });
    Arc::clone(config)
}

/// How a [`MisbehavingServer`] departs from the protocol's honest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Flip a byte in chunk `chunk` of the first `times` replies that send
    /// it, a `Get`'s or a `Range`'s: the first byte of the chunk.
    Corrupt { chunk: u64, times: usize },
    /// Send wrong bytes (every byte of it inverted) for chunk `chunk` in the
    /// first `times` `Range` replies that hold it; a `Get` sends it
    /// honestly, and so do the checkpoints and the digest.
    LieInRange { chunk: u64, times: usize },
    /// Close the connection instead of answering the first `times`
    /// `Checkpoints` requests: a link lost while a server hashes the file.
    HangUpOnCheckpoints { times: usize },
    /// Report a new modification time in every `Meta`, as if the file were
    /// rewritten between any two requests.
    EverChanging,
    /// Welcome the client with this protocol version instead of
    /// [`ft_protocol::VERSION`] (inside TLS, as any v2 server).
    Version(u32),
    /// Answer every listing with [`HOSTILE_PATHS`], each a file.
    HostileListing,
    /// Send the right bytes and checkpoints but a wrong digest at the end
    /// (and in every `Checkpoints` reply).
    WrongDigest,
    /// Send one more data frame than the size announced.
    ExtraBytes,
    /// End the transfer half-way through the announced size.
    FewerBytes,
    /// After `Meta`, a frame length prefix of nearly 4 GiB.
    OversizedFrame,
    /// Send `Meta` and one data frame, then nothing, holding the connection open.
    Stall,
    /// Announce 1 TiB and stream valid data and checkpoints (zeros) at about
    /// 50 MiB/s, forever.
    EndlessData,
    /// Answer a listing with `Entries` frames of 10,000 files, forever.
    EndlessListing,
    /// List one file, [`LISTED_THEN_GONE`], then answer every `Stat`, `Get`
    /// and `Checkpoints` with NotFound, as if it had just been removed.
    ListedThenGone,
    /// Put [`ESCAPES`] in every error message and listed name: `Stat` and
    /// `Get` are refused, a listing of `dir` or the root names
    /// [`escape_names`], any other listing is refused. With `at_hello`, the
    /// handshake itself is refused so.
    EscapeMessages { at_hello: bool },
    /// Announce a file of 2^50 bytes, with a digest, and answer every
    /// `Checkpoints` with a full page of states (and a listing with that
    /// one file), forever.
    EndlessCheckpoints,
    /// Answer a listing with `entries` files (empty, listed with a digest)
    /// whose paths are `path_len` bytes long (absolute, so refused, when
    /// `absolute`), in frames under 1 MiB; and every `Get` with NotFound,
    /// its message `message_len` bytes long.
    HugeListing {
        entries: usize,
        path_len: usize,
        message_len: usize,
        absolute: bool,
    },
}

/// What an [`Misbehaviour::EscapeMessages`] server puts in its messages and
/// names: a window title, a screen clear, a C1 CSI (U+009B) and a bidi
/// override, each of which drives a terminal printed raw.
pub const ESCAPES: &str = "\u{1b}]0;TITLE\u{7}\u{1b}[2J\u{9b}31m\u{202e}";

/// What an [`Misbehaviour::EscapeMessages`] server lists: an honest name in
/// UTF-8, names carrying [`ESCAPES`], and one that is the other's partial
/// name (so ftget refuses it, naming both).
pub fn escape_names() -> Vec<String> {
    vec![
        "\u{e9}\u{65e5}\u{672c}.txt".to_owned(),
        format!("{ESCAPES}x"),
        format!("{ESCAPES}x.part"),
        format!("sub/{ESCAPES}evil\r\nftget: forged line"),
    ]
}

/// The one file a [`Misbehaviour::ListedThenGone`] server lists.
pub const LISTED_THEN_GONE: &str = "notes.txt";

/// What a [`Misbehaviour::HostileListing`] server lists: one honest name,
/// `good.txt`, among paths that try to leave the output folder.
pub const HOSTILE_PATHS: &[&str] = &[
    "good.txt",
    "../escape.txt",
    "../../escape2.txt",
    "sub/../../escape3.txt",
    "/tmp/ft-absolute-escape.txt",
    "nul\0name.txt",
    "back\\..\\slash.txt",
    "",
    ".",
    "good.txt",
];

/// Which kind of reply sent file bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Get,
    Range,
}

/// A reply of a [`MisbehavingServer`] that sent file bytes: on which
/// connection (counting from 1, in the order accepted), and which bytes it
/// was asked for (a `Get`'s end is the file's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub connection: usize,
    pub reply: Reply,
    pub offset: u64,
    pub end: u64,
}

/// A chunk a [`MisbehavingServer`] sent altered, and on which connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Altered {
    pub connection: usize,
    pub reply: Reply,
    pub chunk: u64,
}

/// A test server that serves one file under any path, honestly but for one
/// [`Misbehaviour`], until it is dropped or [`RUN_TIMEOUT`] has passed
/// ("forever" above means as long). [`MisbehavingServer::start`] serves one
/// connection at a time, the next one waiting until the last has ended;
/// [`MisbehavingServer::start_concurrent`] serves each as it comes, for a
/// client that fetches over several at once.
pub struct MisbehavingServer {
    pub addr: SocketAddr,
    stop: Stop,
    tally: Arc<Mutex<Tally>>,
}

impl MisbehavingServer {
    /// Serves one connection at a time.
    pub fn start(data: Vec<u8>, misbehaviour: Misbehaviour) -> Self {
        Self::spawn(data, misbehaviour, false)
    }

    /// Serves every connection as it comes, each on a thread of its own;
    /// what the misbehaviour counts (the corrupted replies, the changing
    /// modification time) is counted across all of them.
    pub fn start_concurrent(data: Vec<u8>, misbehaviour: Misbehaviour) -> Self {
        Self::spawn(data, misbehaviour, true)
    }

    fn spawn(data: Vec<u8>, misbehaviour: Misbehaviour, concurrent: bool) -> Self {
        let (listener, addr) = listen();
        let stop = Stop::after(RUN_TIMEOUT);
        let size = match misbehaviour {
            Misbehaviour::EndlessData => 1 << 40,
            Misbehaviour::EndlessCheckpoints => 1 << 50,
            Misbehaviour::HugeListing { .. } => 0,
            _ => data.len() as u64,
        };
        let sha256 = match misbehaviour {
            Misbehaviour::EndlessCheckpoints | Misbehaviour::HugeListing { .. } => Some([7; 32]),
            _ => None,
        };
        let tally = Arc::new(Mutex::new(Tally {
            meta: FileMeta {
                size,
                mtime_secs: 1_700_000_000,
                mtime_nanos: 0,
                sha256,
            },
            times_left: match misbehaviour {
                Misbehaviour::Corrupt { times, .. }
                | Misbehaviour::LieInRange { times, .. }
                | Misbehaviour::HangUpOnCheckpoints { times } => times,
                _ => 0,
            },
            served: Vec::new(),
            altered: Vec::new(),
        }));
        let peer = Peer {
            data: Arc::new(data),
            misbehaviour,
            tally: Arc::clone(&tally),
            connection: 0,
            stop: stop.clone(),
        };
        thread::spawn(move || accept_loop(&listener, &peer, concurrent));
        Self { addr, stop, tally }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Every reply that sent file bytes so far, in the order they began.
    pub fn served(&self) -> Vec<Served> {
        self.tally.lock().unwrap().served.clone()
    }

    /// Every chunk sent altered so far, in the order sent.
    pub fn altered(&self) -> Vec<Altered> {
        self.tally.lock().unwrap().altered.clone()
    }
}

/// Accepts connections until the stop falls due, and serves each (on a
/// thread of its own when `concurrent`, else before the next is accepted).
fn accept_loop(listener: &TcpListener, peer: &Peer, concurrent: bool) {
    let config = server_config();
    let mut connection = 0;
    while let Some(tcp) = accept(listener, &peer.stop) {
        connection += 1;
        let peer = Peer {
            connection,
            ..peer.clone()
        };
        let config = Arc::clone(&config);
        if concurrent {
            thread::spawn(move || serve(tcp, config, peer));
        } else {
            serve(tcp, config, peer);
        }
    }
}

/// Serves one connection until the client leaves, a request cannot be
/// read (each read waits at most [`IO_TIMEOUT`]), or the stop falls due.
fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>, mut peer: Peer) {
    tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // Replies to pipelined requests go out one small write each:
    // without this, each waits for the client's delayed ACK.
    tcp.set_nodelay(true).expect("nodelay");
    let tls = rustls::ServerConnection::new(config).expect("a TLS server");
    // The TLS handshake runs in the first read.
    let mut stream = Conn::new(tls, tcp);
    // The stop ends a client that keeps sending.
    while let Some(body) = read_frame(&mut stream) {
        let Ok(request) = ft_protocol::codec::decode_request(&body) else {
            break;
        };
        if peer.stop.is_due() || !peer.answer(&mut stream, &request) {
            break;
        }
    }
    // Ends as ftserve ends a connection: close_notify, then the close.
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

impl Drop for MisbehavingServer {
    fn drop(&mut self) {
        self.stop.set();
    }
}

/// Sends one response; false once the client is gone.
fn send(stream: &mut Conn, response: &Response) -> bool {
    let frame = ft_protocol::codec::encode(response).expect("encodes");
    stream
        .write_all(&frame)
        .and_then(|()| stream.flush())
        .is_ok()
}

/// Sends a data frame that ends at byte `end` of the file and, if `end` is
/// a chunk boundary, the checkpoint there from `hasher`, which has taken
/// the file up to `end`; false once the client is gone.
fn send_data(stream: &mut Conn, piece: Vec<u8>, end: u64, hasher: &ChainHasher) -> bool {
    if !send(stream, &Response::Data(piece.into())) {
        return false;
    }
    if !end.is_multiple_of(CHUNK_SIZE) {
        return true;
    }
    let state = hasher.state().expect("boundary");
    let index = end / CHUNK_SIZE;
    send(stream, &Response::Checkpoint { index, state })
}

/// What a [`MisbehavingServer`]'s connections share: the version it
/// announces, how many more times it misbehaves, and its log.
struct Tally {
    meta: FileMeta,
    /// Replies still to alter ([`Misbehaviour::Corrupt`],
    /// [`Misbehaviour::LieInRange`]) or hang up on
    /// ([`Misbehaviour::HangUpOnCheckpoints`]).
    times_left: usize,
    served: Vec<Served>,
    altered: Vec<Altered>,
}

/// One connection of a [`MisbehavingServer`].
#[derive(Clone)]
struct Peer {
    data: Arc<Vec<u8>>,
    misbehaviour: Misbehaviour,
    tally: Arc<Mutex<Tally>>,
    /// Which connection, counting from 1 (0 for none yet).
    connection: usize,
    /// Ends the endless answers too.
    stop: Stop,
}

/// A refusal whose message carries [`ESCAPES`] around `about`.
fn escaped(code: ErrorCode, about: &str) -> RemoteError {
    RemoteError::new(code, format!("{ESCAPES}no such thing: {about}{ESCAPES}"))
}

/// The `i`th path of a [`Misbehaviour::HugeListing`]: `len` bytes (at least
/// enough for `i`) in folders of up to 200-byte names, unique by its last.
fn long_path(i: usize, len: usize) -> String {
    let last = format!("f{i}");
    let mut path = String::with_capacity(len.max(last.len()));
    while path.len() + 201 + last.len() <= len {
        path.push_str(&"d".repeat(200));
        path.push('/');
    }
    let pad = len.saturating_sub(path.len() + last.len());
    path.push_str(&"e".repeat(pad));
    path.push_str(&last);
    path
}

impl Peer {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap()
    }

    fn next_meta(&mut self) -> FileMeta {
        let mut tally = self.tally();
        if self.misbehaviour == Misbehaviour::EverChanging {
            tally.meta.mtime_secs += 1;
        }
        tally.meta
    }

    /// Notes a reply that sends bytes `offset..end`.
    fn note_served(&self, reply: Reply, offset: u64, end: u64) {
        let connection = self.connection;
        self.tally().served.push(Served {
            connection,
            reply,
            offset,
            end,
        });
    }

    /// Whether this `reply`, about to send the frame that opens chunk
    /// `chunk`, alters the chunk: once per reply, while the misbehaviour
    /// has replies left to alter. Noted if so.
    fn alters(&self, reply: Reply, chunk: u64) -> bool {
        let bad = match (self.misbehaviour, reply) {
            (Misbehaviour::Corrupt { chunk: bad, .. }, _) => bad,
            (Misbehaviour::LieInRange { chunk: bad, .. }, Reply::Range) => bad,
            _ => return false,
        };
        let mut tally = self.tally();
        if chunk != bad || tally.times_left == 0 {
            return false;
        }
        tally.times_left -= 1;
        let connection = self.connection;
        tally.altered.push(Altered {
            connection,
            reply,
            chunk,
        });
        true
    }

    /// Whether to hang up on this `Checkpoints` request.
    fn hangs_up(&self) -> bool {
        let mut tally = self.tally();
        let hangs_up = matches!(self.misbehaviour, Misbehaviour::HangUpOnCheckpoints { .. })
            && tally.times_left > 0;
        if hangs_up {
            tally.times_left -= 1;
        }
        hangs_up
    }

    /// Answers one request; false when the connection should end.
    fn answer(&mut self, stream: &mut Conn, request: &Request) -> bool {
        let asks_for_file = !matches!(request, Request::Hello { .. } | Request::List { .. });
        if self.misbehaviour == Misbehaviour::ListedThenGone && asks_for_file {
            let gone = RemoteError::new(ErrorCode::NotFound, "no such file");
            return send(stream, &Response::Error(gone));
        }
        match request {
            Request::Hello { .. } => {
                let reply = match self.misbehaviour {
                    Misbehaviour::Version(version) => Ok(Response::Welcome { version }),
                    Misbehaviour::EscapeMessages { at_hello: true } => {
                        Err(escaped(ErrorCode::BadRequest, "hello"))
                    }
                    _ => ServerHandshake
                        .receive(request.clone())
                        .map(|_| ServerHandshake.welcome()),
                };
                match reply {
                    Ok(welcome) => send(stream, &welcome),
                    Err(refusal) => {
                        let _ = send(stream, &Response::Error(refusal));
                        false
                    }
                }
            }
            Request::Stat { path } | Request::Get { path, .. }
                if matches!(self.misbehaviour, Misbehaviour::EscapeMessages { .. }) =>
            {
                send(stream, &Response::Error(escaped(ErrorCode::NotFound, path)))
            }
            Request::Stat { .. } => {
                let meta = self.next_meta();
                send(stream, &Response::Meta(meta))
            }
            Request::Checkpoints { first, count, .. }
                if self.misbehaviour == Misbehaviour::EndlessCheckpoints =>
            {
                let states = vec![[1; 32]; (*count).min(MAX_CHECKPOINTS) as usize];
                let meta = self.next_meta();
                let first = *first;
                send(
                    stream,
                    &Response::Checkpoints {
                        meta,
                        first,
                        states,
                    },
                )
            }
            Request::Checkpoints { .. } if self.hangs_up() => false,
            Request::Checkpoints { first, count, .. } => self.checkpoints(stream, *first, *count),
            Request::Range { offset, end, .. } => self.range(stream, *offset, *end),
            Request::List { path, .. } => self.list(stream, path),
            Request::Get { path, offset } => match self.misbehaviour {
                Misbehaviour::HugeListing { message_len, .. } => {
                    let mut message = format!("no such file: {path} ");
                    let pad = message_len.saturating_sub(message.len());
                    message.push_str(&"x".repeat(pad));
                    let refusal = RemoteError::new(ErrorCode::NotFound, message);
                    send(stream, &Response::Error(refusal))
                }
                _ => self.get(stream, *offset),
            },
            // It takes no uploads: refused as a server without
            // --allow-upload refuses them, and closed (what follows a `Put`
            // may be a chunk's bytes).
            Request::Put { .. }
            | Request::Chunk { .. }
            | Request::Data(_)
            | Request::Commit { .. } => {
                let refusal = RemoteError::new(ErrorCode::NotAllowed, "no uploads here");
                let _ = send(stream, &Response::Error(refusal));
                false
            }
        }
    }

    fn list(&mut self, stream: &mut Conn, path: &str) -> bool {
        let meta = self.next_meta();
        let entry = |path: String| Entry {
            path,
            kind: EntryKind::File,
            size: meta.size,
            mtime_secs: meta.mtime_secs,
            mtime_nanos: meta.mtime_nanos,
            sha256: meta.sha256,
        };
        match self.misbehaviour {
            Misbehaviour::EscapeMessages { .. } if path.is_empty() || path == "dir" => {
                let entries = escape_names().into_iter().map(entry).collect();
                send(stream, &Response::Entries(entries))
                    && send(stream, &Response::ListEnd { skipped: 0 })
            }
            Misbehaviour::EscapeMessages { .. } => {
                send(stream, &Response::Error(escaped(ErrorCode::NotFound, path)))
            }
            Misbehaviour::EndlessCheckpoints => {
                send(stream, &Response::Entries(vec![entry("f.bin".to_owned())]))
                    && send(stream, &Response::ListEnd { skipped: 0 })
            }
            Misbehaviour::HugeListing {
                entries,
                path_len,
                absolute,
                ..
            } => {
                let per_frame = (LIST_BATCH_BYTES / (path_len + 64)).max(1);
                let path = |i| match absolute {
                    true => format!("/{}", long_path(i, path_len.saturating_sub(1))),
                    false => long_path(i, path_len),
                };
                let mut next = 0;
                while next < entries && !self.stop.is_due() {
                    let end = (next + per_frame).min(entries);
                    let frame = (next..end).map(|i| entry(path(i))).collect();
                    if !send(stream, &Response::Entries(frame)) {
                        return false;
                    }
                    next = end;
                }
                send(stream, &Response::ListEnd { skipped: 0 })
            }
            Misbehaviour::HostileListing => {
                let entries = HOSTILE_PATHS
                    .iter()
                    .map(|p| entry((*p).to_owned()))
                    .collect();
                send(stream, &Response::Entries(entries))
                    && send(stream, &Response::ListEnd { skipped: 0 })
            }
            Misbehaviour::ListedThenGone => {
                let entries = vec![entry(LISTED_THEN_GONE.to_owned())];
                send(stream, &Response::Entries(entries))
                    && send(stream, &Response::ListEnd { skipped: 0 })
            }
            Misbehaviour::EndlessListing => {
                let mut next = 0u64;
                while !self.stop.is_due() {
                    let entries = (next..next + 10_000)
                        .map(|i| entry(format!("f{i}")))
                        .collect();
                    next += 10_000;
                    if !send(stream, &Response::Entries(entries)) {
                        return false;
                    }
                }
                false
            }
            _ => false,
        }
    }

    /// Honest states, from the data, as ftserve pages them.
    fn checkpoints(&mut self, stream: &mut Conn, first: u64, count: u32) -> bool {
        let mut meta = self.next_meta();
        let whole = self.data.len() as u64 / CHUNK_SIZE;
        let mut hasher = ChainHasher::new();
        let mut states = Vec::new();
        for k in 1..=whole {
            let (start, end) = ((k - 1) * CHUNK_SIZE, k * CHUNK_SIZE);
            hasher.update(&self.data[start as usize..end as usize]);
            if k >= first && k < first + u64::from(count.min(MAX_CHECKPOINTS)) {
                states.push(hasher.state().expect("boundary"));
            }
        }
        hasher.update(&self.data[(whole * CHUNK_SIZE) as usize..]);
        meta.sha256 = Some(match self.misbehaviour {
            // The same wrong digest wherever it gives one.
            Misbehaviour::WrongDigest => [0u8; 32],
            _ => hasher.finalize(),
        });
        send(
            stream,
            &Response::Checkpoints {
                meta,
                first,
                states,
            },
        )
    }

    /// A range: `Meta`, then its bytes, the chunk that [`Misbehaviour::Corrupt`]
    /// or [`Misbehaviour::LieInRange`] names altered while it has replies
    /// left to alter.
    fn range(&mut self, stream: &mut Conn, offset: u64, end: u64) -> bool {
        let meta = self.next_meta();
        if !send(stream, &Response::Meta(meta)) {
            return false;
        }
        let stop = end.min(self.data.len() as u64);
        self.note_served(Reply::Range, offset, stop);
        let mut altering = false;
        let mut pos = offset;
        while pos < stop {
            let next = pos + piece_len(pos, stop) as u64;
            let mut piece = self.data[pos as usize..next as usize].to_vec();
            let opens_chunk = pos.is_multiple_of(CHUNK_SIZE);
            if opens_chunk {
                altering = self.alters(Reply::Range, pos / CHUNK_SIZE);
            }
            match self.misbehaviour {
                Misbehaviour::LieInRange { .. } if altering => {
                    piece.iter_mut().for_each(|byte| *byte = !*byte);
                }
                // As in a `Get`: the first byte of the frame that opens it.
                Misbehaviour::Corrupt { .. } if altering && opens_chunk => piece[0] ^= 0xff,
                _ => {}
            }
            if !send(stream, &Response::Data(piece.into())) {
                return false;
            }
            pos = next;
        }
        true
    }

    fn get(&mut self, stream: &mut Conn, offset: u64) -> bool {
        let meta = self.next_meta();
        if !send(stream, &Response::Meta(meta)) {
            return false;
        }
        self.note_served(Reply::Get, offset, meta.size);
        match self.misbehaviour {
            Misbehaviour::OversizedFrame => {
                let prefix = 0xffff_fff0u32.to_be_bytes();
                let _ = stream.write_all(&prefix).and_then(|()| stream.flush());
                thread::sleep(Duration::from_millis(500));
                return false;
            }
            Misbehaviour::Stall => {
                let first = piece_len(0, self.data.len() as u64);
                let _ = send(stream, &Response::Data(self.data[..first].to_vec().into()));
                self.stop.sleep();
                return false;
            }
            Misbehaviour::EndlessData => {
                let zeros = vec![0u8; MAX_DATA];
                let mut hasher = ChainHasher::new();
                let mut pos = 0u64;
                while !self.stop.is_due() {
                    hasher.update(&zeros);
                    pos += MAX_DATA as u64;
                    if !send_data(stream, zeros.clone(), pos, &hasher) {
                        return false;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                return false;
            }
            _ => {}
        }
        // FewerBytes stops half-way on purpose: the frames are cut as for a
        // file of that size, the same frames as the whole file's up to there.
        let end = match self.misbehaviour {
            Misbehaviour::FewerBytes => self.data.len() as u64 / 2,
            _ => self.data.len() as u64,
        };
        let mut hasher = ChainHasher::new();
        hasher.update(&self.data[..offset as usize]);
        let mut pos = offset;
        while pos < end {
            let next = pos + piece_len(pos, end) as u64;
            let honest = &self.data[pos as usize..next as usize];
            hasher.update(honest);
            let mut piece = honest.to_vec();
            // Corrupt flips the first byte of the frame that opens its
            // chunk, counted when that frame goes out: a `Get` stopped
            // before it never sent the chunk.
            if pos.is_multiple_of(CHUNK_SIZE) && self.alters(Reply::Get, pos / CHUNK_SIZE) {
                piece[0] ^= 0xff;
            }
            if !send_data(stream, piece, next, &hasher) {
                return false;
            }
            pos = next;
        }
        if self.misbehaviour == Misbehaviour::ExtraBytes
            && !send(stream, &Response::Data(vec![0u8; 10].into()))
        {
            return false;
        }
        let sha256 = match self.misbehaviour {
            Misbehaviour::WrongDigest => [0u8; 32],
            _ => hasher.finalize(),
        };
        send(stream, &Response::End { sha256 })
    }
}
