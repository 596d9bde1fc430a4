//! `kmsenv get`: print one value, exactly its bytes.

use std::collections::BTreeSet;
use std::io::IsTerminal;

use crate::cli::GetArgs;
use crate::error::{Error, Result};
use crate::resolve::Selection;
use crate::run::{Connect, Run, write_stdout};

pub fn run<K: Connect>(run: &Run<K>, args: GetArgs) -> Result<()> {
    let docs = run.load_all()?;
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
    let opened = run.open(
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
    // A newline only for a person; a pipe or file gets the exact bytes.
    let end: &[u8] = if std::io::stdout().is_terminal() {
        b"\n"
    } else {
        b""
    };
    write_stdout(&[value.secret.expose(), end])
}
