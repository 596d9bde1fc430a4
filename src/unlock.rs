//! Files → unlocked data keys: each file's data key opened through its
//! wrapping keys (in order, failing over, under the trust pin), and the file's
//! MAC checked under it (DESIGN §2.2, §2.4, §8).
//!
//! Nothing here opens a value; that is `resolve`'s business, once a data key
//! has passed these checks. Writers use [`unwrap_every_key`] where no MAC
//! vouches for the key list yet.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::aws::{AwsError, Service};
use crate::document::Document;
use crate::envelope::DataKey;
use crate::error::{Error, Result};
use crate::kms::KeyService;
use crate::secret::Secret;
use crate::trust::TrustPin;

/// Decrypt the file's data key through its wrapping keys, in order, stopping at
/// the first that works (DESIGN §2.2). Each key gets an equal share of the time
/// left, so a first region that never answers still leaves time for the second.
/// Under a pin, untrusted wrappings are skipped without a call.
pub async fn unwrap_data_key<K: KeyService>(
    kms: &K,
    doc: &Document,
    deadline: Instant,
    pin: Option<&TrustPin>,
) -> Result<(DataKey, String)> {
    let ctx = doc.data_key_context();
    let mut causes = Vec::new();
    let mut last: Option<AwsError> = None;
    let keys: Vec<_> = doc
        .keys
        .iter()
        .filter(|k| pin.is_none_or(|p| p.trusts(&k.arn)))
        .collect();
    if keys.is_empty() {
        return Err(Error::integrity(format!(
            "{}: none of its wrapping keys is trusted",
            doc.path.display()
        )));
    }
    for (i, key) in keys.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let share = left / (keys.len() - i) as u32;
        let attempt = kms.decrypt(Some(&key.arn), &key.data_key, &ctx, Some(Instant::now() + share));
        // The service enforces the share itself (and says what it last saw);
        // this outer limit only guards against one that does not.
        let result = match tokio::time::timeout(share + Duration::from_millis(100), attempt).await {
            Ok(r) => r,
            Err(_) => Err(AwsError::new(
                "TimeoutError",
                "no answer within this key's share of --timeout",
            )),
        };
        match result.and_then(|d| data_key_of(&d.plaintext)) {
            Ok(dk) => return Ok((dk, key.arn.clone())),
            Err(e) => {
                causes.push(format!("{}: {e}", key.arn));
                last = Some(e);
            }
        }
    }
    let what = if causes.len() == 1 {
        "its key"
    } else {
        "any of its keys"
    };
    let mut err = Error::kms(format!(
        "{}: cannot decrypt the data key through {what}: {}",
        doc.path.display(),
        causes.join("; ")
    ));
    if let Some(h) = last.as_ref().and_then(|e| e.hint(Service::Kms)) {
        err = err.with_hint(h);
    }
    Err(err)
}

fn data_key_of(plain: &Secret) -> std::result::Result<DataKey, AwsError> {
    DataKey::from_plaintext(plain).ok_or_else(|| {
        AwsError::new(
            "InvalidDataKey",
            format!("KMS returned {} bytes, not a 32-byte data key", plain.len()),
        )
    })
}

/// Decrypt every wrapping of the data key, and accept the data key only if all
/// of them hold the same one. This is how a key list that no MAC covers yet (a
/// version-1 file, or `check --fix-mac`, which does not trust the old MAC) is
/// authenticated before a new MAC covers it: an entry someone added fails here.
pub async fn unwrap_every_key<K: KeyService>(
    kms: &K,
    doc: &Document,
    deadline: Instant,
) -> Result<(DataKey, String)> {
    let ctx = doc.data_key_context();
    let ctx = &ctx;
    let answers = join_all(doc.keys.iter().map(|k| async move {
        let by = Some(deadline);
        (k, kms.decrypt(Some(&k.arn), &k.data_key, ctx, by).await)
    }))
    .await;
    let mut first: Option<(DataKey, String)> = None;
    let mut causes = Vec::new();
    for (key, answer) in answers {
        match answer.and_then(|d| data_key_of(&d.plaintext)) {
            Ok(dk) => match &first {
                None => first = Some((dk, key.arn.clone())),
                Some((f, _)) if f.plaintext().expose() == dk.plaintext().expose() => {}
                Some((_, arn)) => causes.push(format!("{}: wraps another data key than {}", key.arn, arn)),
            },
            Err(e) => causes.push(format!("{}: {e}", key.arn)),
        }
    }
    match first {
        Some(found) if causes.is_empty() => Ok(found),
        // Not one opened: a matter of access (or of the network), not of trust.
        None => Err(Error::kms(format!(
            "{}: cannot decrypt the data key through its keys: {}",
            doc.path.display(),
            causes.join("; ")
        ))),
        Some(_) => Err(Error::integrity(format!(
            "{}: every wrapping key must open the same data key before its key list can be trusted, and {}",
            doc.path.display(),
            causes.join("; ")
        ))
        .with_hint(
            "a [[kmsenv.keys]] entry you did not add may be an attacker's: remove it by hand, or retry if a key was unreachable",
        )),
    }
}

/// Check the file MAC under `dk`; a missing or wrong MAC is a hard error.
pub fn verify_mac(doc: &Document, dk: &DataKey) -> Result<()> {
    let ok = doc
        .mac
        .as_deref()
        .is_some_and(|m| dk.verify_mac(&doc.mac_input(), m));
    if ok {
        return Ok(());
    }
    let what = if doc.mac.is_none() {
        "it has no `mac`"
    } else {
        "the MAC does not match"
    };
    Err(Error::integrity(format!(
        "{}: file was modified outside kmsenv: {what} (a plain or sealed value was edited, added or removed, a wrapping key was added, removed, reordered or edited, or the context changed)",
        doc.path.display()
    ))
    .with_hint("if this is your own hand merge, review it, then run `kmsenv check --fix-mac`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;
    use crate::kms::Context;
    use crate::kms::fake::{FakeKms, block_on, far, make_file};
    use crate::resolve::{Selection, open_with};

    #[test]
    fn data_key_failure_lists_every_key() -> TestResult {
        let kms = FakeKms {
            denied: vec!["k1".into()],
            ..Default::default()
        };
        let doc = make_file(&FakeKms::default(), &[("A", b"one")], &[])?;
        let err = block_on(open_with(&kms, &[doc], Selection::ALL, far(), None, None))?.unwrap_err();
        assert!(err.to_string().contains("k1: AccessDeniedException"), "{err}");
        Ok(())
    }

    #[test]
    fn under_a_pin_untrusted_wrappings_are_skipped_without_a_call() -> TestResult {
        let kms = FakeKms::default();
        let doc = make_file(&kms, &[("A", b"one")], &[])?;
        let trusted = "arn:aws:kms:us-east-1:1:key/trusted";
        let pin = crate::trust::TrustPin::from_sources(&[trusted.into()], None)?.ok_or("a pin")?;
        kms.calls.set(0);
        let err = block_on(open_with(&kms, &[doc], Selection::ALL, far(), Some(&pin), None))?.unwrap_err();
        assert!(
            err.to_string().contains("none of its wrapping keys is trusted"),
            "{err}"
        );
        assert_eq!(kms.calls.get(), 0);
        Ok(())
    }

    #[test]
    fn every_wrapping_must_open_the_same_data_key() -> TestResult {
        let kms = FakeKms::default();
        let doc = make_file(&kms, &[("A", b"one")], &[])?;
        let (dk, _) = block_on(unwrap_every_key(&kms, &doc, far()))??;
        // A second wrapping of another data key, as an attacker would append it.
        let mut ctx: Context = [("app".to_string(), "t".to_string())].into();
        ctx.insert("kmsenv:purpose".into(), "data-key".into());
        let other = block_on(kms.generate_data_key("k2", &ctx))??;
        let mut injected = doc.clone();
        injected.keys.push(crate::document::WrappingKey {
            arn: "k2".into(),
            data_key: other.blob,
            data_key_text: String::new(),
        });
        let err = block_on(unwrap_every_key(&kms, &injected, far()))?.unwrap_err();
        assert!(
            err.to_string().contains("k2: wraps another data key than k1"),
            "{err}"
        );
        assert_eq!(dk.plaintext().len(), 32);
        Ok(())
    }
}
