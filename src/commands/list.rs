//! `kmsenv list`: names, kinds and keys — never values, and no KMS call. Key
//! ARNs and context come from the file: they are printed escaped (`terminal`).
//! `--values-hash` is the git `textconv` view: one line per entry with a hash of
//! its stored text, so `git diff` shows which names changed and nothing else.

use sha2::{Digest, Sha256};

use crate::cli::ListArgs;
use crate::document::{Document, Value};
use crate::error::Result;
use crate::kms::region_of;
use crate::run::{Connect, Run, write_stdout};
use crate::template::references;
use crate::terminal::escape;

pub fn run<K: Connect>(run: &Run<K>, args: ListArgs) -> Result<()> {
    let docs = run.load_all()?;
    let mut out = String::new();
    for doc in &docs {
        if args.values_hash {
            hashes(doc, &mut out);
        } else {
            listing(doc, &mut out);
        }
    }
    write_stdout(&[out.as_bytes()])
}

fn listing(doc: &Document, out: &mut String) {
    *out += &format!("{}\n", escape(&doc.path.to_string_lossy()));
    if !doc.context.is_empty() {
        let run: Vec<String> = doc
            .context
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        *out += &format!("  context  {}\n", run.join(" "));
    }
    for k in &doc.keys {
        *out += &format!("  key      {} ({})\n", escape(&k.arn), escape(region_of(&k.arn)));
    }
    let width = doc.entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in &doc.entries {
        let mut line = format!("  {:width$}  {}", e.name, e.value.kind());
        match &e.value {
            Value::Kms { key: Some(k), .. } => line += &format!("  {}", escape(k)),
            // The names it uses (names only: they follow the name rule, nothing to escape).
            Value::Template(t) => line += &format!("  uses {}", references(t).join(" ")),
            // The reference, never a value (none is read).
            Value::Ref(r) => line += &format!("  {}", escape(&r.to_string())),
            _ => {}
        }
        if e.file {
            line += "  file";
        }
        *out += line.trim_end();
        *out += "\n";
    }
}

fn hashes(doc: &Document, out: &mut String) {
    for (k, v) in &doc.context {
        *out += &format!("context {}={}\n", escape(k), escape(v));
    }
    for k in &doc.keys {
        *out += &format!("key {} {}\n", escape(&k.arn), short_hash(&k.data_key));
    }
    for e in &doc.entries {
        let text: std::borrow::Cow<'_, [u8]> = match &e.value {
            Value::Plain(t) | Value::Sealed(t) | Value::Template(t) => t.as_bytes().into(),
            Value::Kms { blob, .. } => blob.into(),
            Value::Ref(r) => r.mac_text().into(),
        };
        let file = if e.file { " file" } else { "" };
        *out += &format!("{} {} {}{file}\n", e.name, e.value.kind(), short_hash(&text));
    }
}

/// First 12 hex digits of SHA-256: enough to see a change, nothing about a value
/// (it hashes ciphertext, or plain text that is in the file anyway).
fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
