//! Log lines kept printable: every string an event carries (a client's path,
//! an error that repeats it, a file name from the disk) has its control
//! characters escaped before it reaches stderr, so no peer and no file name
//! can forge a log line or send the terminal a control sequence.
//!
//! One rule ([`ft_protocol::text::acts`], which ftget's output follows
//! too), spelt by [`escape`], applied at two points, one per log format.
//! Human lines are escaped field by field
//! ([`PrintableFields`]), so the formatter's own colours still reach a
//! terminal. JSON lines are escaped whole as they are written
//! ([`PrintableWriter`]): they carry no colour, serde_json has already
//! escaped C0 controls, and what is left (DEL, C1, bidi) only ever stands
//! inside a JSON string, where `\uXXXX` keeps the line valid JSON.

use std::fmt;
use std::io;

use ft_protocol::text::acts;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

/// How an escaped character is spelt.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    /// As Rust's `{:?}` spells it (`\u{1b}`), like the quoted fields beside it.
    Human,
    /// As JSON spells it (`\u001b`), valid inside a JSON string.
    Json,
}

/// Writes `text` to `out` with every unsafe character escaped: `\n`, `\r`,
/// `\t`, and the rest by code point.
fn escape(text: &str, spelling: Spelling, out: &mut impl fmt::Write) -> fmt::Result {
    let mut rest = text;
    while let Some((at, ch)) = rest.char_indices().find(|&(_, ch)| acts(ch)) {
        out.write_str(&rest[..at])?;
        match (ch, spelling) {
            ('\n', _) => out.write_str("\\n")?,
            ('\r', _) => out.write_str("\\r")?,
            ('\t', _) => out.write_str("\\t")?,
            (_, Spelling::Human) => write!(out, "\\u{{{:x}}}", u32::from(ch))?,
            // Every unsafe character is in the Basic Multilingual Plane.
            (_, Spelling::Json) => write!(out, "\\u{:04x}", u32::from(ch))?,
        }
        rest = &rest[at + ch.len_utf8()..];
    }
    out.write_str(rest)
}

/// A `fmt::Write` that escapes everything written through it.
struct Escaping<W> {
    out: W,
    spelling: Spelling,
}

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(text, self.spelling, &mut self.out)
    }
}

/// The human format's fields (the message included), as tracing-subscriber
/// writes them, escaped. Field names lose their italics on a terminal: the
/// escaping writer underneath takes no colour.
#[derive(Debug, Default)]
pub struct PrintableFields(DefaultFields);

impl<'writer> FormatFields<'writer> for PrintableFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut escaping = Escaping {
            out: &mut writer,
            spelling: Spelling::Human,
        };
        self.0.format_fields(Writer::new(&mut escaping), fields)
    }
}

/// Makes writers that escape each event's line, all but its final newline.
/// tracing-subscriber formats an event whole, then hands it over in one
/// `write_all` (`fmt_layer.rs`, `on_event`), so a line is never split.
#[derive(Debug, Clone, Copy)]
pub struct PrintableWriter<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for PrintableWriter<M> {
    type Writer = EscapingLines<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingLines(self.0.make_writer())
    }
}

/// An `io::Write` that escapes each line handed to it, JSON-style.
#[derive(Debug)]
pub struct EscapingLines<W>(W);

impl<W: io::Write> io::Write for EscapingLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(escape_line(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `line` with everything but its final newline escaped, JSON-style.
fn escape_line(line: &[u8]) -> String {
    // The formatter writes from a `String`: always UTF-8.
    let text = String::from_utf8_lossy(line);
    let (body, end) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (&*text, ""),
    };
    let mut out = String::with_capacity(text.len() + 8);
    // Writing to a String cannot fail.
    let _ = escape(body, Spelling::Json, &mut out);
    out.push_str(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human(text: &str) -> String {
        let mut out = String::new();
        escape(text, Spelling::Human, &mut out).expect("writes to a String");
        out
    }

    #[test]
    fn control_bidi_and_separators_are_escaped() {
        assert_eq!(human("plain path/ü.txt"), "plain path/ü.txt");
        assert_eq!(
            human("a\nb\rc\td\x1b[2Je\x07\x7f\u{9b}f\u{202e}g\u{2028}h\u{2066}\0"),
            "a\\nb\\rc\\td\\u{1b}[2Je\\u{7}\\u{7f}\\u{9b}f\\u{202e}g\\u{2028}h\\u{2066}\\u{0}"
        );
    }

    #[test]
    fn a_json_line_stays_json_and_keeps_its_newline() {
        let logged = "x\u{7f}\u{85}\u{202e}\u{2029}\n\x1b";
        let mut json = serde_json::json!({ "message": logged }).to_string();
        json.push('\n');
        let line = escape_line(json.as_bytes());
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert!(line.chars().all(|ch| ch == '\n' || !acts(ch)), "{line:?}");
        assert!(line.contains("\\u007f\\u0085\\u202e\\u2029"), "{line}");
        // The escapes decode back to the very string that was logged.
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["message"], logged);
        assert_eq!(escape_line(b"no newline"), "no newline");
    }
}
