//! `kmsenv check`: open every file completely — MAC, every sealed value, every
//! direct value, every reference read — and report per file what protects it
//! and `ok` per name. For CI.
//! `--fix-mac` re-verifies every value and writes a new MAC, for after a hand merge.

use crate::cli::CheckArgs;
use crate::document::{Document, VAR_CONTEXT_KEY, Value};
use crate::error::{Class, Error, Result};
use crate::resolve::Selection;
use crate::run::{Connect, Run, write_stdout};
use crate::terminal::escape;
use crate::writer::Writer;

pub fn run<K: Connect>(run: &Run<K>, args: CheckArgs) -> Result<()> {
    if args.fix_mac {
        return fix_mac(run);
    }
    let docs = run.load_all()?;
    let mut failures = 0;
    let mut opened = Vec::new();
    for doc in &docs {
        match run.open_each(std::slice::from_ref(doc), Selection::ALL) {
            Ok(mut files) => {
                let path = doc.path.display().to_string();
                let path = escape(&path);
                warn_unbound(run, doc);
                advise_on_calls(run, doc);
                let protection = match files.first().and_then(|f| f.opened_by.as_deref()) {
                    Some(arn) => format!("MAC ok, data key opened with {}", escape(arn)),
                    None => {
                        run.note(format!(
                            "warning: {path} has no [[kmsenv.keys]] and so no MAC: anyone who can write it can change it"
                        ));
                        "no keys, no MAC".into()
                    }
                };
                let mut out = format!("{path}: format {}, {protection}\n", doc.version);
                for v in files.iter().flat_map(|f| f.values.iter()) {
                    out += &format!("{path}: {} ok\n", v.name);
                }
                let references = crate::refs::count(doc, Selection::ALL);
                if references > 0 {
                    let noun = if references == 1 {
                        "reference"
                    } else {
                        "references"
                    };
                    out +=
                        &format!("{path}: {references} {noun} read ok (Secrets Manager, Parameter Store)\n");
                }
                out += &format!("{path}: ok ({} values)\n", doc.entries.len());
                write_stdout(&[out.as_bytes()])?;
                opened.append(&mut files);
            }
            Err(e) => {
                failures += 1;
                crate::error::report(&e);
            }
        }
    }
    // Templates use the variables of every file: resolved once all opened.
    if failures == 0 {
        crate::template::expand(&docs, &mut opened)?;
    }
    match failures {
        0 => Ok(()),
        n => Err(Error::integrity(format!(
            "check failed for {n} of {} files",
            docs.len()
        ))),
    }
}

/// A direct value without `kmsenv:var` (pasted from `aws kms encrypt`) decrypts
/// under any name: someone who can write the file can move it to another variable.
fn warn_unbound<K: Connect>(run: &Run<K>, doc: &Document) {
    for e in &doc.entries {
        if let Value::Kms { context, .. } = &e.value
            && !context.contains_key(VAR_CONTEXT_KEY)
        {
            run.note(format!(
                "warning: {}:{}: {}: this kms value is not bound to its name (no \"{VAR_CONTEXT_KEY}\" in its context): \
                 a writer of the file could move it to another variable; re-set it with `kmsenv set --kms {}`",
                doc.path.display(),
                e.at,
                e.name,
                e.name
            ));
        }
    }
}

/// Each direct value is one KMS `Decrypt` at every start, where sealed values
/// cost one call per file. A fleet starting at once shares one request quota:
/// throttled calls are retried until `--timeout`, so a file of many direct values
/// starts slowly or not at all (bench/RESULTS.md, "Fleet start storm").
fn advise_on_calls<K: Connect>(run: &Run<K>, doc: &Document) {
    let direct = doc
        .entries
        .iter()
        .filter(|e| matches!(e.value, Value::Kms { .. }))
        .count();
    if direct < 2 {
        return;
    }
    let calls = direct + usize::from(doc.has_keys());
    run.note(format!(
        "note: {}: {direct} direct kms values cost {calls} KMS calls at every start; sealed values cost one per file \
         however many. A fleet starting at once shares the account's KMS request quota (throttled calls are retried \
         until --timeout): seal them (`kmsenv get NAME | kmsenv set NAME`, in a file with keys: `kmsenv init --key KEY`)",
        doc.path.display()
    ));
}

/// Open everything without trusting the old MAC, then write a new one.
fn fix_mac<K: Connect>(run: &Run<K>) -> Result<()> {
    let path = run.single_file("check --fix-mac")?;
    let mut w = Writer::open(run, path)?;
    let doc = w.doc().clone();
    // Every wrapping must open the same data key: the new MAC will vouch for them.
    let dk = w.data_key_for_new_mac()?;
    // Every sealed value must open under this file's data key and name, and
    // every direct value must decrypt (they are not under the MAC, but a merge
    // that broke one should not pass as fixed).
    let everything = Selection {
        only: None,
        verify_mac: false,
    };
    run.open_unlocked(&doc, Some(dk), None, everything)
        .map_err(|err| match err.class {
            Class::Integrity => {
                err.with_hint("re-set this value with `kmsenv set`, then run --fix-mac again")
            }
            _ => err,
        })?;
    // Say what the new MAC vouches for, so a reviewer can compare with the merge.
    let keys: Vec<&str> = doc.keys.iter().map(|k| k.arn.as_str()).collect();
    run.note(format!(
        "{}: the new MAC covers the keys {}",
        path.display(),
        keys.join(", ")
    ));
    let entries: Vec<String> = doc
        .entries
        .iter()
        .filter(|e| !matches!(e.value, Value::Kms { .. }))
        .map(|e| format!("{} ({})", e.name, e.value.kind()))
        .collect();
    run.note(format!(
        "{}: and the entries {}",
        path.display(),
        if entries.is_empty() {
            "(none)".to_string()
        } else {
            entries.join(", ")
        }
    ));
    let n = doc.entries.len();
    w.save()?;
    run.note(format!(
        "{}: all {n} values verified; new MAC written",
        path.display()
    ));
    Ok(())
}
