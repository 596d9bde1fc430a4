//! `kmsenv get`: print one value, exactly its bytes.

use std::collections::BTreeSet;
use std::io::IsTerminal;

use crate::cli::GetArgs;
use crate::error::{Error, Result};
use crate::resolve::Selection;
use crate::run::{Connect, Run, write_stdout};

pub fn run<K: Connect>(run: &Run<K>, args: GetArgs) -> Result<()> {
    // The last file that defines the name wins, as in `exec`.
    let docs = run.load_all_to_open(&|docs| {
        if docs.iter().any(|d| d.entry(&args.name).is_some()) {
            return Ok(());
        }
        let files: Vec<String> = docs.iter().map(|d| d.path.display().to_string()).collect();
        Err(Error::usage(format!(
            "{}: not defined in {}",
            args.name,
            files.join(", ")
        )))
    })?;
    let only: BTreeSet<String> = [args.name.clone()].into();
    // Only the files that define the name or what its template uses: no KMS
    // call for a file that has nothing to do with it.
    let needed = crate::template::closure(&docs, &only);
    let docs: Vec<_> = docs
        .into_iter()
        .filter(|d| d.entries.iter().any(|e| needed.contains(&e.name)))
        .collect();
    let opened = run.open(
        &docs,
        Selection {
            only: Some(&only),
            verify_mac: true,
        },
    )?;
    let Some(value) = opened
        .iter()
        .flat_map(|f| f.values.iter())
        .rfind(|v| v.name == args.name)
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
