//! `kmsenv set`: seal one value (or store it plain, or as a direct KMS
//! ciphertext) and rewrite the MAC. Only that entry's text changes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cli::SetArgs;
use crate::commands::{Ctx, Writer};
use crate::document::{Value, check_name};
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
    let value = match inline {
        Some(v) => v,
        None => read_value(&name, args.from_file.as_deref())?,
    };
    if args.plain && std::str::from_utf8(value.expose()).is_err() {
        return Err(Error::usage(format!(
            "{name}: a --plain value must be UTF-8 text (TOML strings are); seal it instead"
        )));
    }

    // Peek (without the lock) to learn whether the data key is needed: a direct
    // kms value that replaces nothing under the MAC needs only kms:Encrypt.
    let peek = crate::document::Document::load(path)?;
    let replaces_mac_entry = peek
        .entry(&name)
        .is_some_and(|e| !matches!(e.value, Value::Kms { .. }));
    let need_dk = !args.kms || replaces_mac_entry;
    let mut w = Writer::open(ctx, path, need_dk)?;
    let keep_file_flag = w.doc.entry(&name).is_some_and(|e| e.file);
    let file = args.as_file || keep_file_flag;
    if !file && value.expose().contains(&0) {
        return Err(Error::usage(format!(
            "{name}: value contains a NUL byte, which an environment variable cannot hold"
        ))
        .with_hint("binary values can be delivered as a file: add --as-file"));
    }
    let what;

    if args.kms {
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
            .map_err(|e| {
                let err = Error::kms(format!(
                    "{}: {name}: KMS Encrypt with key {key} failed: {e}",
                    path.display()
                ));
                match e.hint() {
                    Some(h) => err.with_hint(h),
                    None => err,
                }
            })?;
        w.editor.set_kms(&name, &B64.encode(blob), &arn, &context, file)?;
        what = "a direct KMS ciphertext";
    } else if args.plain {
        w.editor
            .set_plain(&name, std::str::from_utf8(value.expose()).unwrap_or_default())?;
        what = "a plain value";
    } else {
        let Some(dk) = &w.data_key else {
            return Err(Error::usage(format!("{}: has no [[kmsenv.keys]] to seal {name} with", path.display()))
                .with_hint("use --kms (one KMS ciphertext per value), or create a keyed file with `kmsenv init --key KEY`"));
        };
        let sealed = dk.seal(&name, value.expose());
        w.editor.set_sealed(&name, &sealed, file)?;
        what = "a sealed value";
    }
    drop(value);
    w.save()?;
    ctx.note(format!("{}: set {name} ({what})", path.display()));
    Ok(())
}
