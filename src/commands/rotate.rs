//! `kmsenv rotate`: a new data key, every sealed value re-sealed under it, the
//! wrappings replaced under the same keys, the MAC rewritten — in one atomic write.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cli::RotateArgs;
use crate::commands::{Ctx, Writer, kms_error, kms_error_for};
use crate::document::Value;
use crate::envelope::DataKey;
use crate::error::{Error, Result};
use crate::kms::{KeyService, arn_region};
use crate::resolve;

pub fn run(ctx: &Ctx, args: RotateArgs) -> Result<()> {
    let path = ctx.single_file("rotate")?;
    let mut w = Writer::open(ctx, path, true)?;
    let Some(old) = w.data_key.take() else {
        return Err(Error::usage(format!(
            "{}: has no data key to rotate",
            path.display()
        )));
    };
    let doc = w.doc.clone();
    let dk_ctx = doc.data_key_context();
    let session = w.take_session(ctx)?;
    let kms = &session.kms;

    let (first, others) = doc.keys.split_first().ok_or_else(|| Error::usage("no keys"))?;
    let generated = session
        .block_on(kms.generate_data_key(&first.arn, &dk_ctx))
        .map_err(|e| kms_error(path, &first.arn, "GenerateDataKey", e))?;
    let mut blobs = vec![generated.blob.clone()];
    for k in others {
        let (blob, _) = session
            .block_on(kms.encrypt(&k.arn, generated.plaintext.expose(), &dk_ctx))
            .map_err(|e| kms_error(path, &k.arn, "Encrypt", e))?;
        blobs.push(blob);
    }
    let new = DataKey::from_plaintext(&generated.plaintext).ok_or_else(|| {
        Error::kms(format!(
            "{}: KMS returned a data key that is not 32 bytes",
            path.display()
        ))
    })?;

    let mut resealed = 0;
    let mut reencrypted = Vec::new();
    for e in &doc.entries {
        match &e.value {
            Value::Sealed(text) => {
                let plain = resolve::open_sealed(&doc, &old, e, text)?;
                w.editor
                    .set_sealed(&e.name, &new.seal(&e.name, plain.expose()), e.file)?;
                resealed += 1;
            }
            Value::Kms { blob, key, context } if args.kms_values => {
                let dest = &first.arn;
                let same_region = key.as_deref().and_then(arn_region) == arn_region(dest);
                let result = if same_region || key.is_none() {
                    session.block_on(kms.re_encrypt(blob, key.as_deref(), context, dest))
                } else {
                    // ReEncrypt works within one region; across regions go through memory.
                    match session.block_on(kms.decrypt(key.as_deref(), blob, context, None)) {
                        Ok(plain) => session.block_on(kms.encrypt(dest, plain.expose(), context)),
                        Err(e) => Err(e),
                    }
                };
                let (nblob, arn) =
                    result.map_err(|k| kms_error_for(path, Some(&e.name), dest, "ReEncrypt", k))?;
                w.editor
                    .set_kms(&e.name, &B64.encode(nblob), Some(&arn), context, e.file)?;
                reencrypted.push(e.name.clone());
            }
            _ => {}
        }
    }
    for (i, blob) in blobs.iter().enumerate() {
        w.editor.set_key_blob(i, &B64.encode(blob))?;
    }
    w.data_key = Some(new);
    w.save()?;
    let mut msg = format!(
        "{}: new data key; {resealed} sealed values re-sealed",
        path.display()
    );
    if args.kms_values {
        msg += &format!("; {} kms values re-encrypted to {}", reencrypted.len(), first.arn);
    }
    ctx.note(msg);
    Ok(())
}
