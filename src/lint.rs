//! `kmsenv lint`: what can be said about a file without AWS, without
//! credentials and without any secret — for a commit hook and for CI.
//!
//! Findings: a plain value (or the literal text of a template) that looks like
//! a secret; a direct value not bound to its name; a file without keys that
//! kmsenv would refuse (plain and kms values mixed, a MAC or sealed values
//! without keys); a format-1 file; a file with keys but no MAC; and, under a
//! trust pin, a file not wrapped by a trusted key.
//!
//! A finding says where (file:line:column), which variable, and what to do. It
//! never carries a value, nor a part of one: the shape it matched and the
//! value's length are enough to find it, and a lint report ends up in CI logs.
//! The shapes are hand-written (no regex crate: a few prefix and character-class
//! checks do, for a fraction of the size).

use crate::document::{ALLOW_PLAIN, Inspection, Pos, VAR_CONTEXT_KEY, Value};
use crate::template::{self, Piece};
use crate::trust::TrustPin;

/// One thing to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub at: Pos,
    /// The variable, when the finding is about one.
    pub variable: Option<String>,
    /// A stable identifier, for tools.
    pub rule: &'static str,
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// Every finding about one file, in file order.
pub fn lint(seen: &Inspection, pin: Option<&TrustPin>) -> Vec<Finding> {
    let doc = &seen.doc;
    let mut out = Vec::new();
    let file = |at: Pos, rule, message: String, fix: &str| Finding {
        at,
        variable: None,
        rule,
        message,
        fix: fix.to_string(),
    };
    if doc.is_legacy() {
        out.push(file(
            seen.version_at,
            "format-1",
            "format version 1: its MAC does not cover the wrapping keys, so a writer could add their own"
                .into(),
            "run `kmsenv upgrade` (needs kms:Decrypt on every wrapping key) and commit the result",
        ));
    }
    if doc.has_keys() && doc.mac.is_none() {
        out.push(file(
            seen.head_at,
            "no-mac",
            "the file has [[kmsenv.keys]] but no `mac`: every reading command will refuse it".into(),
            "restore the file from a trusted copy, or re-verify it with `kmsenv check --fix-mac`",
        ));
    }
    if let Some(refusal) = &seen.refusal {
        let plain = doc
            .entries
            .iter()
            .find(|e| matches!(e.value, Value::Plain(_) | Value::Template(_) | Value::Ref(_)));
        let direct = doc.entries.iter().find(|e| matches!(e.value, Value::Kms { .. }));
        match (plain, direct) {
            (Some(p), Some(d)) if !doc.has_keys() => out.push(Finding {
                at: p.at,
                variable: Some(p.name.clone()),
                rule: "keyless-mix",
                message: format!(
                    "the file has no [[kmsenv.keys]] (so no MAC) but mixes plain values like this one with kms values \
                     ({} at line {}): anyone who can write it could have added the plain ones; kmsenv refuses to read it",
                    d.name, d.at.line
                ),
                fix: "move the plain values to a file of their own, or to a file with keys (`kmsenv init --key KEY`)".into(),
            }),
            _ => out.push(file(
                seen.head_at,
                "refused",
                refusal.message().to_string(),
                refusal.hint().unwrap_or("restore the file from a trusted copy"),
            )),
        }
    } else if let Some(pin) = pin
        && let Err(e) = pin.admit(doc, false)
    {
        out.push(file(
            seen.head_at,
            "untrusted",
            e.message().to_string(),
            e.hint().unwrap_or(
                "make sure the file is the one your team wrote: its data key must be wrapped by a trusted key",
            ),
        ));
    }
    for e in &doc.entries {
        let one = |rule, message: String, fix: String| Finding {
            at: e.at,
            variable: Some(e.name.clone()),
            rule,
            message,
            fix,
        };
        match &e.value {
            Value::Plain(text) if !seen.allow_plain.contains(&e.name) => {
                if let Some(shape) = secret_shape(text) {
                    out.push(one(
                        "plain-secret",
                        format!(
                            "plain value ({} characters, stored in clear) looks like {shape}",
                            text.chars().count()
                        ),
                        format!(
                            "seal it: `printf %s \"$VALUE\" | kmsenv set {}` (and rotate it if it was ever pushed); \
                             if it is not a secret, end the line with `# {ALLOW_PLAIN}`",
                            e.name
                        ),
                    ));
                }
            }
            Value::Template(text) if !seen.allow_plain.contains(&e.name) => {
                // Only the template's own text is in clear; what `${NAME}` brings is not.
                let literal: String = template::parse(text)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| match p {
                        Piece::Text(t) => t,
                        Piece::Dollar => "$",
                        Piece::Ref(_) => " ",
                    })
                    .collect();
                if let Some(shape) = secret_shape(&literal) {
                    out.push(one(
                        "plain-secret",
                        format!("the text of this template (stored in clear) holds {shape}"),
                        format!(
                            "seal that part as a variable of its own (`kmsenv set NAME`) and use ${{NAME}} in the template; \
                             if it is not a secret, end the line with `# {ALLOW_PLAIN}`"
                        ),
                    ));
                }
            }
            Value::Kms { context, .. } if !context.contains_key(VAR_CONTEXT_KEY) => out.push(one(
                "unbound-kms",
                format!(
                    "this kms value is not bound to its name (no \"{VAR_CONTEXT_KEY}\" in its context): \
                     a writer of the file could move it to another variable"
                ),
                format!("re-set it with `kmsenv set --kms {}`", e.name),
            )),
            _ => {}
        }
    }
    out.sort_by_key(|f| (f.at.line, f.at.column));
    out
}

/// What secret `value` looks like, if any: a known token shape, a private key,
/// a URL with a password, or a long random-looking string.
pub fn secret_shape(value: &str) -> Option<&'static str> {
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY") {
        return Some("a private key (PEM block)");
    }
    if value.contains("hooks.slack.com/services/") {
        return Some("a Slack webhook URL");
    }
    if url_has_password(value) {
        return Some("a URL with a password in it");
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || "_-+/=.".contains(c);
    for word in value.split(|c: char| !is_word(c)).filter(|w| !w.is_empty()) {
        if let Some(shape) = token_shape(word) {
            return Some(shape);
        }
    }
    None
}

fn token_shape(word: &str) -> Option<&'static str> {
    const AWS: [&str; 4] = ["AKIA", "ASIA", "ABIA", "ACCA"];
    for p in AWS {
        for (i, _) in word.match_indices(p) {
            let rest = &word[i + 4..];
            let body = rest
                .bytes()
                .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                .count();
            if body == 16 {
                return Some("an AWS access key id");
            }
        }
    }
    let tokens: [(&str, usize, &str); 12] = [
        ("ghp_", 30, "a GitHub token"),
        ("gho_", 30, "a GitHub token"),
        ("ghu_", 30, "a GitHub token"),
        ("ghs_", 30, "a GitHub token"),
        ("ghr_", 30, "a GitHub token"),
        ("github_pat_", 22, "a GitHub token"),
        ("xoxb-", 10, "a Slack token"),
        ("xoxp-", 10, "a Slack token"),
        ("xoxa-", 10, "a Slack token"),
        ("xapp-", 10, "a Slack token"),
        ("sk_live_", 16, "a Stripe live key"),
        ("rk_live_", 16, "a Stripe live key"),
    ];
    for (prefix, min, shape) in tokens {
        if let Some(i) = word.find(prefix) {
            let body = word[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .count();
            if body >= min {
                return Some(shape);
            }
        }
    }
    let parts: Vec<&str> = word.split('.').collect();
    if let [h, p, _] = parts.as_slice()
        && h.starts_with("eyJ")
        && p.starts_with("eyJ")
        && h.len() >= 10
        && p.len() >= 10
    {
        return Some("a JWT");
    }
    parts.into_iter().find_map(random_looking)
}

/// Long strings of base64 or hex characters with high entropy. Thresholds are
/// bits per character relative to the most a string of that length can have
/// (a 20-character string has at most log2(20) bits of distinct characters).
fn random_looking(word: &str) -> Option<&'static str> {
    let word = word.trim_end_matches('=');
    if word.starts_with('/') || word.contains("//") {
        return None; // a path or a URL
    }
    let len = word.chars().count();
    let hex = word.chars().all(|c| c.is_ascii_hexdigit());
    let has = |f: fn(&char) -> bool| word.chars().any(|c| f(&c));
    if hex && len >= 32 && has(char::is_ascii_digit) && has(char::is_ascii_alphabetic) {
        return (entropy(word) >= 3.0).then_some("a long random hex string");
    }
    let base64 = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+/_-".contains(c));
    if base64
        && len >= 20
        && has(char::is_ascii_digit)
        && has(char::is_ascii_uppercase)
        && has(char::is_ascii_lowercase)
    {
        let most = (len.min(64) as f64).log2();
        return (entropy(word) >= 0.8 * most).then_some("a long random string (high entropy)");
    }
    None
}

/// Shannon entropy in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// `scheme://user:password@host…` with a non-empty password.
fn url_has_password(value: &str) -> bool {
    value.match_indices("://").any(|(i, _)| {
        let rest = &value[i + 3..];
        let authority = rest.split(['/', '?', '#', ' ', '\n']).next().unwrap_or("");
        match authority.rfind('@') {
            Some(at) => authority[..at]
                .split_once(':')
                .is_some_and(|(_, pw)| !pw.trim().is_empty()),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_token_shapes_are_found() {
        let cases = [
            ("AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
            ("id=ASIAY34FZKBOKMUTVV7A;", "an AWS access key id"),
            ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "a GitHub token"),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                "a GitHub token",
            ),
            (
                "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
                "a Slack token",
            ),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe live key"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
                "a private key (PEM block)",
            ),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "a JWT",
            ),
            (
                "postgres://app:hunter2@db.internal:5432/app",
                "a URL with a password in it",
            ),
            (
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "a long random string (high entropy)",
            ),
            (
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "a long random hex string",
            ),
        ];
        for (value, shape) in cases {
            assert_eq!(secret_shape(value), Some(shape), "{value}");
        }
    }

    #[test]
    fn ordinary_settings_are_not_secrets() {
        for value in [
            "info",
            "db.internal:5432",
            "https://api.example.com/v1/things?limit=10",
            "postgres://app@db.internal/app",
            "/usr/local/lib/x86_64-linux-gnu/libssl.so.3",
            "550e8400-e29b-41d4-a716-446655440000",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "ThisIsALongCamelCaseIdentifierWithoutDigits",
            "en_US.UTF-8",
            "",
        ] {
            assert_eq!(secret_shape(value), None, "{value}");
        }
    }
}
