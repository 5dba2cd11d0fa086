//! `Server`: a real `ftserve` started for one test, found by the address it
//! prints, its log kept, and killed when the handle drops.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use ft_server::identity::{CERT_FILE, KEY_FILE};

use crate::bins::bin;
use crate::env::state_dir;
use crate::process::{
    collect, kill_and_reap, signal, wait_bounded, wait_until, Drained, DRAIN_TIMEOUT, START_TIMEOUT,
};
use crate::raw::shared_identity;

/// A running `ftserve` on 127.0.0.1 with a free port.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Drained,
    stdout: Drained,
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
    /// tree may not be. So is the shared identity, into a state folder of
    /// its own there (`scratch/state`, that user's): it cannot read the
    /// shared key, which only its owner may, and it shows the same key as
    /// every other server of the test process.
    pub fn start_unprivileged(root: &Path, scratch: &Path) -> Self {
        let copy = scratch.join("ftserve");
        std::fs::copy(bin("ftserve"), &copy).expect("copy ftserve");
        let state = scratch.join("state");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&state)
            .expect("mkdir state");
        // Made now if no server made it yet.
        shared_identity();
        for file in [KEY_FILE, CERT_FILE] {
            // The copy keeps the mode: 0600 for the key.
            std::fs::copy(state_dir().join(file), state.join(file)).expect("copy the identity");
        }
        let mut command = Command::new(&copy);
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            for path in [state.join(KEY_FILE), state.join(CERT_FILE), state.clone()] {
                std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
            }
            // std drops the supplementary groups when root sets a uid.
            command.uid(65534).gid(65534);
        }
        let state = state.to_str().expect("a UTF-8 scratch path");
        Self::launch(command, "127.0.0.1:0", root, &["--state-dir", state], &[])
    }

    /// Starts `WRAPPER... ftserve --listen 127.0.0.1:0 EXTRA... ROOT`: ftserve
    /// under commands that each change something and exec the next (such
    /// as `setsid` or `unshare`), so the PID is still ftserve's.
    pub fn start_wrapped(wrapper: &[&str], root: &Path, extra: &[&str]) -> Self {
        let (program, args) = wrapper.split_first().expect("a wrapper command");
        let mut command = Command::new(program);
        command.args(args).arg(bin("ftserve"));
        Self::launch(command, "127.0.0.1:0", root, extra, &[])
    }

    fn spawn(listen: &str, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(Command::new(bin("ftserve")), listen, root, extra, env)
    }

    /// Starts `COMMAND --listen LISTEN EXTRA... ROOT` with `env` and waits
    /// for it to say where it listens.
    pub(crate) fn launch(
        mut command: Command,
        listen: &str,
        root: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = command
            .env("FTSERVE_STATE_DIR", state_dir())
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
        // Drained for as long as the server runs: it prints its banner in
        // two writes, and a pipe closed after the first would fail the
        // second (ftserve then exits). Bounded: the wait has a deadline.
        let stdout = collect(child.stdout.take().expect("stdout piped"));
        let listening = |text: &str| {
            text.lines()
                .find_map(|line| Some(line.split_once("listening on ")?.1.trim().to_owned()))
        };
        let mut addr = None;
        wait_until(START_TIMEOUT, || {
            // A whole line: the address is the end of one.
            let text = stdout.text();
            let lines = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            addr = listening(lines);
            addr.is_some() || stdout.is_closed()
        });
        let Some(addr) = addr else {
            kill_and_reap(&mut child);
            panic!("ftserve did not print `listening on` within {START_TIMEOUT:?}");
        };
        let addr = addr.parse().expect("address after `listening on`");
        Self {
            child,
            addr,
            logs,
            stdout,
        }
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

    /// What the server printed on stdout so far: its banner.
    pub fn banner(&self) -> String {
        self.stdout.text()
    }

    /// What the server logged on stderr so far.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Sends `sig` and waits (bounded) for the exit.
    /// Once it has exited, [`Server::logs`] holds everything it wrote.
    pub fn stop(&mut self, sig: nix::sys::signal::Signal, limit: Duration) -> Option<ExitStatus> {
        signal(self.child.id(), sig);
        let status = wait_bounded(&mut self.child, limit);
        if status.is_some() {
            wait_until(DRAIN_TIMEOUT, || self.logs.is_closed());
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}
