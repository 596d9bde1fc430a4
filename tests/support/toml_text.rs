//! Editing a kmsenv file's TOML text by hand, as an attacker, a merge or a
//! contributor pasting `aws kms encrypt` output would: find an entry's line and
//! its fields, replace, swap, insert and remove lines. Text, not a TOML library, so
//! that every other byte of the file stays as it was.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The line of `[env]` entry `name` (`NAME = …`).
#[track_caller]
pub fn entry_line<'a>(text: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name} ");
    let prefix_eq = format!("{name}=");
    text.lines()
        .find(|line| {
            let line = line.trim_start();
            (line.starts_with(&prefix) || line.starts_with(&prefix_eq))
                && line[name.len()..].trim_start().starts_with('=')
        })
        .unwrap_or_else(|| panic!("no entry {name} in:\n{text}"))
}

/// True if the file has an `[env]` entry `name`.
pub fn has_entry(text: &str, name: &str) -> bool {
    let prefix = format!("{name} ");
    let prefix_eq = format!("{name}=");
    text.lines().any(|line| {
        let line = line.trim_start();
        (line.starts_with(&prefix) || line.starts_with(&prefix_eq))
            && line[name.len()..].trim_start().starts_with('=')
    })
}

/// The string value of `field = "…"` within a line of TOML.
#[track_caller]
pub fn quoted_field(line: &str, field: &str) -> String {
    for pattern in [format!("{field} = \""), format!("{field}=\"")] {
        if let Some(at) = line.find(&pattern) {
            let rest = &line[at + pattern.len()..];
            let end = rest
                .find('"')
                .unwrap_or_else(|| panic!("unterminated {field} in {line}"));
            return rest[..end].to_string();
        }
    }
    panic!("no {field} = \"…\" in line: {line}");
}

/// The `sealed` text of entry `name`.
#[track_caller]
pub fn sealed_of(text: &str, name: &str) -> String {
    quoted_field(entry_line(text, name), "sealed")
}

/// The `kms` text of entry `name`.
#[track_caller]
pub fn kms_of(text: &str, name: &str) -> String {
    quoted_field(entry_line(text, name), "kms")
}

/// The first `data_key` blob of the file.
#[track_caller]
pub fn data_key_of(text: &str) -> String {
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("data_key"))
        .unwrap_or_else(|| panic!("no data_key in:\n{text}"));
    quoted_field(line, "data_key")
}

/// Replaces exactly one occurrence of `from`.
#[track_caller]
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected exactly one {from:?} in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// Swaps two distinct substrings.
#[track_caller]
pub fn swap(text: &str, a: &str, b: &str) -> String {
    let placeholder = "\u{1}SWAP\u{1}";
    let text = replace_once(text, a, placeholder);
    let text = replace_once(&text, b, a);
    replace_once(&text, placeholder, b)
}

/// Inserts a line right after the `[env]` header (appending the table if missing).
pub fn insert_in_env(text: &str, line: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in text.split_inclusive('\n') {
        out.push_str(l);
        if !done && l.trim() == "[env]" {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            done = true;
        }
    }
    if !done {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n[env]\n");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Removes the line of entry `name`.
#[track_caller]
pub fn remove_entry(text: &str, name: &str) -> String {
    let line = entry_line(text, name).to_string();
    let mut out = String::new();
    let mut removed = false;
    for l in text.split_inclusive('\n') {
        if !removed && l.trim_end_matches('\n') == line {
            removed = true;
            continue;
        }
        out.push_str(l);
    }
    assert!(removed);
    out
}

/// A file without keys, hand-written: only plain and `kms` values, no MAC.
pub fn keyless_file(entries: &[&str]) -> String {
    let mut text = String::from("[kmsenv]\nversion = 2\n\n[env]\n");
    for entry in entries {
        text.push_str(entry);
        text.push('\n');
    }
    text
}

/// A TOML basic string literal for hand-written files. A JSON string is one: the
/// escapes JSON writes (`\"`, `\\`, `\n`, `\uXXXX`, …) are TOML's too.
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string is JSON")
}

/// Base64 (standard, padded), as kmsenv writes blobs.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
