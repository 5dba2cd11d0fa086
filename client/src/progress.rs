//! The progress bar: drawn on stderr when it is a terminal, hidden otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A handle on the bar; cheap to clone and to update from any thread.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `name`, shown only when `visible`.
    pub fn new(name: &str, visible: bool) -> Self {
        if !visible {
            return Self {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// Sets the total size and where the transfer starts.
    pub fn start(&self, size: u64, position: u64) {
        self.bar.set_length(size);
        self.bar.set_position(position);
        self.bar.reset_eta();
    }

    /// Bytes of the file now on disk.
    pub fn set(&self, position: u64) {
        self.bar.set_position(position);
    }

    /// A status note in place of the file name, e.g. while verifying a partial.
    pub fn note(&self, text: String) {
        self.bar.set_message(text);
    }

    /// Removes the bar from the screen.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}
