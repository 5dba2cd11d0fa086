//! `Garage`: a real three-node Garage cluster on 127.0.0.1, started for one
//! test by the repository's `scripts/garage-cluster`, with objects put by
//! curl's SigV4 (the secret in a curl config file, never in an argument);
//! nodes stopped and started again; every node killed by its PID when the
//! handle drops. Clusters run one at a time: three nodes each, on 2 cores.
//! And `Haproxy`: HAProxy in TCP mode in front of several servers.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::process::{collect, kill_and_reap, wait_until, OutputWithin, START_TIMEOUT};

/// The script that starts and stops a cluster.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage-cluster")
}

/// One cluster at a time in a test process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Clusters started by this process: each takes ports of its own.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// Longest a cluster takes to start or stop (the script's own waits are
/// bounded well within it).
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(90);

/// A running cluster with one bucket and a key that may read and write it.
pub struct Garage {
    dir: tempfile::TempDir,
    pub bucket: String,
    /// The S3 endpoints of the three nodes, comma-separated, node 1 first.
    pub endpoints: String,
    key_id: String,
    secret: String,
    region: String,
    _turn: MutexGuard<'static, ()>,
}

impl Garage {
    /// Starts a cluster and waits for its `garage cluster ready` line.
    pub fn start() -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::tempdir().expect("tempdir");
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        // Below the ephemeral ports (32768 on), which clients' sockets take:
        // 20000 to 31983 in all. Clusters run one at a time, each stopped
        // before the next, so three slots per process are enough.
        let base = 20_000 + (std::process::id() % 120) * 100 + (n % 3) * 30;
        let output = Command::new(script())
            .args([
                "start",
                path_str(dir.path()),
                "--port-base",
                &base.to_string(),
            ])
            .stdin(Stdio::null())
            .output_within(CLUSTER_TIMEOUT)
            .expect("scripts/garage-cluster start ends in time");
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !stdout.contains("garage cluster ready") {
            let stop = Command::new(script())
                .args(["stop", path_str(dir.path())])
                .output_within(CLUSTER_TIMEOUT);
            drop(stop);
            panic!(
                "the Garage cluster did not start (is garage 2.5 installed? \
                 scripts/install-test-deps installs it):\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let env = std::fs::read_to_string(dir.path().join("s3.env")).expect("s3.env");
        let value = |name: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in s3.env"))
                .to_owned()
        };
        Self {
            bucket: value("FT_S3_BUCKET"),
            endpoints: value("FT_S3_ENDPOINTS"),
            key_id: value("AWS_ACCESS_KEY_ID"),
            secret: value("AWS_SECRET_ACCESS_KEY"),
            region: value("AWS_REGION"),
            dir,
            _turn: turn,
        }
    }

    /// The secret access key, to check that it is never shown.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The environment ftserve reads the store from, with these
    /// credentials; and the endpoints, node 1 first.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_with_secret(&self.secret)
    }

    /// [`Garage::env`] with another secret access key.
    pub fn env_with_secret(&self, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
            ("AWS_REGION", self.region.clone()),
            ("FTSERVE_S3_ENDPOINT", self.endpoints.clone()),
        ]
    }

    /// `s3://BUCKET/PREFIX`, as ftserve takes it.
    pub fn root(&self, prefix: &str) -> PathBuf {
        PathBuf::from(format!("s3://{}/{prefix}", self.bucket))
    }

    /// Puts `data` at `key` of the bucket (replacing what is there). The
    /// key goes into the URL as it is, `..` and all.
    pub fn put(&self, key: &str, data: &[u8]) {
        let body = self.dir.path().join("body");
        std::fs::write(&body, data).expect("write the body");
        let config = self.dir.path().join("curl.cfg");
        // In a file in the test's own folder (0700), not in curl's arguments.
        std::fs::write(
            &config,
            format!("user = \"{}:{}\"\n", self.key_id, self.secret),
        )
        .expect("write curl.cfg");
        let first = self.endpoints.split(',').next().expect("an endpoint");
        let output = Command::new("curl")
            .args([
                "-sS",
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("-K")
            .arg(&config)
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.region))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-T"])
            .arg(&body)
            .arg(format!("{first}/{}/{key}", self.bucket))
            .output_within(CLUSTER_TIMEOUT)
            .expect("curl ends in time");
        let code = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            code,
            "200",
            "PUT {key:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills node `k` (1 to 3) at once.
    pub fn node_stop(&self, k: u32) {
        self.script(&["node-stop", path_str(self.dir.path()), &k.to_string()]);
    }

    /// Starts node `k` again and waits until it answers.
    pub fn node_start(&self, k: u32) {
        self.script(&["node-start", path_str(self.dir.path()), &k.to_string()]);
    }

    fn script(&self, args: &[&str]) {
        let output = Command::new(script())
            .args(args)
            .output_within(CLUSTER_TIMEOUT)
            .expect("scripts/garage-cluster ends in time");
        assert!(
            output.status.success(),
            "garage-cluster {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let dir = self.dir.path();
        let _ = Command::new(script())
            .args(["stop", path_str(dir)])
            .output_within(CLUSTER_TIMEOUT);
        // Whatever the script left: every node by its PID.
        for k in 1..=3 {
            let pid = std::fs::read_to_string(dir.join(format!("node{k}.pid")));
            if let Some(pid) = pid.ok().and_then(|text| text.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// HAProxy in TCP mode on 127.0.0.1, spreading connections over servers in
/// turn, and sending a connection whose server is gone to the next one.
pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy in front of `servers` and waits until it accepts.
    pub fn start(servers: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = {
            let (listener, addr) = crate::background::listen();
            drop(listener);
            addr
        };
        let mut config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  \
             timeout server 60s\n  retries 3\n  option redispatch 1\n\
             frontend ft\n  bind {addr}\n  default_backend ftserve\n\
             backend ftserve\n  balance roundrobin\n"
        );
        for (n, server) in servers.iter().enumerate() {
            config.push_str(&format!("  server s{n} {server}\n"));
        }
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts (apt-get install haproxy)");
        let logs = collect(child.stderr.take().expect("stderr piped"));
        // HAProxy prints no line when it listens: it accepts once it does.
        let up = wait_until(START_TIMEOUT, || TcpStream::connect(addr).is_ok());
        if !up {
            kill_and_reap(&mut child);
            panic!("haproxy did not listen on {addr}: {}", logs.text());
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`, as ftget takes it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}
