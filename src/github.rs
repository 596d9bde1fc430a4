//! `export --format github`: the two things a GitHub Actions step must do to
//! hand secrets to later steps — mask them, then add them to `$GITHUB_ENV`.
//!
//! Masks first: the runner hides a string in logs only from the moment it has
//! read its `::add-mask::` command, so every line of every secret is masked on
//! stdout (and stdout flushed) before any value is written anywhere. Every line,
//! because a mask of a multi-line value does not hide its lines one by one in a
//! log (PEM keys leaked that way). Plain values are not masked: they are not
//! secrets, and masking `info` would blank every "info" in the logs.
//!
//! Values go to `$GITHUB_ENV` in the runner's multi-line form
//! `NAME<<DELIMITER`, value, `DELIMITER`, with a random delimiter that does not
//! occur in the value: `NAME=value` breaks on the first newline, and a fixed
//! delimiter (`EOF`) lets a value end the block early and inject variables.

use crate::error::{Error, Result};

/// Workflow-command data escaping, as the runner unescapes it (actions/toolkit
/// `escapeData`): without it, a secret holding `%0A` would be masked as a
/// different string than the one that is printed.
fn escape_data(line: &str, out: &mut Vec<u8>) {
    for c in line.chars() {
        match c {
            '%' => out.extend_from_slice(b"%25"),
            '\r' => out.extend_from_slice(b"%0D"),
            '\n' => out.extend_from_slice(b"%0A"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// A value as text, or an error naming `name`: the runner reads both the
/// workflow commands and `$GITHUB_ENV` as UTF-8, and would change other bytes.
pub fn text<'a>(name: &str, value: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(value).map_err(|_| {
        Error::usage(format!(
            "{name}: value is not UTF-8, which GitHub Actions cannot carry unchanged; nothing was written"
        ))
        .with_hint("deliver it as a file instead (set --as-file), or use exec")
    })
}

/// `::add-mask::` for every non-blank line of `value`.
pub fn masks(value: &str, out: &mut Vec<u8>) {
    for line in value.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        out.extend_from_slice(b"::add-mask::");
        escape_data(line, out);
        out.push(b'\n');
    }
}

/// `NAME<<DELIMITER\nvalue\nDELIMITER\n`, with a fresh random delimiter not
/// found in `value`.
pub fn env_entry(name: &str, value: &str, out: &mut Vec<u8>) -> Result<()> {
    // The runner takes the newline before the delimiter line, `\n` or `\r\n`,
    // as the end of the value: a final `\r` would be lost.
    if value.ends_with('\r') {
        return Err(Error::usage(format!(
            "{name}: value ends in a carriage return, which $GITHUB_ENV cannot carry; nothing was written"
        )));
    }
    let delimiter = loop {
        let mut raw = [0u8; 16];
        crate::envelope::random_bytes(&mut raw);
        let d: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let d = format!("ghadelimiter_{d}");
        // 128 random bits: a collision is not expected, but it is checked.
        if !value.contains(&d) {
            break d;
        }
    };
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"<<");
    out.extend_from_slice(delimiter.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(delimiter.as_bytes());
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_masked_and_escaped_as_the_runner_unescapes() {
        let mut out = Vec::new();
        masks("-----BEGIN-----\r\nab%0Acd\n\n  \nlast", &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "::add-mask::-----BEGIN-----\n::add-mask::ab%250Acd\n::add-mask::last\n"
        );
    }

    #[test]
    fn the_delimiter_is_random_and_absent_from_the_value() -> crate::error::TestResult {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        env_entry("K", "x\nEOF\n", &mut a)?;
        env_entry("K", "x\nEOF\n", &mut b)?;
        assert_ne!(a, b);
        let text = String::from_utf8(a)?;
        let first = text.lines().next().unwrap_or_default();
        let delimiter = first.strip_prefix("K<<").unwrap_or_default();
        assert!(
            delimiter.starts_with("ghadelimiter_") && delimiter.len() == 45,
            "{first}"
        );
        assert!(text.ends_with(&format!("\nx\nEOF\n\n{delimiter}\n")[1..]));
        assert!(env_entry("K", "ends in cr\r", &mut Vec::new()).is_err());
        Ok(())
    }
}
