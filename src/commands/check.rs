//! `kmsenv check`: open every file completely — MAC, every sealed value, every
//! direct value — and say `ok` per name. For CI. `--fix-mac` re-verifies every
//! value and writes a new MAC, for after a hand merge.

use crate::cli::CheckArgs;
use crate::commands::{Ctx, Writer, write_stdout};
use crate::document::{Document, Value};
use crate::error::{Error, Result};
use crate::resolve::{self, Selection};

pub fn run(ctx: &Ctx, args: CheckArgs) -> Result<()> {
    if args.fix_mac {
        return fix_mac(ctx);
    }
    let docs = ctx.load_all()?;
    let mut failures = 0;
    for doc in &docs {
        match ctx.open(std::slice::from_ref(doc), Selection::ALL) {
            Ok(files) => {
                let path = doc.path.display();
                if !doc.has_keys() {
                    ctx.note(format!(
                        "warning: {path} has no [[kmsenv.keys]] and so no MAC: anyone who can write it can change its plain values"
                    ));
                }
                let mut out = String::new();
                for v in files.iter().flat_map(|f| f.values.iter()) {
                    out += &format!("{path}: {} ok\n", v.name);
                }
                out += &format!("{path}: ok ({} values)\n", doc.entries.len());
                write_stdout(&[out.as_bytes()])?;
            }
            Err(e) => {
                failures += 1;
                crate::error::report(&e);
            }
        }
    }
    match failures {
        0 => Ok(()),
        n => Err(Error::integrity(format!(
            "check failed for {n} of {} files",
            docs.len()
        ))),
    }
}

/// Open everything without trusting the old MAC, then write a new one.
fn fix_mac(ctx: &Ctx) -> Result<()> {
    let path = ctx.single_file("check --fix-mac")?;
    let peek = Document::load(path)?;
    if !peek.has_keys() {
        return Err(Error::usage(format!(
            "{}: has no [[kmsenv.keys]], so it has no MAC to fix",
            path.display()
        )));
    }
    let mut w = Writer::open(ctx, path, false)?;
    w.unwrap_data_key(ctx, false)?;
    let dk = w
        .data_key
        .as_ref()
        .ok_or_else(|| Error::integrity("no data key"))?;
    // Every sealed value must open under this file's data key and name.
    for e in &w.doc.entries {
        if let Value::Sealed(text) = &e.value {
            resolve::open_sealed(&w.doc, dk, e, text).map_err(|err| {
                err.with_hint("re-set this value with `kmsenv set`, then run --fix-mac again")
            })?;
        }
    }
    // And every direct value must decrypt (they are not under the MAC, but a
    // merge that broke one should not pass as fixed).
    let deadline = ctx.deadline;
    let doc = w.doc.clone();
    let session = w.session(ctx)?;
    session.block_on(resolve::open_with(
        &session.kms,
        std::slice::from_ref(&doc),
        Selection {
            only: None,
            verify_mac: false,
        },
        deadline,
    ))?;
    let n = w.doc.entries.len();
    w.save()?;
    ctx.note(format!(
        "{}: all {n} values verified; new MAC written",
        path.display()
    ));
    Ok(())
}
