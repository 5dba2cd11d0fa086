//! Child processes, and every wait on them bounded: pipes drained on
//! threads, exits awaited against a deadline, signals, peak memory.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a server may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest any single ftget run may take in a test.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Polling interval of bounded waits.
pub const POLL: Duration = Duration::from_millis(10);

/// Longest the harness waits, once a child has ended, for its pipes to close.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a child writes on one pipe, gathered as it comes.
pub(crate) struct Drained(Arc<Mutex<Vec<u8>>>);

impl Drained {
    /// All of it so far, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Whether the pipe has closed: the drain thread has let go of the buffer.
    pub(crate) fn is_closed(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

/// Drains a child's pipe on a thread so the child never blocks on it. The
/// thread reads until the pipe closes, which it does when the child ends
/// (and every child is killed when its handle drops); whoever waits for
/// that waits with a deadline ([`Drained::is_closed`]).
pub(crate) fn collect(pipe: impl Read + Send + 'static) -> Drained {
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
    Drained(sink)
}

/// Everything written on `pipe` by a child that has ended: read until the
/// pipe closes, or what came within 5 s if something still holds it open.
pub fn read_pipe(pipe: impl Read + Send + 'static) -> String {
    let drained = collect(pipe);
    wait_until(DRAIN_TIMEOUT, || drained.is_closed());
    drained.text()
}

/// Kills `child` and reaps it. The wait is bounded: SIGKILL can be neither
/// caught nor ignored, so it returns as soon as the kernel has ended the
/// process.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for `child` to exit, at most `limit`; kills it if it does not.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    wait_ticking(child, limit, |_| {})
}

/// [`wait_bounded`], calling `tick` with the child's PID every [`POLL`]
/// while it runs (before it is reaped, while /proc still has it).
fn wait_ticking(
    child: &mut Child,
    limit: Duration,
    mut tick: impl FnMut(u32),
) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        tick(child.id());
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            kill_and_reap(child);
            return None;
        }
        thread::sleep(POLL);
    }
}

/// How a child with piped stdout and stderr ended, and what it printed.
pub(crate) struct Finished {
    /// `None` when it ran past its limit and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Drains `child`'s stdout and stderr while it runs and waits for its end,
/// at most `limit` (killing it then), calling `tick` with its PID meanwhile.
pub(crate) fn finish(mut child: Child, limit: Duration, tick: impl FnMut(u32)) -> Finished {
    let stdout = collect(child.stdout.take().expect("stdout piped"));
    let stderr = collect(child.stderr.take().expect("stderr piped"));
    let status = wait_ticking(&mut child, limit, tick);
    // The drain threads finish once the pipes close with the process.
    wait_until(DRAIN_TIMEOUT, || stdout.is_closed() && stderr.is_closed());
    let bytes = |drained: &Drained| drained.0.lock().unwrap().clone();
    Finished {
        status,
        stdout: bytes(&stdout),
        stderr: bytes(&stderr),
    }
}

/// [`Command::output`] with a limit: stdin empty, stdout and stderr
/// captured, the child killed and the test failed if it runs past `limit`.
pub trait OutputWithin {
    /// Runs the command to its end, at most `limit`; `Err` if it cannot start.
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output> {
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let done = finish(child, limit, |_| {});
        let Some(status) = done.status else {
            panic!(
                "{self:?} did not finish within {limit:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&done.stdout),
                String::from_utf8_lossy(&done.stderr)
            );
        };
        Ok(Output {
            status,
            stdout: done.stdout,
            stderr: done.stderr,
        })
    }
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

/// Runs `job` on a thread and waits for what it returns, at most `limit`:
/// `None` if it has not returned by then. For a blocking call that has no
/// timeout of its own (a read on a child's pipe); the thread is left to
/// finish, or not, on its own.
pub fn within<T: Send + 'static>(
    limit: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(job());
    });
    rx.recv_timeout(limit).ok()
}

/// Sends `sig` to the process `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, sig).expect("signal delivered");
}

/// The peak resident memory (VmHWM) of a running process, in KiB; `None`
/// once it has gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A running process's resident memory now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A figure in KiB from `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time a running process has used (user and system), in seconds;
/// `None` once it has gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks as f64 / per_second as f64)
}

/// Bytes a running process has read through `read(2)` and its kin, files
/// and sockets alike (`rchar`); `None` once it has gone.
pub fn bytes_read(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("rchar:"))
        .and_then(|rest| rest.trim().parse().ok())
}
