//! Text that reaches a terminal: strings that came from a file or from AWS are
//! shown with their control characters escaped (SECURITY.md, DESIGN §8).
//!
//! A key ARN, a context value or a KMS error message is written by whoever
//! wrote the file or runs the endpoint. Printed raw, `\n` forges a second
//! message line and `ESC[8m` hides what follows; bidirectional overrides make
//! text read differently from what it is ("Trojan Source"). Every line kmsenv
//! writes to stderr, and every such field it writes to stdout, goes through
//! [`escape`]. Values printed on purpose (`get`, `export`) do not: they are the
//! command's output, byte for byte.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls, DEL,
/// and the Unicode bidirectional controls.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character written as an escape (`\n`, `\t`, `\r`,
/// `\x1b`, `\u{202e}`); a backslash stays as it is. Borrowed when nothing changes,
/// which is every well-formed ARN, name and path.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && is_unsafe(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab";
        assert!(matches!(escape(arn), Cow::Borrowed(s) if s == arn));
        assert_eq!(escape("café ✓ \\"), "café ✓ \\");
    }

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("x\u{1b}[8my\u{7f}\u{9b}"), "x\\x1b[8my\\x7f\\x9b");
        assert_eq!(escape("\u{202e}gpj.exe"), "\\u{202e}gpj.exe");
        assert!(!escape("\u{0}\u{1}\u{2066}").chars().any(is_unsafe));
    }
}
