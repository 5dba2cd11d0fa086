//! Text from a peer or the disk, as a terminal or a log would take it: the
//! one rule, shared by ftget's output and ftserve's logs, for which
//! characters may never be shown raw.

/// Whether `ch` acts on a terminal or on its reader instead of showing: C0
/// controls (newline, carriage return, tab, ESC, …), DEL and C1 controls
/// (all of Unicode's `Cc`), the line and paragraph separators, and the
/// bidirectional controls that reorder what is shown ("Trojan Source").
/// Every such character is in the Basic Multilingual Plane.
pub fn acts(ch: char) -> bool {
    ch.is_control()
        || matches!(
            ch,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_separators_and_bidi_act_and_names_do_not() {
        for ch in [
            '\n', '\r', '\t', '\u{1b}', '\u{7f}', '\u{9b}', '\u{2028}', '\u{202e}',
        ] {
            assert!(acts(ch), "{ch:?}");
        }
        for ch in ['a', ' ', 'é', '日', '\u{200d}', '😀'] {
            assert!(!acts(ch), "{ch:?}");
        }
    }
}
