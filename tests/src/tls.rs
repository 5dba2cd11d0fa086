//! The peers and files of the identity, token and wire tests: an ftserve
//! whose banner (its fingerprint) is kept, ftget with a configuration home
//! and environment of the test's own, token files made by `ftserve token`,
//! a CA and a server certificate made in the test, a passive relay that
//! records every byte it carries, an active interceptor that ends the
//! client's TLS with a key of its own, and a plain-socket probe.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::background::{accept, listen, Stop};
use crate::bins::bin;
use crate::env::{config_home, state_dir};
use crate::ftget::Run;
use crate::process::{OutputWithin, RUN_TIMEOUT, START_TIMEOUT};
use crate::raw::IO_TIMEOUT;
use crate::server::Server;

/// The settings of ftget and ftserve that come from the environment: none
/// may leak in from the shell that runs the tests.
const INHERITED: [&str; 9] = [
    "FTGET_PIN",
    "FTGET_STRICT",
    "FTGET_CA",
    "FTGET_TOKEN",
    "FTGET_TOKEN_FILE",
    "FTSERVE_TOKEN_FILE",
    "FTSERVE_TLS_CERT",
    "FTSERVE_TLS_KEY",
    "FTSERVE_LISTEN",
];

/// A running `ftserve` whose banner is kept: the fingerprint it prints and
/// the address it listens on. A [`Server`] underneath (its methods reach
/// through), started without any ft setting of the shell's.
pub struct TlsServer {
    server: Server,
    pub addr: SocketAddr,
    /// `SHA256:...`, as the banner gives it.
    pub fingerprint: String,
}

impl TlsServer {
    /// Starts `ftserve --listen LISTEN EXTRA... ROOT` with `env` (which may
    /// give another `FTSERVE_STATE_DIR` than the test process's shared one)
    /// and waits for its banner.
    pub fn start(root: &Path, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(bin("ftserve"));
        for name in INHERITED {
            command.env_remove(name);
        }
        let server = Server::launch(command, listen, root, extra, env);
        let banner = server.banner();
        let fingerprint = banner
            .split_once("fingerprint ")
            .and_then(|(_, rest)| rest.split(',').next())
            .unwrap_or_else(|| panic!("no fingerprint in the banner: {banner}"))
            .to_owned();
        Self {
            addr: server.addr,
            server,
            fingerprint,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; afterwards
    /// [`Server::logs`] holds everything it wrote. The port is free again
    /// once this returns `Some`.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.server
            .stop(nix::sys::signal::Signal::SIGTERM, START_TIMEOUT)
    }
}

impl std::ops::Deref for TlsServer {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for TlsServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// Runs `ftserve ARGS...` with `env` to its end, within [`START_TIMEOUT`]:
/// for a start that must fail, and for `ftserve token`.
pub fn ftserve_output(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin("ftserve"));
    for name in INHERITED {
        command.env_remove(name);
    }
    command
        .env("FTSERVE_STATE_DIR", state_dir())
        .args(args)
        .envs(env.iter().copied())
        .output_within(START_TIMEOUT)
        .expect("ftserve runs")
}

/// `ftserve token add NAME --token-file FILE [--path SCOPE]`: the token it
/// printed alone on its last line.
pub fn add_token(file: &Path, name: &str, scope: Option<&str>) -> String {
    let file = file.to_str().expect("UTF-8 path");
    let mut args = vec!["token", "add", name, "--token-file", file];
    if let Some(scope) = scope {
        args.extend(["--path", scope]);
    }
    let out = ftserve_output(&args, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "token add: {out:?}");
    let token = stdout.lines().last().expect("a last line").to_owned();
    assert!(
        token.starts_with("ftk_") && !token.contains(' '),
        "the last line is the token alone: {stdout:?}"
    );
    token
}

/// Starts `ftget ARGS...` in `dir` with `env` set over the defaults
/// (XDG_CONFIG_HOME the shared [`config_home`]), without waiting. The
/// settings ftget reads from the environment are cleared first.
pub fn spawn_ftget_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(bin("ftget"));
    for name in INHERITED {
        command.env_remove(name);
    }
    command
        .env("XDG_CONFIG_HOME", config_home())
        .envs(env.iter().copied())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ftget starts")
}

/// Runs `ftget ARGS...` in `dir` with `env` to its end (bounded by
/// [`RUN_TIMEOUT`]).
pub fn ftget_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    finish_run(spawn_ftget_env(dir, args, env), args)
}

/// Waits (bounded by [`RUN_TIMEOUT`]) for a spawned ftget and collects
/// what it printed; fails the test if it had to be killed.
pub fn finish_run(child: Child, args: &[&str]) -> Run {
    crate::ftget::run_to_end(child, args, |_| {})
}

/// A client's own configuration home (`XDG_CONFIG_HOME`), so that what it
/// knows of servers is the test's alone.
pub struct ClientHome {
    dir: tempfile::TempDir,
}

impl ClientHome {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("config tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where ftget keeps the servers it knows.
    pub fn known_servers(&self) -> PathBuf {
        self.dir.path().join("ft/known_servers")
    }

    /// The known-servers file's text; `None` while there is none.
    pub fn known_text(&self) -> Option<String> {
        std::fs::read_to_string(self.known_servers()).ok()
    }

    /// Writes the known-servers file, as earlier runs would have.
    pub fn write_known(&self, text: &str) {
        let file = self.known_servers();
        std::fs::create_dir_all(file.parent().expect("a folder")).expect("mkdir");
        std::fs::write(file, text).expect("write known_servers");
    }

    /// [`ftget_env`] with this home, `env` on top.
    pub fn ftget(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        finish_run(self.spawn(dir, args, env), args)
    }

    /// [`spawn_ftget_env`] with this home, `env` on top.
    pub fn spawn(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
        let home = self.path().to_str().expect("UTF-8 path");
        let mut all = vec![("XDG_CONFIG_HOME", home)];
        all.extend_from_slice(env);
        spawn_ftget_env(dir, args, &all)
    }
}

impl Default for ClientHome {
    fn default() -> Self {
        Self::new()
    }
}

/// `SHA256:` and the unpadded standard base64 of SHA-256 of `spki` (a DER
/// SubjectPublicKeyInfo), computed here, apart from the product's code.
pub fn spki_fingerprint(spki: &[u8]) -> String {
    let digest = Sha256::digest(spki);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Files of a certificate authority made in the test, and of a server
/// certificate it signed.
pub struct CaFiles {
    /// The CA's certificate, what a client trusts (`ftget --ca`).
    pub ca: PathBuf,
    /// The server's chain: its certificate, then the CA's.
    pub chain: PathBuf,
    /// The server's private key, mode 0600.
    pub key: PathBuf,
    /// The fingerprint of the server key's SubjectPublicKeyInfo.
    pub fingerprint: String,
}

/// Makes a CA and a server certificate signed by it for `names` (host
/// names or IP addresses) in `dir`.
pub fn make_ca(dir: &Path, names: &[&str]) -> CaFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ft test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "ft test server");
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");

    let files = CaFiles {
        ca: dir.join("ca.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("server-key.pem"),
        fingerprint: spki_fingerprint(&rcgen::PublicKeyData::subject_public_key_info(&server_key)),
    };
    std::fs::write(&files.ca, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(
        &files.chain,
        format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )
    .expect("write chain.pem");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&files.key)
        .and_then(|mut file| file.write_all(server_key.serialize_pem().as_bytes()))
        .expect("write server-key.pem");
    files
}

/// How long one read of a relayed socket blocks before the relay looks at
/// its [`Stop`] again.
const READ_SLICE: Duration = Duration::from_millis(100);

/// A passive TCP relay on 127.0.0.1 in front of a server: it forwards every
/// byte unchanged, both ways, and keeps a copy, as an eavesdropper on the
/// path would.
pub struct Recorder {
    pub addr: SocketAddr,
    stop: Stop,
    /// Everything the clients sent, in order of arrival.
    upstream: Arc<Mutex<Vec<u8>>>,
    /// Everything the server sent.
    downstream: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicU32>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Recorder {
    pub fn start(target: SocketAddr) -> Self {
        Self::spawn(target, None)
    }

    /// The same on a slow link: the server's bytes are carried at most
    /// `bytes_per_second`, so that the server keeps meeting a full socket.
    pub fn throttled(target: SocketAddr, bytes_per_second: u64) -> Self {
        Self::spawn(target, Some(bytes_per_second))
    }

    fn spawn(target: SocketAddr, rate: Option<u64>) -> Self {
        let (listener, addr) = listen();
        let stop = Stop::after(RUN_TIMEOUT);
        let recorder = Self {
            addr,
            stop: stop.clone(),
            upstream: Arc::default(),
            downstream: Arc::default(),
            connections: Arc::default(),
            streams: Arc::default(),
        };
        let (up, down) = (
            Arc::clone(&recorder.upstream),
            Arc::clone(&recorder.downstream),
        );
        let (connections, streams) = (
            Arc::clone(&recorder.connections),
            Arc::clone(&recorder.streams),
        );
        thread::spawn(move || {
            while let Some(client) = accept(&listener, &stop) {
                let Ok(server) = TcpStream::connect_timeout(&target, IO_TIMEOUT) else {
                    continue;
                };
                connections.fetch_add(1, Ordering::Relaxed);
                for stream in [&client, &server] {
                    stream
                        .set_read_timeout(Some(READ_SLICE))
                        .expect("read timeout");
                    streams
                        .lock()
                        .unwrap()
                        .push(stream.try_clone().expect("clone"));
                }
                let pairs = [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                        Arc::clone(&up),
                        None,
                    ),
                    (server, client, Arc::clone(&down), rate),
                ];
                for (from, to, copy, rate) in pairs {
                    let stop = stop.clone();
                    thread::spawn(move || record_one_way(from, to, &copy, rate, &stop));
                }
            }
        });
        recorder
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections it carried.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// What it saw so far: the clients' bytes, then the server's.
    pub fn recorded(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.upstream.lock().unwrap().clone(),
            self.downstream.lock().unwrap().clone(),
        )
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.set();
        for stream in self.streams.lock().unwrap().iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to`, keeping a copy in `copy`, at most `rate` bytes a
/// second if given, until `from` ends or `stop` is due; then passes the end
/// on.
fn record_one_way(
    mut from: TcpStream,
    mut to: TcpStream,
    copy: &Mutex<Vec<u8>>,
    rate: Option<u64>,
    stop: &Stop,
) {
    // Small reads on a slow link, so that its rate is even.
    let mut buf = vec![0u8; if rate.is_some() { 16 * 1024 } else { 64 * 1024 }];
    let started = Instant::now();
    let mut carried = 0u64;
    while !stop.is_due() {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                copy.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                carried += n as u64;
                if let Some(rate) = rate {
                    let due = Duration::from_secs_f64(carried as f64 / rate as f64);
                    stop.sleep_until(started + due);
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// What an [`Interceptor`] got out of its clients.
#[derive(Debug, Default)]
struct Catch {
    /// TLS handshakes with a client that completed.
    handshakes: AtomicU32,
    /// TLS handshakes with a client that failed (the client refused it).
    refused: AtomicU32,
    /// The clients' bytes it read inside TLS: the ft conversation in clear.
    plaintext: Mutex<Vec<u8>>,
}

/// An active man in the middle on 127.0.0.1: it ends the client's TLS with
/// a key of its own (a state folder of its own), opens its own TLS to the
/// real server (pinned), and forwards the ft conversation between them,
/// keeping what the client sent in clear.
pub struct Interceptor {
    pub addr: SocketAddr,
    /// The fingerprint of its own key, which the client is shown.
    pub fingerprint: String,
    catch: Arc<Catch>,
    runtime: Option<tokio::runtime::Runtime>,
    _state: tempfile::TempDir,
}

impl Interceptor {
    /// In front of the server at `upstream`, whose key is `upstream_pin`.
    pub fn start(upstream: SocketAddr, upstream_pin: &str) -> Self {
        let state = tempfile::tempdir().expect("interceptor state");
        let identity =
            ft_server::identity::Identity::in_state_dir(state.path()).expect("own identity");
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().expect("config"));
        let settings = ft_client::trust::TrustSettings {
            pin: Some(upstream_pin.parse().expect("a fingerprint")),
            ..Default::default()
        };
        let trust = ft_client::trust::Trust::new("127.0.0.1", upstream.port(), settings)
            .expect("trust in the real server");
        let connector = tokio_rustls::TlsConnector::from(trust.config());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binds");
        let addr = listener.local_addr().expect("address");
        let catch = Arc::new(Catch::default());
        let caught = Arc::clone(&catch);
        runtime.spawn(async move {
            // Bounded like every harness server: it ends with the test run.
            let _ = tokio::time::timeout(RUN_TIMEOUT, async {
                while let Ok((client, _)) = listener.accept().await {
                    let (acceptor, connector) = (acceptor.clone(), connector.clone());
                    let caught = Arc::clone(&caught);
                    tokio::spawn(intercept(client, upstream, acceptor, connector, caught));
                }
            })
            .await;
        });
        Self {
            addr,
            fingerprint: identity.fingerprint.to_string(),
            catch,
            runtime: Some(runtime),
            _state: state,
        }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Client handshakes that completed, and that the client broke off.
    pub fn handshakes(&self) -> (u32, u32) {
        (
            self.catch.handshakes.load(Ordering::Relaxed),
            self.catch.refused.load(Ordering::Relaxed),
        )
    }

    /// What clients sent it inside TLS.
    pub fn plaintext(&self) -> Vec<u8> {
        self.catch.plaintext.lock().unwrap().clone()
    }
}

impl Drop for Interceptor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One intercepted connection: TLS with the client on the interceptor's
/// key, TLS with the server, and the bytes between them, each step bounded.
async fn intercept(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    catch: Arc<Catch>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let client = match tokio::time::timeout(IO_TIMEOUT, acceptor.accept(client)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            catch.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    catch.handshakes.fetch_add(1, Ordering::Relaxed);
    let server = async {
        let tcp = tokio::net::TcpStream::connect(upstream).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .map_err(std::io::Error::other)?
            .to_owned();
        connector.connect(name, tcp).await
    };
    let Ok(Ok(server)) = tokio::time::timeout(IO_TIMEOUT, server).await else {
        return;
    };
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            catch.plaintext.lock().unwrap().extend_from_slice(&buf[..n]);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let _ = tokio::time::timeout(RUN_TIMEOUT, async { tokio::join!(up, down) }).await;
}

/// What a plain socket got back for what it sent.
#[derive(Debug)]
pub struct Probe {
    /// The local port it used, as the server's log names it.
    pub port: u16,
    /// Everything the peer sent before the end.
    pub reply: Vec<u8>,
    /// Whether the peer closed (an end or a reset) within the limit.
    pub closed: bool,
    /// How long the close took.
    pub took: Duration,
}

/// Connects to `addr`, sends `bytes` (closing the sending half after them
/// if `then_end`), and reads until the peer closes, at most `limit`. A
/// write the peer cuts short (it closed with bytes unread) is not an error.
pub fn probe(addr: SocketAddr, bytes: &[u8], then_end: bool, limit: Duration) -> Probe {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connects");
    let port = stream.local_addr().expect("local address").port();
    let started = Instant::now();
    let _ = stream.write_all(bytes);
    if then_end {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = started + limit;
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            // A reset is a close too.
            Err(_) => break true,
        }
    };
    Probe {
        port,
        reply,
        closed,
        took: started.elapsed(),
    }
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}
