//! dotenv text in and out: the parser behind `import`, and the three `export`
//! formats (dotenv, POSIX shell, JSON).
//!
//! The parser accepts what users' `.env` files hold: comments, blank lines, an
//! optional `export ` prefix, unquoted values (an inline ` #` starts a comment),
//! single-quoted literals, and double-quoted values with `\n \r \t \" \\ \$`
//! escapes spanning lines. It does no `${VAR}` expansion: what is in the file is
//! what gets sealed. Errors name the line, never the value.

use crate::document::{check_name, valid_name};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Parse dotenv `text`; `origin` names it in errors.
pub fn parse(origin: &str, text: &[u8]) -> Result<Vec<(String, Secret)>> {
    let mut out: Vec<(String, Secret)> = Vec::new();
    let mut line_no = 0usize;
    let mut rest = text;
    while !rest.is_empty() {
        line_no += 1;
        let (line, after) = split_line(rest);
        rest = after;
        let trimmed = trim(line);
        if trimmed.is_empty() || trimmed[0] == b'#' {
            continue;
        }
        let body = trimmed.strip_prefix(b"export ").map(trim).unwrap_or(trimmed);
        let Some(eq) = body.iter().position(|&b| b == b'=') else {
            return Err(Error::usage(format!("{origin}:{line_no}: expected NAME=VALUE")));
        };
        let name = std::str::from_utf8(trim(&body[..eq]))
            .map_err(|_| Error::usage(format!("{origin}:{line_no}: variable name is not ASCII")))?;
        // Not `check_name` alone: its message quotes the name, and text before an
        // `=` on a malformed line may be part of a value.
        if !valid_name(name) {
            return Err(Error::usage(format!(
                "{origin}:{line_no}: invalid variable name (names must match [A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        check_name(name).map_err(|e| e.context(format!("{origin}:{line_no}")))?;
        let raw = trim_start(&body[eq + 1..]);
        let start_line = line_no;
        let value = match raw.first() {
            Some(b'\'') => match raw[1..].iter().position(|&b| b == b'\'') {
                Some(end) => {
                    check_trailing(origin, line_no, &raw[end + 2..])?;
                    raw[1..end + 1].to_vec()
                }
                None => {
                    return Err(Error::usage(format!(
                        "{origin}:{line_no}: {name}: unterminated single quote"
                    )));
                }
            },
            Some(b'"') => {
                // A double-quoted value may continue over the following lines.
                // Sized for the rest of the input, so it never grows (a grown
                // vector leaves an unwiped copy behind); wiped if we give up.
                let mut value = zeroize::Zeroizing::new(Vec::with_capacity(raw.len() + rest.len()));
                let mut cur = &raw[1..];
                loop {
                    match unescape_until_quote(cur, &mut value) {
                        Some(consumed) => {
                            check_trailing(origin, line_no, &cur[consumed..])?;
                            break;
                        }
                        None if !rest.is_empty() => {
                            value.push(b'\n');
                            let (next, after) = split_line(rest);
                            rest = after;
                            line_no += 1;
                            cur = next;
                        }
                        None => {
                            return Err(Error::usage(format!(
                                "{origin}:{start_line}: {name}: unterminated double quote"
                            )));
                        }
                    }
                }
                std::mem::take(&mut *value)
            }
            _ => {
                let end = raw
                    .windows(2)
                    .position(|w| w == b" #" || w == b"\t#")
                    .unwrap_or(raw.len());
                trim(&raw[..end]).to_vec()
            }
        };
        if let Some(i) = out.iter().position(|(n, _)| n == name) {
            out.remove(i);
        }
        out.push((name.to_string(), Secret::new(value)));
    }
    Ok(out)
}

fn split_line(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &text[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), &text[i + 1..])
        }
        None => (text, &[]),
    }
}

fn trim_start(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    &b[i..]
}

fn trim(b: &[u8]) -> &[u8] {
    let b = trim_start(b);
    let j = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |j| j + 1);
    &b[..j]
}

fn check_trailing(origin: &str, line: usize, after: &[u8]) -> Result<()> {
    let after = trim(after);
    if after.is_empty() || after[0] == b'#' {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{origin}:{line}: unexpected text after the closing quote"
        )))
    }
}

/// Unescape from `s` into `out` up to an unescaped `"`; the bytes consumed
/// (including the quote), or `None` if the line ended first.
fn unescape_until_quote(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' if i + 1 < s.len() => {
                out.push(match s[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    other => other,
                });
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// `NAME="value"`: double-quoted, escaping `\ " $` and newlines, so that our own
/// parser (and dotenv, dotenvx, python-dotenv) reads back the same bytes.
pub fn format_dotenv(name: &str, value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'$' => out.extend_from_slice(b"\\$"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
    out.extend_from_slice(b"\"\n");
}

/// `export NAME='value'`: POSIX single quotes, `'` written as `'\''`. Nothing
/// inside single quotes is special to sh, so `eval` gives back the exact bytes.
pub fn format_shell(name: &str, value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"export ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(b"'\n");
}

/// A JSON string literal; values must be UTF-8 (JSON cannot carry other bytes).
pub fn json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;

    fn values(text: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(parse("t.env", text.as_bytes())?
            .into_iter()
            .map(|(n, s)| (n, s.expose().to_vec()))
            .collect())
    }

    #[test]
    fn parses_the_usual_forms() -> TestResult {
        let got = values(
            "# c\n\nexport A=plain value # note\nB='lit $X \"q\"'\nC=\"a\\nb \\\"q\\\" \\$HOME\"\nD=\"multi\nline\"\nE=\n",
        )?;
        let want: Vec<(String, Vec<u8>)> = vec![
            ("A".into(), b"plain value".to_vec()),
            ("B".into(), b"lit $X \"q\"".to_vec()),
            ("C".into(), b"a\nb \"q\" $HOME".to_vec()),
            ("D".into(), b"multi\nline".to_vec()),
            ("E".into(), b"".to_vec()),
        ];
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let err = parse("t.env", b"A=1\nNOEQUALS\n").unwrap_err();
        assert_eq!(err.to_string(), "t.env:2: expected NAME=VALUE");
        let err = parse("t.env", b"BAD-NAME=1\n").unwrap_err();
        assert!(
            err.to_string().starts_with("t.env:1: invalid variable name"),
            "{err}"
        );
        let err = parse("t.env", b"A=\"open\n").unwrap_err();
        assert!(
            err.to_string().contains("t.env:1: A: unterminated double quote"),
            "{err}"
        );
    }

    #[test]
    fn dotenv_output_parses_back_exactly() -> TestResult {
        let v = b"q\"uo'te \\ $(x) `y`\nline2\r\n=".to_vec();
        let mut out = Vec::new();
        format_dotenv("V", &v, &mut out);
        let back = parse("o", &out)?;
        assert_eq!(back[0].1.expose(), &v[..]);
        Ok(())
    }

    #[test]
    fn shell_quoting_escapes_single_quotes() {
        let mut out = Vec::new();
        format_shell("V", b"it's", &mut out);
        assert_eq!(out, b"export V='it'\\''s'\n");
    }
}
