//! `kmsenv rotate`: a new data key, every sealed value re-sealed under it, the
//! wrappings replaced under the same keys, the MAC rewritten — in one atomic write.
//! Only a file that verified is rotated: its key list is what the new data key
//! is wrapped to.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cli::RotateArgs;
use crate::commands::{Ctx, Writer, kms_error, kms_error_for};
use crate::document::Value;
use crate::envelope::DataKey;
use crate::error::{Error, Result};
use crate::kms::{KeyService, arn_region, new_data_key};
use crate::resolve;
use crate::secret::Secret;

pub fn run(ctx: &Ctx, args: RotateArgs) -> Result<()> {
    let path = ctx.single_file("rotate")?;
    let mut w = Writer::open(ctx, path)?;
    let doc = w.doc().clone();
    let Some(old) = w.data_key()? else {
        return Err(Error::usage(format!(
            "{}: has no data key to rotate",
            path.display()
        )));
    };
    // Every sealed value, opened under the old key before anything changes.
    let mut sealed: Vec<(&str, Secret, bool)> = Vec::new();
    for e in &doc.entries {
        if let Value::Sealed(text) = &e.value {
            sealed.push((&e.name, resolve::open_sealed(&doc, old, e, text)?, e.file));
        }
    }
    let dest = if args.kms_values {
        Some(w.direct_value_key()?)
    } else {
        None
    };

    let session = w.session()?;
    let kms = &session.kms;
    let arns: Vec<&str> = doc.keys.iter().map(|k| k.arn.as_str()).collect();
    let made = session
        .block_on(new_data_key(kms, &arns, &doc.data_key_context()))
        .map_err(|f| kms_error(path, &f.key, f.op, f.error))?;
    let new = DataKey::from_plaintext(&made.plaintext).ok_or_else(|| {
        Error::kms(format!(
            "{}: KMS returned a data key that is not 32 bytes",
            path.display()
        ))
    })?;

    for (name, plain, file) in &sealed {
        w.editor()
            .set_sealed(name, &new.seal(name, plain.expose()), *file)?;
    }
    let mut reencrypted = Vec::new();
    if let Some(dest) = &dest {
        for e in &doc.entries {
            let Value::Kms { blob, key, context } = &e.value else {
                continue;
            };
            let same_region = key.as_deref().and_then(arn_region) == arn_region(dest);
            let result = if same_region || key.is_none() {
                session.block_on(kms.re_encrypt(blob, key.as_deref(), context, dest, context))
            } else {
                // ReEncrypt works within one region; across regions go through memory.
                match session.block_on(kms.decrypt(key.as_deref(), blob, context, None)) {
                    Ok(plain) => session.block_on(kms.encrypt(dest, plain.plaintext.expose(), context)),
                    Err(e) => Err(e),
                }
            };
            let (nblob, arn) =
                result.map_err(|k| kms_error_for(path, Some(&e.name), dest, "ReEncrypt", k))?;
            w.editor()
                .set_kms(&e.name, &B64.encode(nblob), Some(&arn), context, e.file)?;
            reencrypted.push(e.name.clone());
        }
    }
    for (i, (_, blob)) in made.wrappings.iter().enumerate() {
        w.editor().set_key_blob(i, &B64.encode(blob))?;
    }
    w.replace_data_key(new);
    w.save()?;
    let mut msg = format!(
        "{}: new data key; {} sealed values re-sealed",
        path.display(),
        sealed.len()
    );
    if let Some(dest) = dest {
        msg += &format!("; {} kms values re-encrypted to {dest}", reencrypted.len());
    }
    ctx.note(msg);
    Ok(())
}
