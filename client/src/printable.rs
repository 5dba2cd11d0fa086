//! Text made safe to print: the one place every line ftget shows passes
//! through on its way to the terminal (stderr, stdout, the progress bar),
//! so that nothing a server or the disk names can drive the terminal
//! (retitle it, clear it, move the cursor), forge a line of its own, or
//! reorder what the reader sees.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

// Which characters act on the terminal instead of showing: the protocol's
// one rule, which the server's logs follow too.
use ft_protocol::text::acts;

/// `text` with each character that would act shown as an escape instead:
/// `\x1b` up to U+00FF, `\u{202e}` above; every other character, UTF-8
/// names included, as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        // Writing to a String cannot fail.
        let _ = match c {
            c if !acts(c) => write!(shown, "{c}"),
            c if u32::from(c) <= 0xff => write!(shown, "\\x{:02x}", u32::from(c)),
            c => write!(shown, "\\u{{{:x}}}", u32::from(c)),
        };
    }
    Cow::Owned(shown)
}

/// A JSON formatter that writes each character that would act, inside
/// strings, as a JSON `\uXXXX` escape: the same JSON value, safe on a
/// terminal, written as it is serialized. (serde_json escapes the C0
/// controls itself, but not DEL, C1 or the bidi controls.)
pub struct PrintableJson;

impl serde_json::ser::Formatter for PrintableJson {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| acts(c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            // Every character that acts is in the Basic Multilingual Plane.
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// The name this program was run as (`ftget` or `ftput`), for the lines
/// both print; `ftget` if it cannot be told.
pub(crate) fn program() -> &'static str {
    static NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let arg0 = std::env::args_os().next().unwrap_or_default();
        match std::path::Path::new(&arg0)
            .file_name()
            .and_then(|n| n.to_str())
        {
            Some(name) if name.starts_with("ftput") => "ftput",
            _ => "ftget",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_would_drive_the_terminal_is_shown_escaped() {
        assert!(matches!(printable("plain/name.txt"), Cow::Borrowed(_)));
        assert_eq!(printable("é日本/ok"), "é日本/ok");
        assert_eq!(
            printable("\u{1b}]0;TITLE\u{7}\u{1b}[2J"),
            r"\x1b]0;TITLE\x07\x1b[2J"
        );
        assert_eq!(printable("a\nb\r\tc\u{7f}"), r"a\x0ab\x0d\x09c\x7f");
        assert_eq!(printable("\u{9b}31m"), r"\x9b31m");
        assert_eq!(printable("txt.\u{202e}exe"), r"txt.\u{202e}exe");
        assert_eq!(
            printable("\u{2066}\u{2069}\u{200f}"),
            r"\u{2066}\u{2069}\u{200f}"
        );
    }

    #[test]
    fn json_stays_the_same_value_and_becomes_printable() {
        let name = "é\u{1b}[2J\u{9b}\u{7f}\u{202e}x";
        let mut out = Vec::new();
        let mut json = serde_json::Serializer::with_formatter(&mut out, PrintableJson);
        serde::Serialize::serialize(&serde_json::json!({ name: name }), &mut json).expect("json");
        let shown = String::from_utf8(out).expect("UTF-8");
        assert!(!shown.chars().any(acts), "{shown}");
        assert!(shown.contains('é'), "UTF-8 stays readable: {shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).expect("still JSON");
        assert_eq!(back[name], name, "keys too");
    }
}
