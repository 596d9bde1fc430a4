//! `kmsenv get`: print one value, exactly its bytes.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};

use crate::cli::GetArgs;
use crate::commands::Ctx;
use crate::error::{Error, Result};
use crate::resolve::Selection;

pub fn run(ctx: &Ctx, args: GetArgs) -> Result<()> {
    let docs = ctx.load_all()?;
    // The last file that defines the name wins, as in `exec`.
    let Some(doc) = docs.iter().rev().find(|d| d.entry(&args.name).is_some()) else {
        let files: Vec<String> = docs.iter().map(|d| d.path.display().to_string()).collect();
        return Err(Error::usage(format!(
            "{}: not defined in {}",
            args.name,
            files.join(", ")
        )));
    };
    let only: BTreeSet<String> = [args.name.clone()].into();
    let opened = ctx.open(
        std::slice::from_ref(doc),
        Selection {
            only: Some(&only),
            verify_mac: true,
        },
    )?;
    let Some(value) = opened
        .iter()
        .flat_map(|f| f.values.iter())
        .find(|v| v.name == args.name)
    else {
        return Err(Error::usage(format!("{}: not defined", args.name)));
    };
    let mut out = std::io::stdout().lock();
    let tty = std::io::stdout().is_terminal();
    let written = out
        .write_all(value.secret.expose())
        .and_then(|()| if tty { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush());
    written.map_err(|e| Error::new(crate::error::Class::Io, format!("cannot write to stdout: {e}")))
}
