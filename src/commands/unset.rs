//! `kmsenv unset`: remove entries and rewrite the MAC.

use crate::cli::UnsetArgs;
use crate::commands::{Ctx, Writer};
use crate::error::{Error, Result};

pub fn run(ctx: &Ctx, args: UnsetArgs) -> Result<()> {
    let path = ctx.single_file("unset")?;
    let mut w = Writer::open(ctx, path)?;
    for n in &args.names {
        if w.doc().entry(n).is_none() {
            return Err(Error::usage(format!(
                "{}: {n} is not in the file; nothing was changed",
                path.display()
            )));
        }
    }
    for n in &args.names {
        w.editor().remove(n)?;
    }
    w.save()?;
    ctx.note(format!("{}: removed {}", path.display(), args.names.join(" ")));
    Ok(())
}
