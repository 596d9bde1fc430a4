//! `kmsenv unset`: remove entries and rewrite the MAC.

use crate::cli::UnsetArgs;
use crate::commands::{Ctx, Writer};
use crate::document::{Document, Value};
use crate::error::{Error, Result};

pub fn run(ctx: &Ctx, args: UnsetArgs) -> Result<()> {
    let path = ctx.single_file("unset")?;
    let peek = Document::load_by(path, ctx.deadline)?;
    for n in &args.names {
        if peek.entry(n).is_none() {
            return Err(Error::usage(format!(
                "{}: {n} is not in the file; nothing was changed",
                path.display()
            )));
        }
    }
    // Removing only direct kms entries leaves the MAC as it is.
    let need_dk = args.names.iter().any(|n| {
        peek.entry(n)
            .is_some_and(|e| !matches!(e.value, Value::Kms { .. }))
    });
    let mut w = Writer::open(ctx, path, need_dk)?;
    for n in &args.names {
        w.editor.remove(n)?;
    }
    w.save()?;
    ctx.note(format!("{}: removed {}", path.display(), args.names.join(" ")));
    Ok(())
}
