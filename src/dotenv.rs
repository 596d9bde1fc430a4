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
        // From the untrimmed line: a quoted value may end its first line in spaces.
        let body = trim_start(line);
        let body = body.strip_prefix(b"export ").map(trim_start).unwrap_or(body);
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
        let start_line = line_no;
        let raw = trim_start(&body[eq + 1..]);
        let value = match raw.first() {
            Some(&quote) if quote == b'\'' || quote == b'"' => {
                // Over the following lines until the closing quote, as python-dotenv
                // and node's dotenv read it: single quotes take the text as it is,
                // double quotes unescape it.
                let take = if quote == b'\'' {
                    take_until_single_quote
                } else {
                    unescape_until_quote
                };
                let capacity = raw.len() + rest.len();
                let Some((value, after)) = quoted(&raw[1..], &mut rest, &mut line_no, capacity, take) else {
                    let kind = if quote == b'\'' { "single" } else { "double" };
                    return Err(Error::usage(format!(
                        "{origin}:{start_line}: {name}: unterminated {kind} quote"
                    )));
                };
                check_trailing(origin, line_no, after)?;
                value
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

/// A quoted value from `first` (just after its opening quote) on, continued over
/// the lines of `rest` until `take` finds the closing quote: the value and what
/// follows the quote on its line; `None` when the input ends first. Sized for
/// `capacity` so the buffer never grows (a grown vector leaves an unwiped copy);
/// wiped when dropped, also when we give up.
fn quoted<'a>(
    first: &'a [u8],
    rest: &mut &'a [u8],
    line_no: &mut usize,
    capacity: usize,
    take: fn(&[u8], &mut Vec<u8>) -> Option<usize>,
) -> Option<(Vec<u8>, &'a [u8])> {
    let mut value = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    let mut cur = first;
    loop {
        if let Some(consumed) = take(cur, &mut value) {
            return Some((std::mem::take(&mut *value), &cur[consumed..]));
        }
        if rest.is_empty() {
            return None;
        }
        value.push(b'\n');
        let (next, after) = split_line(rest);
        *rest = after;
        *line_no += 1;
        cur = next;
    }
}

/// One line of a single-quoted value: taken as it is up to the closing quote
/// (the bytes consumed, the quote included), or all of it when there is none.
fn take_until_single_quote(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    match s.iter().position(|&b| b == b'\'') {
        Some(end) => {
            out.extend_from_slice(&s[..end]);
            Some(end + 1)
        }
        None => {
            out.extend_from_slice(s);
            None
        }
    }
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

/// `NAME="value"`, escaping `\ " $` and newlines: `edit`'s text, which only our
/// own parser reads back, and which must carry every value. Not for `export`:
/// sh would expand backticks in it, and node's dotenv keeps `\"` as it is.
pub fn format_editable(name: &str, value: &[u8], out: &mut Vec<u8>) {
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

/// Why `export --format dotenv` cannot write a value (the hint of its error).
pub const DOTENV_RULE: &str = "dotenv output is read alike by sh (`set -a; . FILE`), python-dotenv and node's dotenv only for UTF-8 values without CR, NUL or `${`: single-quoted when the value has no `'`, `\\\\` or final `\\`; else double-quoted when it has no `\"`, `\\`, `$` or backtick. Use --format shell or json for this one";

/// `NAME='value'` for `export --format dotenv`, in the one form that sh
/// (`set -a; . FILE`), python-dotenv and node's dotenv all read back as the
/// exact bytes, with nothing expanded or run. Single quotes first, as the shell
/// format: nothing in them is special to sh, and both parsers take them
/// literally (python-dotenv reads `\\` and `\'` in them as escapes, so those
/// are out). A value with `'` is double-quoted if it holds nothing sh or the
/// parsers treat specially there (`" \ $` and backticks). Anything else is
/// refused, naming the variable: no form is read alike. CR is out everywhere
/// (both parsers turn it into a newline), so are NUL and non-UTF-8 bytes, and
/// `${`, which python-dotenv expands even in single quotes.
pub fn format_dotenv(name: &str, value: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let refuse = || {
        Error::usage(format!(
            "{name}: its value cannot be written as dotenv that sh and dotenv parsers read back alike"
        ))
        .with_hint(DOTENV_RULE)
    };
    if std::str::from_utf8(value).is_err()
        || value.iter().any(|&b| b == b'\r' || b == 0)
        || value.windows(2).any(|w| w == b"${")
    {
        return Err(refuse());
    }
    let single =
        !value.contains(&b'\'') && !value.windows(2).any(|w| w == b"\\\\") && value.last() != Some(&b'\\');
    let quote = if single {
        b'\''
    } else if !value.iter().any(|b| matches!(b, b'"' | b'\\' | b'$' | b'`')) {
        b'"'
    } else {
        return Err(refuse());
    };
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.push(quote);
    out.extend_from_slice(value);
    out.push(quote);
    out.push(b'\n');
    Ok(())
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
            // Every control character and bidi override as \uXXXX: the output may
            // be read on a terminal (`lint --format json` quotes the file).
            c if crate::terminal::is_unsafe(c) => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
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

    #[test]
    fn json_strings_escape_every_control_character_and_bidi_override() {
        let mut out = Vec::new();
        json_string("a\u{7f}b\u{9b}c\u{202e}d\u{1b}", &mut out);
        assert_eq!(out, b"\"a\\u007fb\\u009bc\\u202ed\\u001b\"");
    }

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
        format_editable("V", &v, &mut out);
        let back = parse("o", &out)?;
        assert_eq!(back[0].1.expose(), &v[..]);
        Ok(())
    }

    #[test]
    fn dotenv_export_single_quotes_and_parses_back_exactly() -> TestResult {
        let v = b"$(touch X) `id` $HOME \"q\" a\\b\nline 2  ".to_vec();
        let mut out = Vec::new();
        format_dotenv("V", &v, &mut out)?;
        assert_eq!(out, [b"V='".as_slice(), &v, b"'\n"].concat());
        assert_eq!(parse("o", &out)?[0].1.expose(), &v[..]);
        Ok(())
    }

    #[test]
    fn dotenv_export_double_quotes_a_value_with_a_single_quote() -> TestResult {
        let mut out = Vec::new();
        format_dotenv("V", b"it's", &mut out)?;
        assert_eq!(out, b"V=\"it's\"\n");
        assert_eq!(parse("o", &out)?[0].1.expose(), b"it's");
        Ok(())
    }

    #[test]
    fn dotenv_export_refuses_what_sh_and_parsers_read_differently() {
        for v in [
            b"it's $HOME".as_slice(),
            b"it's \\",
            b"a\\\\b",
            b"ends in \\",
            b"${HOME}",
            b"cr\r",
            b"nul\0",
            b"\xff",
        ] {
            let err = format_dotenv("SECRET_NAME", v, &mut Vec::new()).unwrap_err();
            assert!(err.to_string().starts_with("SECRET_NAME: "), "{err}");
        }
    }

    #[test]
    fn shell_quoting_escapes_single_quotes() {
        let mut out = Vec::new();
        format_shell("V", b"it's", &mut out);
        assert_eq!(out, b"export V='it'\\''s'\n");
    }
}
