//! `kmsenv export`: print decrypted values as dotenv, POSIX shell or JSON.
//! Every format reads back as the exact bytes; dotenv refuses, by name, a value
//! it cannot write that way (`dotenv::format_dotenv` says which).

use std::collections::HashMap;

use crate::cli::{ExportArgs, Format};
use crate::dotenv;
use crate::error::{Error, Result};
use crate::resolve::Selection;
use crate::run::{Connect, Run, write_stdout};
use crate::secret::Secret;

pub fn run<K: Connect>(run: &Run<K>, args: ExportArgs) -> Result<()> {
    let docs = run.load_all()?;
    let files = run.open(&docs, Selection::ALL)?;
    // Later files win; each name once, in order of first appearance. The index
    // keeps this linear: 200 000 entries took half a minute with a scan per name.
    let mut merged: Vec<(&str, &Secret)> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    for v in files.iter().flat_map(|f| f.values.iter()) {
        match slot_of.get(v.name.as_str()) {
            Some(&i) => merged[i].1 = &v.secret,
            None => {
                slot_of.insert(&v.name, merged.len());
                merged.push((&v.name, &v.secret));
            }
        }
    }
    // Sized for the worst escaping (dotenv adds none, shell makes `'` four,
    // JSON makes a control byte six), so the buffer never grows and never leaves
    // an unwiped copy of the values behind.
    let grow = match args.format {
        Format::Dotenv => 1,
        Format::Shell => 4,
        Format::Json => 6,
    };
    let size = merged
        .iter()
        .map(|(n, v)| n.len() + grow * v.expose().len() + 16)
        .sum::<usize>()
        + 4;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(size));
    match args.format {
        Format::Dotenv => {
            for (n, v) in &merged {
                dotenv::format_dotenv(n, v.expose(), &mut out)?;
            }
        }
        Format::Shell => merged
            .iter()
            .for_each(|(n, v)| dotenv::format_shell(n, v.expose(), &mut out)),
        Format::Json => {
            out.push(b'{');
            for (i, (n, v)) in merged.iter().enumerate() {
                let text = std::str::from_utf8(v.expose()).map_err(|_| {
                    Error::usage(format!(
                        "{n}: value is not UTF-8 and JSON cannot carry it; use --format shell"
                    ))
                })?;
                if i > 0 {
                    out.push(b',');
                }
                dotenv::json_string(n, &mut out);
                out.push(b':');
                dotenv::json_string(text, &mut out);
            }
            out.extend_from_slice(b"}\n");
        }
    }
    write_stdout(&[&out])
}
