//! `kmsenv keys add|remove|list`: the KMS keys that wrap the file's data key.
//! Adding needs the data key (to wrap it again); removing checks that the file
//! still opens through the keys that remain, so nobody locks themselves out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cli::KeysCommand;
use crate::document::Document;
use crate::error::{Error, Result};
use crate::kms::region_of;
use crate::run::{Connect, Run, write_stdout};
use crate::terminal::escape;
use crate::writer::{Writer, kms_failure};

pub fn run<K: Connect>(run: &Run<K>, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Add { key } => add(run, &key),
        KeysCommand::Remove { key } => remove(run, &key),
        KeysCommand::List => list(run),
    }
}

fn add<K: Connect>(run: &Run<K>, key: &str) -> Result<()> {
    let path = run.single_file("keys add")?;
    let mut w = Writer::open(run, path)?;
    let dk_ctx = w.doc().data_key_context();
    let (session, kms) = w.kms()?;
    let Some(dk) = w.data_key()? else {
        return Err(
            Error::usage(format!("{}: has no data key to wrap", path.display()))
                .with_hint("create a keyed file with `kmsenv init --key KEY`"),
        );
    };
    let (blob, arn) = session
        .block_on(kms.encrypt(key, dk.plaintext().expose(), &dk_ctx))
        .map_err(|e| kms_failure(path, None, key, "Encrypt", e))?;
    if w.doc().keys.iter().any(|k| k.arn == arn) {
        return Err(Error::usage(format!(
            "{}: {arn} already wraps the data key",
            path.display()
        )));
    }
    w.editor().add_key(&arn, &B64.encode(blob))?;
    w.save()?;
    run.note(format!("{}: added {arn} ({})", path.display(), region_of(&arn)));
    Ok(())
}

fn remove<K: Connect>(run: &Run<K>, key: &str) -> Result<()> {
    let path = run.single_file("keys remove")?;
    let mut w = Writer::open(run, path)?;
    let keys = &w.doc().keys;
    let matches: Vec<usize> = (0..keys.len())
        .filter(|&i| keys[i].arn == key || keys[i].arn.ends_with(&format!("/{key}")))
        .collect();
    let index = match matches.as_slice() {
        [i] => *i,
        [] => {
            return Err(Error::usage(format!("{}: no wrapping key {key}", path.display()))
                .with_hint("`kmsenv keys list` shows the keys"));
        }
        _ => {
            return Err(Error::usage(format!(
                "{}: {key} matches several keys; give the full ARN",
                path.display()
            )));
        }
    };
    if keys.len() == 1 {
        return Err(Error::usage(format!(
            "{}: {key} is the file's only key; add another first (`kmsenv keys add`)",
            path.display()
        )));
    }
    let removed = keys[index].arn.clone();
    // The file must still open without it: unwrap through the others, and the
    // file as it is must verify before a new MAC covers the shorter list.
    w.data_key_without(index)?;
    w.editor().remove_key(index)?;
    w.save()?;
    run.note(format!("{}: removed {removed}", path.display()));
    Ok(())
}

fn list<K: Connect>(run: &Run<K>) -> Result<()> {
    let docs: Vec<Document> = run.load_all()?;
    let mut out = String::new();
    for doc in &docs {
        if docs.len() > 1 {
            out += &format!("{}\n", escape(&doc.path.to_string_lossy()));
        }
        for k in &doc.keys {
            // The ARN is the file's text: escaped, so it cannot drive the terminal.
            out += &format!("{}  {}\n", escape(&k.arn), escape(region_of(&k.arn)));
        }
    }
    write_stdout(&[out.as_bytes()])
}
