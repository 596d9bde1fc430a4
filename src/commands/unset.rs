//! `kmsenv unset`: remove entries and rewrite the MAC.

use crate::cli::UnsetArgs;
use crate::error::{Error, Result};
use crate::run::{Connect, Run};
use crate::writer::Writer;

pub fn run<K: Connect>(run: &Run<K>, args: UnsetArgs) -> Result<()> {
    let path = run.single_file("unset")?;
    let mut w = Writer::open(run, path)?;
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
    run.note(format!("{}: removed {}", path.display(), args.names.join(" ")));
    Ok(())
}
