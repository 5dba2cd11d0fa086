//! Test harness for the end-to-end tests: the real `ftserve` and `ftget` on
//! loopback, every wait bounded, every process killed by PID when its handle
//! drops.
//!
//! The binaries are found beside the test executable's folder
//! (`target/<profile>/`). `cargo test --workspace` builds them first, because
//! the server and client packages have integration tests of their own.

// A harness panics on what should never happen in a test run; that is its job.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// Longest a server may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest any single ftget run may take in a test.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Polling interval of bounded waits.
pub const POLL: Duration = Duration::from_millis(10);

/// One of the workspace's binaries, built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    let built = modified(&path);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let own_crate = match name {
        "ftserve" => "server/src",
        _ => "client/src",
    };
    let newest_source = ["protocol/src", own_crate]
        .iter()
        .map(|dir| newest(&workspace.join(dir)))
        .max()
        .flatten();
    assert!(
        newest_source <= built,
        "{} is older than its sources; run the tests with `cargo test --workspace`, which rebuilds it",
        path.display()
    );
    path
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of any file under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                newest(&path)
            } else {
                modified(&path)
            }
        })
        .max()
}

/// Drains a child's pipe on a thread so the child never blocks on it.
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&sink);
    thread::spawn(move || {
        let mut pipe = pipe;
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            writer.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    sink
}

/// Waits for `child` to exit, at most `limit`; kills it if it does not.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A running `ftserve` on 127.0.0.1 with a free port.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts `ftserve ROOT --listen 127.0.0.1:0 EXTRA...` and waits for it to
    /// say where it listens.
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", root, extra)
    }

    /// The same on another loopback address, such as `[::1]:0`.
    pub fn start_on(listen: &str, root: &Path, extra: &[&str]) -> Self {
        Self::spawn(listen, root, extra, &[])
    }

    /// The same on 127.0.0.1 with environment variables set.
    pub fn start_with_env(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn("127.0.0.1:0", root, extra, env)
    }

    /// Starts ftserve on 127.0.0.1 as an unprivileged user, so that file
    /// permissions apply to it: as `nobody` (65534) when the tests run as
    /// root, as the current user otherwise. The binary is copied into
    /// `scratch` first, which that user must be able to reach: the build
    /// tree may not be.
    pub fn start_unprivileged(root: &Path, scratch: &Path) -> Self {
        let copy = scratch.join("ftserve");
        std::fs::copy(bin("ftserve"), &copy).expect("copy ftserve");
        let mut command = Command::new(&copy);
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            // std drops the supplementary groups when root sets a uid.
            command.uid(65534).gid(65534);
        }
        Self::launch(command, "127.0.0.1:0", root, &[], &[])
    }

    fn spawn(listen: &str, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(Command::new(bin("ftserve")), listen, root, extra, env)
    }

    fn launch(
        mut command: Command,
        listen: &str,
        root: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = command
            .arg("--listen")
            .arg(listen)
            .args(extra)
            .arg(root)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ftserve starts");
        let logs = collect(child.stderr.take().expect("stderr piped"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, addr)) = line.split_once("listening on ") {
                        break addr.trim().parse().expect("address after `listening on`");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("ftserve did not print `listening on` within {START_TIMEOUT:?}");
                }
            }
        };
        Self { child, addr, logs }
    }

    /// `127.0.0.1:PORT`, as ftget takes it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// What the server logged on stderr so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// Sends `sig` and waits (bounded) for the exit.
    /// Once it has exited, [`Server::logs`] holds everything it wrote.
    pub fn stop(&mut self, sig: nix::sys::signal::Signal, limit: Duration) -> Option<ExitStatus> {
        signal(self.child.id(), sig);
        let status = wait_bounded(&mut self.child, limit);
        if status.is_some() {
            // The drain thread lets go of the buffer when the pipe closes.
            wait_until(Duration::from_secs(5), || {
                Arc::strong_count(&self.logs) == 1
            });
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` to the process `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, sig).expect("signal delivered");
}

/// What one ftget run did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The `--json` object it printed.
    pub fn json(&self) -> serde_json::Value {
        let line = self.stdout.lines().last().unwrap_or_else(|| {
            panic!("no JSON on stdout; stderr: {}", self.stderr);
        });
        serde_json::from_str(line).expect("stdout is JSON")
    }

    /// Every JSON object it printed, one a line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("each stdout line is JSON"))
            .collect()
    }

    /// A numeric field of the JSON report.
    pub fn field(&self, key: &str) -> u64 {
        self.json()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} is a number"))
    }
}

/// Starts `ftget ARGS...` in `dir` without waiting.
pub fn spawn_ftget(dir: &Path, args: &[&str]) -> Child {
    Command::new(bin("ftget"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ftget starts")
}

/// Runs `ftget ARGS...` in `dir` to the end (bounded by [`RUN_TIMEOUT`]).
pub fn ftget(dir: &Path, args: &[&str]) -> Run {
    run_to_end(spawn_ftget(dir, args), args, |_| {})
}

/// Runs `ftget ARGS...` in `dir`, sampling its peak memory until it ends;
/// returns the run and the last peak seen, in KiB.
pub fn ftget_with_peak(dir: &Path, args: &[&str]) -> (Run, u64) {
    let mut peak = 0;
    let run = run_to_end(spawn_ftget(dir, args), args, |pid| {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
    });
    (run, peak)
}

/// Waits (bounded) for `child` to end, calling `tick` with its PID while it
/// runs, and collects what it printed.
fn run_to_end(mut child: Child, args: &[&str], mut tick: impl FnMut(u32)) -> Run {
    let stdout = collect(child.stdout.take().expect("stdout piped"));
    let stderr = collect(child.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        // Before reaping, while /proc still has the process.
        tick(child.id());
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    // The drain threads finish once the pipes close with the process.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stdout) + Arc::strong_count(&stderr) > 2 && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    let text =
        |buf: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: text(&stdout),
        stderr: text(&stderr),
    };
    assert!(
        status.is_some(),
        "ftget {args:?} did not finish within {RUN_TIMEOUT:?}: {run:?}"
    );
    run
}

/// A folder for one test: `root` is served, `work` is where ftget runs.
pub struct TestEnv {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let work = dir.path().join("work");
        std::fs::create_dir(&root).expect("mkdir root");
        std::fs::create_dir(&work).expect("mkdir work");
        Self {
            _dir: dir,
            root,
            work,
        }
    }

    /// Writes `len` pseudo-random bytes (from `seed`) to `root/name`.
    pub fn random_file(&self, name: &str, len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        fastrand::Rng::with_seed(seed).fill(&mut data);
        let path = self.root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, &data).expect("write");
        data
    }

    /// The names in the work folder, sorted.
    pub fn work_listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.work)
            .expect("read work")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// What a folder holds, walked without following links: each regular file's
/// SHA-256 and each folder (with a trailing `/`), by path relative to `dir`.
/// Anything else (a link, a FIFO) shows as `other`.
pub fn tree_contents(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut found = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read_dir") {
            let path = entry.expect("entry").path();
            let relative = path
                .strip_prefix(dir)
                .expect("below dir")
                .to_string_lossy()
                .into_owned();
            let kind = std::fs::symlink_metadata(&path).expect("lstat").file_type();
            if kind.is_dir() {
                found.insert(format!("{relative}/"), String::new());
                pending.push(path);
            } else if kind.is_file() {
                let data = std::fs::read(&path).expect("read");
                found.insert(relative, sha256_hex(&data));
            } else {
                found.insert(relative, "other".into());
            }
        }
    }
    found
}

/// SHA-256 in lower-case hex, computed with the `sha2` crate's standard API
/// (independent of the protocol's chain hasher).
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits until `cond` holds, at most `limit`; returns whether it did.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(POLL);
    }
    cond()
}

/// What a [`Relay`] does to its first connection once the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBudget {
    /// Forward nothing more but keep the connection open: a stalled link.
    Stall,
    /// Close the connection: a dropped link.
    Cut,
    /// Forward nothing for this long, then everything: a link that hangs
    /// for a while and recovers.
    Pause(Duration),
}

/// A TCP relay on 127.0.0.1 in front of a server. Its first connection (or
/// every one) carries `budget` bytes from the server and then stalls, is cut
/// or pauses; other connections pass through untouched.
pub struct Relay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Budget and `after` for the first connection only.
    pub fn start(target: SocketAddr, budget: u64, after: AfterBudget) -> Self {
        Self::spawn(target, budget, after, false)
    }

    /// Budget and `after` for every connection: a link that keeps failing.
    pub fn start_every(target: SocketAddr, budget: u64, after: AfterBudget) -> Self {
        Self::spawn(target, budget, after, true)
    }

    fn spawn(target: SocketAddr, budget: u64, after: AfterBudget, every: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("relay address");
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (stop2, streams2) = (Arc::clone(&stop), Arc::clone(&streams));
        thread::spawn(move || {
            let deadline = Instant::now() + RUN_TIMEOUT;
            let mut budget = Some(budget);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(POLL);
                    continue;
                };
                client.set_nonblocking(false).expect("blocking");
                // A server that is down (being restarted) refuses: so does the relay.
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                {
                    let mut held = streams2.lock().unwrap();
                    held.push(client.try_clone().expect("clone"));
                    held.push(server.try_clone().expect("clone"));
                }
                let limit = if every {
                    budget.unwrap_or(u64::MAX)
                } else {
                    budget.take().unwrap_or(u64::MAX)
                };
                let stop3 = Arc::clone(&stop2);
                thread::spawn(move || relay_one(client, server, limit, after, &stop3, deadline));
            }
        });
        Self {
            addr,
            stop,
            streams,
        }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

/// Relays one connection: everything upstream, `limit` bytes downstream, then
/// `after`.
fn relay_one(
    client: TcpStream,
    server: TcpStream,
    limit: u64,
    after: AfterBudget,
    stop: &AtomicBool,
    deadline: Instant,
) {
    let (mut up_from, mut up_to) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    thread::spawn(move || {
        let _ = std::io::copy(&mut up_from, &mut up_to);
    });
    let (mut down_from, mut down_to) = (server, client);
    let mut left = limit;
    let mut buf = vec![0u8; 64 * 1024];
    // What was read past the budget: held back, and sent after a pause.
    let mut held_back = Vec::new();
    while left > 0 {
        let n = match down_from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let send = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        if down_to.write_all(&buf[..send]).is_err() {
            break;
        }
        left -= send as u64;
        held_back = buf[send..n].to_vec();
    }
    if left == 0 {
        let until = match after {
            AfterBudget::Stall => deadline,
            AfterBudget::Cut => Instant::now(),
            AfterBudget::Pause(pause) => Instant::now() + pause,
        };
        while !stop.load(Ordering::Relaxed) && Instant::now() < until.min(deadline) {
            thread::sleep(POLL);
        }
        if let AfterBudget::Pause(_) = after {
            if down_to.write_all(&held_back).is_ok() {
                let _ = std::io::copy(&mut down_from, &mut down_to);
            }
        }
    }
    let _ = down_to.shutdown(std::net::Shutdown::Both);
    let _ = down_from.shutdown(std::net::Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for stream in self.streams.lock().unwrap().iter() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Reads one frame body from a blocking socket; `None` on EOF or error.
fn read_frame(stream: &mut TcpStream) -> Option<bytes::Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    if len > ft_protocol::MAX_FRAME {
        return None;
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(body.into())
}

/// A hand-driven protocol client over a blocking socket, for speaking to the
/// server in ways ftget never would.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Self { stream }
    }

    /// Connects and completes the handshake.
    pub fn greeted(addr: SocketAddr) -> Self {
        let mut raw = Self::connect(addr);
        let welcome = raw.hello(ft_protocol::VERSION);
        assert_eq!(
            welcome,
            Some(ft_protocol::Response::Welcome {
                version: ft_protocol::VERSION
            })
        );
        raw
    }

    pub fn send(&mut self, request: &ft_protocol::Request) {
        let frame = ft_protocol::codec::encode(request).expect("encodes");
        self.stream.write_all(&frame).expect("sends");
    }

    /// Sends raw bytes; errors are ignored (the server may already have closed).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next response; `None` when the server closed the connection.
    pub fn recv(&mut self) -> Option<ft_protocol::Response> {
        let body = read_frame(&mut self.stream)?;
        Some(ft_protocol::codec::decode_response(body).expect("server sends valid frames"))
    }

    pub fn hello(&mut self, version: u32) -> Option<ft_protocol::Response> {
        self.send(&ft_protocol::Request::Hello {
            magic: ft_protocol::MAGIC,
            version,
        });
        self.recv()
    }

    /// The error code of the next response, which must be an error.
    pub fn error_code(&mut self) -> ft_protocol::ErrorCode {
        match self.recv() {
            Some(ft_protocol::Response::Error(err)) => err.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Whether the server closes the connection within the read timeout,
    /// after any number of frames.
    pub fn closes(&mut self) -> bool {
        for _ in 0..1000 {
            if read_frame(&mut self.stream).is_none() {
                return true;
            }
        }
        false
    }
}

/// How a [`MisbehavingServer`] departs from the protocol's honest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Flip a byte in chunk `chunk` of the first `times` downloads it sends.
    Corrupt { chunk: u64, times: usize },
    /// Report a new modification time in every `Meta`, as if the file were
    /// rewritten between any two requests.
    EverChanging,
    /// Welcome the client with this protocol version instead of 1.
    Version(u32),
    /// Answer every listing with [`HOSTILE_PATHS`], each a file.
    HostileListing,
    /// Send the right bytes and checkpoints but a wrong digest at the end.
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
}

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

/// A test server that serves one file under any path, honestly but for one
/// [`Misbehaviour`]. It serves one connection at a time.
pub struct MisbehavingServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl MisbehavingServer {
    pub fn start(data: Vec<u8>, misbehaviour: Misbehaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        thread::spawn(move || {
            let mut peer = Peer {
                data,
                misbehaviour,
                meta: ft_protocol::FileMeta {
                    size: 0,
                    mtime_secs: 1_700_000_000,
                    mtime_nanos: 0,
                    sha256: None,
                },
                corrupt_left: match misbehaviour {
                    Misbehaviour::Corrupt { times, .. } => times,
                    _ => 0,
                },
            };
            peer.meta.size = match misbehaviour {
                Misbehaviour::EndlessData => 1 << 40,
                _ => peer.data.len() as u64,
            };
            let deadline = Instant::now() + RUN_TIMEOUT;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(POLL);
                    continue;
                };
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                while let Some(body) = read_frame(&mut stream) {
                    let Ok(request) = ft_protocol::codec::decode_request(&body) else {
                        break;
                    };
                    if !peer.answer(&mut stream, request, &stop2) {
                        break;
                    }
                }
            }
        });
        Self { addr, stop }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

/// The state of a [`MisbehavingServer`].
struct Peer {
    data: Vec<u8>,
    misbehaviour: Misbehaviour,
    meta: ft_protocol::FileMeta,
    corrupt_left: usize,
}

impl Peer {
    fn next_meta(&mut self) -> ft_protocol::FileMeta {
        if self.misbehaviour == Misbehaviour::EverChanging {
            self.meta.mtime_secs += 1;
        }
        self.meta
    }

    /// Answers one request; false when the connection should end.
    fn answer(
        &mut self,
        stream: &mut TcpStream,
        request: ft_protocol::Request,
        stop: &AtomicBool,
    ) -> bool {
        use ft_protocol::{Request, Response};
        let send = |stream: &mut TcpStream, response: &Response| {
            let frame = ft_protocol::codec::encode(response).expect("encodes");
            stream.write_all(&frame).is_ok()
        };
        match request {
            Request::Hello { .. } => {
                let version = match self.misbehaviour {
                    Misbehaviour::Version(version) => version,
                    _ => ft_protocol::VERSION,
                };
                send(stream, &Response::Welcome { version })
            }
            Request::Stat { .. } => {
                let meta = self.next_meta();
                send(stream, &Response::Meta(meta))
            }
            Request::Checkpoints { .. } => false,
            Request::List { .. } => self.list(stream, stop),
            Request::Get { offset, .. } => self.get(stream, offset, stop),
        }
    }

    fn list(&mut self, stream: &mut TcpStream, stop: &AtomicBool) -> bool {
        use ft_protocol::{Entry, EntryKind, Response};
        let send = |stream: &mut TcpStream, response: &Response| {
            let frame = ft_protocol::codec::encode(response).expect("encodes");
            stream.write_all(&frame).is_ok()
        };
        let meta = self.next_meta();
        let entry = |path: String| Entry {
            path,
            kind: EntryKind::File,
            size: meta.size,
            mtime_secs: meta.mtime_secs,
            mtime_nanos: meta.mtime_nanos,
            sha256: None,
        };
        match self.misbehaviour {
            Misbehaviour::HostileListing => {
                let entries = HOSTILE_PATHS
                    .iter()
                    .map(|p| entry((*p).to_owned()))
                    .collect();
                send(stream, &Response::Entries(entries))
                    && send(stream, &Response::ListEnd { skipped: 0 })
            }
            Misbehaviour::EndlessListing => {
                let mut next = 0u64;
                while !stop.load(Ordering::Relaxed) {
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

    fn get(&mut self, stream: &mut TcpStream, offset: u64, stop: &AtomicBool) -> bool {
        use ft_protocol::{ChainHasher, Response, CHUNK_SIZE, MAX_DATA};
        let send = |stream: &mut TcpStream, response: &Response| {
            let frame = ft_protocol::codec::encode(response).expect("encodes");
            stream.write_all(&frame).is_ok()
        };
        let meta = self.next_meta();
        if !send(stream, &Response::Meta(meta)) {
            return false;
        }
        match self.misbehaviour {
            Misbehaviour::OversizedFrame => {
                let _ = stream.write_all(&0xffff_fff0u32.to_be_bytes());
                thread::sleep(Duration::from_millis(500));
                return false;
            }
            Misbehaviour::Stall => {
                let first = self.data.len().min(MAX_DATA);
                let _ = send(stream, &Response::Data(self.data[..first].to_vec().into()));
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(POLL);
                }
                return false;
            }
            Misbehaviour::EndlessData => {
                let zeros = vec![0u8; MAX_DATA];
                let mut hasher = ChainHasher::new();
                let mut pos = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    hasher.update(&zeros);
                    pos += MAX_DATA as u64;
                    if !send(stream, &Response::Data(zeros.clone().into())) {
                        return false;
                    }
                    if pos.is_multiple_of(CHUNK_SIZE) {
                        let state = hasher.state().expect("boundary");
                        let index = pos / CHUNK_SIZE;
                        if !send(stream, &Response::Checkpoint { index, state }) {
                            return false;
                        }
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                return false;
            }
            _ => {}
        }
        let corrupt = self.corrupt_left > 0;
        self.corrupt_left = self.corrupt_left.saturating_sub(1);
        let bad_chunk = match self.misbehaviour {
            Misbehaviour::Corrupt { chunk, .. } => Some(chunk),
            _ => None,
        };
        let end = match self.misbehaviour {
            Misbehaviour::FewerBytes => self.data.len() / 2,
            _ => self.data.len(),
        };
        let mut hasher = ChainHasher::new();
        hasher.update(&self.data[..offset as usize]);
        let mut pos = offset as usize;
        while pos < end {
            let next = (pos + MAX_DATA).min(end);
            hasher.update(&self.data[pos..next]);
            let mut piece = self.data[pos..next].to_vec();
            if corrupt
                && Some(pos as u64 / CHUNK_SIZE) == bad_chunk
                && (pos as u64).is_multiple_of(CHUNK_SIZE)
            {
                piece[0] ^= 0xff;
            }
            if !send(stream, &Response::Data(piece.into())) {
                return false;
            }
            if (next as u64).is_multiple_of(CHUNK_SIZE) {
                let state = hasher.state().expect("boundary");
                let index = next as u64 / CHUNK_SIZE;
                if !send(stream, &Response::Checkpoint { index, state }) {
                    return false;
                }
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

impl Drop for MisbehavingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The peak resident memory (VmHWM) of a running process, in KiB; `None`
/// once it has gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
