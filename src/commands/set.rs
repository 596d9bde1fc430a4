//! `kmsenv set`: seal one value (or store it plain, as a direct KMS ciphertext,
//! or as a ciphertext another tool made) and rewrite the MAC. Only that entry's
//! text changes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cli::SetArgs;
use crate::commands::{Ctx, Writer, kms_error_for, parse_context};
use crate::document::{Document, MAX_KMS_BLOB, VAR_CONTEXT_KEY, Value, check_name};
use crate::error::{Error, Result};
use crate::input::read_value;
use crate::kms::KeyService;
use crate::secret::Secret;

pub fn run(ctx: &Ctx, args: SetArgs) -> Result<()> {
    let path = ctx.single_file("set")?;
    // `--plain NAME=VALUE` is allowed: a plain value is not a secret.
    let (name, inline) = match (args.plain, args.name.split_once('=')) {
        (true, Some((n, v))) => (n.to_string(), Some(Secret::new(v.as_bytes().to_vec()))),
        (false, Some(_)) => {
            return Err(Error::usage(format!(
                "{}: secret values are never taken from the command line (argv is visible to other users)",
                args.name.split('=').next().unwrap_or_default()
            ))
            .with_hint(
                "pipe it in: printf %s \"$VALUE\" | kmsenv set NAME  (or --plain NAME=VALUE for non-secrets)",
            ));
        }
        _ => (args.name.clone(), None),
    };
    check_name(&name)?;
    if args.key.is_some() && !(args.kms || args.ciphertext) {
        return Err(Error::usage("--key applies to --kms and --ciphertext only"));
    }
    let value = match inline {
        Some(v) => v,
        None => read_value(&name, args.from_file.as_deref())?,
    };

    // Peek (without the lock) to learn whether the data key is needed: a direct
    // kms value that replaces nothing under the MAC needs only kms:Encrypt.
    let peek = Document::load_by(path, ctx.deadline)?;
    let replaces_mac_entry = peek
        .entry(&name)
        .is_some_and(|e| !matches!(e.value, Value::Kms { .. }));
    let direct = args.kms || args.ciphertext;
    let file = args.as_file || peek.entry(&name).is_some_and(|e| e.file);
    if args.plain && std::str::from_utf8(value.expose()).is_err() {
        return Err(Error::usage(format!(
            "{name}: a --plain value must be UTF-8 text (TOML strings are); seal it instead"
        )));
    }
    if !args.ciphertext && !file && value.expose().contains(&0) {
        return Err(nul_error(&name));
    }

    let mut w = Writer::open(ctx, path, !direct || replaces_mac_entry)?;
    let what = if args.ciphertext {
        store_ciphertext(ctx, &mut w, &args, &name, &value, file)?;
        "a KMS ciphertext from another tool"
    } else if args.kms {
        let key = match (&args.key, w.doc.keys.first()) {
            (Some(k), _) => k.clone(),
            (None, Some(k)) => k.arn.clone(),
            (None, None) => {
                return Err(Error::usage(format!(
                    "{name}: the file has no keys; name one with --kms --key KEY"
                )));
            }
        };
        let context = w.doc.direct_value_context(&name);
        let session = w.session(ctx)?;
        let (blob, arn) = session
            .block_on(session.kms.encrypt(&key, value.expose(), &context))
            .map_err(|e| kms_error_for(path, Some(&name), &key, "Encrypt", e))?;
        w.editor
            .set_kms(&name, &B64.encode(blob), Some(&arn), &context, file)?;
        "a direct KMS ciphertext"
    } else if args.plain {
        w.editor
            .set_plain(&name, std::str::from_utf8(value.expose()).unwrap_or_default())?;
        "a plain value"
    } else {
        let Some(dk) = &w.data_key else {
            return Err(Error::usage(format!("{}: has no [[kmsenv.keys]] to seal {name} with", path.display()))
                .with_hint(
                    "use --kms (one KMS ciphertext per value), or create a keyed file with `kmsenv init --key KEY`",
                ));
        };
        let sealed = dk.seal(&name, value.expose());
        w.editor.set_sealed(&name, &sealed, file)?;
        "a sealed value"
    };
    drop(value);
    w.save()?;
    ctx.note(format!("{}: set {name} ({what})", path.display()));
    Ok(())
}

fn nul_error(name: &str) -> Error {
    Error::usage(format!(
        "{name}: value contains a NUL byte, which an environment variable cannot hold"
    ))
    .with_hint("binary values can be delivered as a file: add --as-file")
}

/// `--ciphertext`: the input is a CiphertextBlob (raw, or base64 as the AWS CLI
/// prints it). Checked with a test Decrypt unless `--no-verify`.
fn store_ciphertext(
    ctx: &Ctx,
    w: &mut Writer,
    args: &SetArgs,
    name: &str,
    input: &Secret,
    file: bool,
) -> Result<()> {
    let path = w.doc.path.clone();
    let text = input.expose();
    let looks_base64 = text
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n \t".contains(b));
    let blob = if looks_base64 {
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        B64.decode(compact)
            .map_err(|_| Error::usage(format!("{name}: the ciphertext is not valid base64")))?
    } else {
        text.to_vec()
    };
    if blob.is_empty() || blob.len() > MAX_KMS_BLOB {
        return Err(Error::usage(format!(
            "{name}: {} bytes is not a KMS ciphertext (1 to {MAX_KMS_BLOB} bytes)",
            blob.len()
        )));
    }
    let mut context = std::collections::BTreeMap::new();
    for pair in &args.context {
        // The one reserved pair a direct value may carry is its own name.
        if pair == &format!("{VAR_CONTEXT_KEY}={name}") {
            context.insert(VAR_CONTEXT_KEY.to_string(), name.to_string());
        } else {
            context.extend(parse_context(std::slice::from_ref(pair))?);
        }
    }
    if !args.no_verify {
        let session = w.session(ctx)?;
        let plain = session
            .block_on(session.kms.decrypt(args.key.as_deref(), &blob, &context, None))
            .map_err(|e| {
                let key = args.key.as_deref().unwrap_or("(the key named in the ciphertext)");
                kms_error_for(&path, Some(name), key, "Decrypt", e)
                    .with_hint("pass the --context and --key it was encrypted with, or --no-verify")
            })?;
        if !file && plain.expose().contains(&0) {
            return Err(nul_error(name));
        }
    }
    w.editor
        .set_kms(name, &B64.encode(&blob), args.key.as_deref(), &context, file)
}
