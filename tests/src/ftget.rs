//! Running the real `ftget`: started in a test's folder, waited for within
//! [`RUN_TIMEOUT`], and what it printed kept as a [`Run`].

use std::path::Path;
use std::process::Child;

use crate::process::{finish, peak_rss_kib, RUN_TIMEOUT};

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
    crate::tls::spawn_ftget_env(dir, args, &[])
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

/// [`ftget_with_peak`], but ftget is killed as soon as its peak passes
/// `cap_kib`: a client that grows without bound is stopped before it takes
/// the machine (its run then has no exit code).
pub fn ftget_with_cap(dir: &Path, args: &[&str], cap_kib: u64) -> (Run, u64) {
    let mut peak = 0;
    let run = run_to_end(spawn_ftget(dir, args), args, |pid| {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if peak > cap_kib {
            // It may have ended meanwhile: then there is nothing to kill.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    (run, peak)
}

/// Waits (bounded by [`RUN_TIMEOUT`]) for `child` to end, calling `tick`
/// with its PID while it runs, and collects what it printed.
pub(crate) fn run_to_end(child: Child, args: &[&str], tick: impl FnMut(u32)) -> Run {
    let done = finish(child, RUN_TIMEOUT, tick);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let run = Run {
        code: done.status.and_then(|s| s.code()),
        stdout: text(&done.stdout),
        stderr: text(&done.stderr),
    };
    assert!(
        done.status.is_some(),
        "ftget {args:?} did not finish within {RUN_TIMEOUT:?}: {run:?}"
    );
    run
}
