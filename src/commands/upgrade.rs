//! `kmsenv upgrade`: rewrite a format-1 file as format 2 (DESIGN §2.4).
//!
//! Format 1's MAC leaves the wrapping keys out, so before a format-2 MAC vouches
//! for them every wrapping must open the same data key (`Writer` does that for
//! any write of a format-1 file). Direct values delivered as files get their
//! flag bound into their KMS context, through ReEncrypt: the plaintext never
//! leaves KMS.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::document::{FILE_CONTEXT_KEY, FILE_CONTEXT_VALUE, Value};
use crate::error::Result;
use crate::run::{Connect, Run};
use crate::writer::Writer;

pub fn run<K: Connect>(run: &Run<K>) -> Result<()> {
    let path = run.single_file("upgrade")?;
    let mut w = Writer::open_to_upgrade(run, path)?;
    if !w.doc().is_legacy() {
        run.note(format!(
            "{}: already format version {}; nothing to do",
            path.display(),
            w.doc().version
        ));
        return Ok(());
    }
    let doc = w.doc().clone();
    let mut rebound = Vec::new();
    for e in &doc.entries {
        let Value::Kms { blob, key, context } = &e.value else {
            continue;
        };
        if !e.file || context.contains_key(FILE_CONTEXT_KEY) {
            continue;
        }
        let mut bound = context.clone();
        bound.insert(FILE_CONTEXT_KEY.into(), FILE_CONTEXT_VALUE.into());
        let (session, kms) = w.kms()?;
        // ReEncrypt needs the destination key: the value's own, or the one KMS
        // names when the value does not.
        let dest = match key {
            Some(k) => k.clone(),
            None => {
                session
                    .block_on(kms.decrypt(None, blob, context, None))
                    .map_err(|err| w.kms_error(Some(&e.name), "(named in the ciphertext)", "Decrypt", err))?
                    .key_arn
            }
        };
        let (nblob, arn) = session
            .block_on(kms.re_encrypt(blob, key.as_deref(), context, &dest, &bound))
            .map_err(|err| w.kms_error(Some(&e.name), &dest, "ReEncrypt", err))?;
        w.editor()
            .set_kms(&e.name, &B64.encode(nblob), Some(&arn), &bound, true)?;
        rebound.push(e.name.as_str());
    }
    w.save()?;
    if !rebound.is_empty() {
        run.note(format!(
            "{}: {} bound to their file flag: {}",
            path.display(),
            rebound.len(),
            rebound.join(" ")
        ));
    }
    Ok(())
}
