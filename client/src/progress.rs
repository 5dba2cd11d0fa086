//! The progress display: one bar on stderr when it is a terminal, hidden
//! otherwise. For one file it follows that file; for a job of many files it
//! counts files done and bytes across all of them. Every text it shows is
//! made printable first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::printable::printable;

/// How often the bar redraws by itself.
const TICK: Duration = Duration::from_millis(200);

/// A handle on the display; cheap to clone and to update from any thread.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    /// `Some((done, total))` files for a job of many files.
    files: Option<Arc<(AtomicU64, u64)>>,
}

impl Progress {
    /// A bar for one file, `name`, shown only when `visible`.
    pub fn new(name: &str, visible: bool) -> Self {
        let bar = Self::bar(visible);
        bar.set_message(printable(name).into_owned());
        Self { bar, files: None }
    }

    /// A bar for `files` files of `bytes` bytes in all, shown only when `visible`.
    pub fn many(files: u64, bytes: u64, visible: bool) -> Self {
        let bar = Self::bar(visible);
        bar.set_length(bytes);
        let progress = Self {
            bar,
            files: Some(Arc::new((AtomicU64::new(0), files))),
        };
        progress.files_done_add(0);
        progress
    }

    fn bar(visible: bool) -> ProgressBar {
        if !visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(TICK);
        bar
    }

    /// A tracker for one file's bytes.
    pub(crate) fn tracker(&self) -> Tracker {
        Tracker {
            bar: self.bar.clone(),
            single: self.files.is_none(),
            at: 0,
        }
    }

    /// Counts one more file finished (verified, up to date or failed).
    pub(crate) fn file_done(&self) {
        self.files_done_add(1);
    }

    fn files_done_add(&self, n: u64) {
        if let Some(files) = &self.files {
            let done = files.0.fetch_add(n, Ordering::Relaxed) + n;
            self.bar.set_message(format!("{done}/{} files", files.1));
        }
    }

    /// Prints a line above the bar (or plainly on stderr when it is hidden).
    pub fn line(&self, text: &str) {
        let text = printable(text);
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the bar from the screen.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// One file's share of the bar: moves it by what changed since last time, so
/// many files can share one bar and a retry can take back unverified bytes.
#[derive(Clone)]
pub(crate) struct Tracker {
    bar: ProgressBar,
    single: bool,
    at: u64,
}

impl Tracker {
    /// A transfer of a `size`-byte file begins at `position`.
    pub fn start(&mut self, size: u64, position: u64) {
        if self.single {
            // The jump to a resumed position is not download speed. The rate
            // estimate forgets the past on `reset_eta` but measures its next
            // step from the last position it saw, so it must see this one
            // first: a tick by hand, which only happens without the ticker.
            self.bar.disable_steady_tick();
            self.bar.set_length(size);
            self.bar.set_position(position);
            self.bar.tick();
            self.bar.reset_eta();
            self.bar.enable_steady_tick(TICK);
            self.at = position;
        } else {
            self.set(position);
        }
    }

    /// Another share of the same bar, for bytes of the same file that
    /// arrive another way: its next `set` moves the bar by the difference
    /// from `at`.
    pub fn share(&self, at: u64) -> Tracker {
        Tracker {
            bar: self.bar.clone(),
            single: self.single,
            at,
        }
    }

    /// Bytes its other shares moved the bar by: the next `set` or `start`
    /// moves it from there (taking back what they counted, if less).
    pub fn moved(&mut self, bytes: u64) {
        self.at += bytes;
    }

    /// Bytes of the file now on disk.
    pub fn set(&mut self, position: u64) {
        if position >= self.at {
            self.bar.inc(position - self.at);
        } else {
            self.bar.dec(self.at - position);
        }
        self.at = position;
    }

    /// Bytes of a partial checked before a resume: a one-file bar moves by
    /// them (the resume's `start` then sets it where the transfer begins);
    /// a bar of many files leaves them out, as they are not new bytes.
    pub fn checked(&self, bytes: u64) {
        if self.single {
            self.bar.inc(bytes);
        }
    }

    /// A status note in place of the file name; only a one-file bar shows it.
    pub fn note(&self, text: String) {
        if self.single {
            self.bar.set_message(printable(&text).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_bar_cannot_drive_the_terminal() {
        let progress = Progress::new("\u{1b}]0;TITLE\u{7}a", false);
        assert_eq!(progress.bar.message(), r"\x1b]0;TITLE\x07a");
        let tracker = progress.tracker();
        tracker.note("b\u{202e}c".to_owned());
        assert_eq!(progress.bar.message(), r"b\u{202e}c");
    }
}
