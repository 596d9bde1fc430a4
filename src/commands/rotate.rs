//! `kmsenv rotate`: a new data key, every sealed value re-sealed under it, the
//! wrappings replaced under the same keys, the MAC rewritten — in one atomic write.
//! Only a file that verified is rotated: its key list is what the new data key
//! is wrapped to.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cli::RotateArgs;
use crate::document::Value;
use crate::error::Result;
use crate::kms::arn_region;
use crate::resolve;
use crate::run::{Connect, Run};
use crate::writer::Writer;

pub fn run<K: Connect>(run: &Run<K>, args: RotateArgs) -> Result<()> {
    let path = run.single_file("rotate")?;
    let mut w = Writer::open(run, path)?;
    let doc = w.doc().clone();
    let dest = if args.kms_values {
        Some(w.direct_value_key()?)
    } else {
        None
    };
    let old = w.rekey()?;
    let mut resealed = 0;
    for e in &doc.entries {
        if let Value::Sealed(text) = &e.value {
            let plain = resolve::open_sealed(&doc, &old, e, text)?;
            let sealed = w.seal(&e.name, plain.expose())?;
            w.editor().set_sealed(&e.name, &sealed, e.file)?;
            resealed += 1;
        }
    }
    drop(old);
    let mut reencrypted = 0;
    if let Some(dest) = &dest {
        let (session, kms) = w.kms()?;
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
            let (nblob, arn) = result.map_err(|k| w.kms_error(Some(&e.name), dest, "ReEncrypt", k))?;
            w.editor()
                .set_kms(&e.name, &B64.encode(nblob), Some(&arn), context, e.file)?;
            reencrypted += 1;
        }
    }
    w.save()?;
    let mut msg = format!(
        "{}: new data key; {resealed} sealed values re-sealed",
        path.display()
    );
    if let Some(dest) = dest {
        msg += &format!("; {reencrypted} kms values re-encrypted to {dest}");
    }
    run.note(msg);
    Ok(())
}
