//! `Server`: a real `ftserve` started for one test, found by the address it
//! prints, its log kept, and killed when the handle drops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::bins::bin;
use crate::env::state_dir;
use crate::process::{
    collect, kill_and_reap, signal, wait_bounded, wait_until, within, Drained, DRAIN_TIMEOUT,
    START_TIMEOUT,
};

/// A running `ftserve` on 127.0.0.1 with a free port.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Drained,
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

    fn launch(
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
        let stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        // Read on a thread: a server that hangs before its banner would
        // leave a plain read waiting for ever.
        let banner = within(START_TIMEOUT, move || {
            stdout
                .lines()
                .map_while(Result::ok)
                .find_map(|line| Some(line.split_once("listening on ")?.1.trim().to_owned()))
        });
        let Some(Some(addr)) = banner else {
            kill_and_reap(&mut child);
            panic!("ftserve did not print `listening on` within {START_TIMEOUT:?}");
        };
        let addr = addr.parse().expect("address after `listening on`");
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
