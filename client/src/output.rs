//! What ftget prints: the one-line summaries and error lines on stderr, the
//! JSON objects and listing lines on stdout. Every line leaves through one
//! of three edges here, [`say`], [`write_line`] and [`write_json`] (the
//! progress bar has its own), each of which makes it printable whole: what
//! a server or the disk named, error chains included, cannot drive the
//! terminal.

use std::io::{IsTerminal, Write};

use ft_protocol::{Entry, EntryKind, FileMeta};
use indicatif::HumanBytes;
use serde::Serialize;

use crate::batch::{Done, FileOutcome, Summary};
use crate::error::Chain;
use crate::printable::{printable, PrintableJson};
use crate::progress::Progress;
use crate::transfer::Report;

/// How much to print, and in what form.
#[derive(Debug, Clone, Copy, Default)]
pub struct Show {
    /// `--json`: JSON objects on stdout.
    pub json: bool,
    /// `-q`: nothing but errors.
    pub quiet: bool,
    /// `-v`: a line for every file of a batch.
    pub verbose: bool,
    /// `-h`: listing sizes in human units.
    pub human: bool,
}

impl Show {
    /// Whether to draw a progress bar: on a terminal, unless quiet.
    pub fn bar(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// A one-file download ended verified.
    pub fn downloaded(&self, report: &Report) {
        if self.json {
            print_json(report);
        }
        if !self.quiet {
            say(&format!("ftget: {}", describe(report, "verified")));
        }
    }

    /// A file of a batch ended.
    pub fn file(&self, outcome: &FileOutcome, progress: &Progress) {
        let Ok(done) = &outcome.result else {
            return;
        };
        if self.json {
            print_json(done.report());
        }
        if self.verbose && !self.quiet {
            let how = match done {
                Done::Downloaded(_) => "verified",
                Done::UpToDate(_) => "already up to date",
            };
            progress.line(&format!("ftget: {}", describe(done.report(), how)));
        }
    }

    /// A batch ended: its failures, then its summary.
    pub fn summary(&self, summary: &Summary) {
        for failure in &summary.failures {
            say(&format!(
                "ftget: cannot download {}: {}",
                failure.path, failure.error
            ));
        }
        if self.json {
            print_json(summary);
        }
        if !self.quiet {
            say(&format!("ftget: {}", totals(summary)));
        }
    }

    /// The server left entries of a listing out.
    pub fn left_out(&self, skipped: u64, path: &str) {
        if skipped > 0 && !self.quiet {
            say(&format!(
                "ftget: the server left out {} of {path} it cannot serve",
                count(skipped, "entry", "entries")
            ));
        }
    }

    /// `--list` of a file: the file as its own entry.
    pub fn file_entry(&self, out: &mut impl Write, path: &str, meta: &FileMeta) {
        let name = path.rsplit('/').find(|n| !n.is_empty()).unwrap_or(path);
        let entry = Entry {
            path: name.to_owned(),
            kind: EntryKind::File,
            size: meta.size,
            mtime_secs: meta.mtime_secs,
            mtime_nanos: meta.mtime_nanos,
            sha256: meta.sha256,
        };
        self.entry(out, &entry);
    }

    /// One line (or JSON object) of a listing.
    pub fn entry(&self, out: &mut impl Write, entry: &Entry) {
        let timestamp =
            jiff::Timestamp::new(entry.mtime_secs, 0).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let written = if self.json {
            let json = JsonEntry {
                name: &entry.path,
                kind: match entry.kind {
                    EntryKind::File => "file",
                    EntryKind::Dir => "dir",
                },
                size: entry.size,
                mtime: timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            };
            write_json(out, &json)
        } else {
            let (kind, slash) = match entry.kind {
                EntryKind::File => ('-', ""),
                EntryKind::Dir => ('d', "/"),
            };
            let size = if self.human {
                HumanBytes(entry.size).to_string()
            } else {
                entry.size.to_string()
            };
            let local = timestamp.to_zoned(jiff::tz::TimeZone::system());
            let line = format!(
                "{kind} {size:>12} {} {}{slash}",
                local.strftime("%Y-%m-%d %H:%M"),
                entry.path
            );
            write_line(out, &line)
        };
        if let Err(err) = written {
            say(&format!("ftget: cannot write to stdout: {err}"));
        }
    }
}

/// An error line: what could not be done, then the error and its causes,
/// after the name of the program that failed (ftget or ftput).
pub fn failed(what: Option<&str>, err: &(dyn std::error::Error + 'static)) {
    let program = crate::printable::program();
    match what {
        Some(what) => say(&format!("{program}: {what}: {}", Chain(err))),
        None => say(&format!("{program}: {}", Chain(err))),
    }
}

/// What Ctrl-C leaves behind, and how to pick it up.
pub fn interrupted(what: &str) {
    say(&format!(
        "ftget: interrupted; run the same command again to resume {what}"
    ));
}

/// The edge to stderr: one line, made printable.
pub(crate) fn say(line: &str) {
    eprintln!("{}", printable(line));
}

/// The edge to stdout for text: one line, made printable.
fn write_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{}", printable(line))
}

/// The edge to stdout for JSON: one object a line, made printable as JSON
/// (the same value, with what would act on a terminal as `\uXXXX`), and
/// written as it is serialized.
fn write_json(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let mut json = serde_json::Serializer::with_formatter(&mut *out, PrintableJson);
    value.serialize(&mut json).map_err(std::io::Error::from)?;
    writeln!(out)
}

/// What `--list --json` prints for an entry.
#[derive(Serialize)]
struct JsonEntry<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: String,
}

/// `n` and the noun that goes with it: "1 file", "2 files".
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn totals(summary: &Summary) -> String {
    let mut line = format!(
        "{}, {}: {} downloaded, {} already up to date, {} failed; {} received in {:.2} s",
        count(summary.files, "file", "files"),
        HumanBytes(summary.bytes),
        summary.downloaded,
        summary.up_to_date,
        summary.failed,
        HumanBytes(summary.bytes_received),
        summary.seconds,
    );
    if summary.skipped_by_server > 0 {
        line.push_str(&format!(
            " (the server left out {} it cannot serve: see its log)",
            count(summary.skipped_by_server, "entry", "entries")
        ));
    }
    line
}

/// One JSON object on stdout, as [`write_json`] writes it.
pub(crate) fn print_json(value: &impl Serialize) {
    let mut stdout = std::io::stdout().lock();
    let written = write_json(&mut stdout, value).and_then(|()| stdout.flush());
    if let Err(err) = written {
        let program = crate::printable::program();
        say(&format!("{program}: cannot write to stdout: {err}"));
    }
}

fn describe(report: &Report, how: &str) -> String {
    let resumed = if report.resumed_from > 0 && report.bytes_received > 0 {
        format!(", resumed from {}", HumanBytes(report.resumed_from))
    } else {
        String::new()
    };
    let over = match report.connections {
        0 | 1 => String::new(),
        n => format!(", over {n} connections"),
    };
    let rate = report.bytes_received as f64 / report.seconds.max(1e-6);
    format!(
        "{} -> {}: {} in {:.2} s ({}/s{resumed}{over}), sha256 {} {how}",
        report.path,
        report.output,
        HumanBytes(report.size),
        report.seconds,
        HumanBytes(rate as u64),
        report.sha256,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_cannot_drive_the_terminal() {
        let entry = Entry {
            path: "\u{1b}[2J\u{9b}é\n".into(),
            kind: EntryKind::Dir,
            size: 0,
            mtime_secs: 0,
            mtime_nanos: 0,
            sha256: None,
        };
        let mut out = Vec::new();
        Show::default().entry(&mut out, &entry);
        let line = String::from_utf8(out).expect("UTF-8");
        assert!(line.ends_with(" \\x1b[2J\\x9bé\\x0a/\n"), "{line:?}");
        let mut out = Vec::new();
        let json = Show {
            json: true,
            ..Show::default()
        };
        json.entry(&mut out, &entry);
        let line = String::from_utf8(out).expect("UTF-8");
        assert!(line.contains(r#""name":"\u001b[2J\u009bé\n""#), "{line:?}");
    }

    #[test]
    fn entries_print_as_the_readme_says() {
        let entry = Entry {
            path: "big.bin".into(),
            kind: EntryKind::File,
            size: 20971520,
            mtime_secs: 1_763_757_933,
            mtime_nanos: 0,
            sha256: None,
        };
        let mut out = Vec::new();
        let json = Show {
            json: true,
            ..Show::default()
        };
        json.entry(&mut out, &entry);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"name\":\"big.bin\",\"type\":\"file\",\"size\":20971520,\"mtime\":\"2025-11-21T20:45:33Z\"}\n"
        );
        let mut out = Vec::new();
        Show::default().entry(&mut out, &entry);
        let line = String::from_utf8_lossy(&out);
        assert!(
            line.starts_with("-     20971520 ") && line.ends_with(" big.bin\n"),
            "{line}"
        );
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(2, "file", "files"), "2 files");
    }
}
