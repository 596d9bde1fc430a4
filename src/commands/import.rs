//! `kmsenv import`: seal every entry of a dotenv file (or store it plain).

use std::path::Path;

use crate::cli::ImportArgs;
use crate::document::value_rule;
use crate::dotenv;
use crate::error::{Error, Result};
use crate::input::read_limited;
use crate::run::{Connect, Run};
use crate::writer::Writer;

pub fn run<K: Connect>(run: &Run<K>, args: ImportArgs) -> Result<()> {
    let path = run.single_file("import")?;
    let (origin, text) = match &args.path {
        Some(p) if crate::s3::is_url(p) => {
            return Err(Error::usage(format!(
                "{}: `import` reads a local dotenv file or stdin",
                p.display()
            ))
            .with_hint(format!("aws s3 cp {} - | kmsenv import", p.display())));
        }
        Some(p) => (
            p.display().to_string(),
            read_limited(
                std::fs::File::open(p).map_err(|e| Error::io("read", p, &e))?,
                &p.display().to_string(),
            )?,
        ),
        None => (
            "stdin".to_string(),
            read_limited(std::io::stdin().lock(), "stdin")?,
        ),
    };
    let entries = dotenv::parse(&origin, text.expose())?;
    drop(text);
    if entries.is_empty() {
        return Err(Error::usage(format!("{origin}: no NAME=VALUE lines to import")));
    }
    let mut w = Writer::open(run, path)?;
    for (name, value) in &entries {
        // A sealed entry delivered as a file stays one; a plain value never is.
        let keep = !args.plain && w.doc().entry(name).is_some_and(|e| e.file);
        if let Some(why) = value_rule(name, value.expose(), keep) {
            return Err(Error::usage(format!("{origin}: {why}")));
        }
        if args.plain {
            let text = std::str::from_utf8(value.expose())
                .map_err(|_| Error::usage(format!("{origin}: {name}: a --plain value must be UTF-8 text")))?;
            w.editor().set_plain(name, text)?;
        } else {
            if !w.doc().has_keys() {
                return Err(no_keys(path));
            }
            let sealed = w.seal(name, value.expose())?;
            w.editor().set_sealed(name, &sealed, keep)?;
        }
    }
    w.save()?;
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    run.note(format!("{}: imported {}", path.display(), names.join(" ")));
    Ok(())
}

fn no_keys(path: &Path) -> Error {
    Error::usage(format!(
        "{}: has no [[kmsenv.keys]] to seal values with",
        path.display()
    ))
    .with_hint("create a keyed file with `kmsenv init --key KEY`, or import with --plain")
}
