//! From validated files to decrypted values: unwrap every file's data key and
//! decrypt every direct `kms` value concurrently, verify each MAC, open the
//! sealed values, and refuse NUL bytes (DESIGN §4 steps 2–4).
//!
//! The result, [`OpenedFile`], holds only plaintext that passed every check.
//! Building the environment from it is `exec`'s business, not this module's.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::document::{Document, Entry, Value};
use crate::envelope::DataKey;
use crate::error::{Error, Result};
use crate::kms::{AwsError, KeyService, arn_region};
use crate::secret::Secret;
use crate::terminal::escape;
use crate::trust::TrustPin;

/// One decrypted variable.
#[derive(Debug)]
pub struct OpenedValue {
    pub name: String,
    pub secret: Secret,
    /// Deliver as a memfd path.
    pub file: bool,
}

/// A file whose MAC verified and whose selected values all opened.
#[derive(Debug)]
pub struct OpenedFile {
    pub path: PathBuf,
    /// The wrapping key that opened the data key, if the file has keys.
    pub opened_by: Option<String>,
    /// In file order.
    pub values: Vec<OpenedValue>,
}

/// Which values to open, and whether the MAC must match.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    /// Only these names (`exec --only`, `get`); `None` is every name.
    pub only: Option<&'a BTreeSet<String>>,
    /// `false` only for `check --fix-mac`, which rewrites the MAC afterwards.
    pub verify_mac: bool,
}

impl Selection<'_> {
    pub const ALL: Selection<'static> = Selection {
        only: None,
        verify_mac: true,
    };

    fn wants(&self, name: &str) -> bool {
        self.only.is_none_or(|o| o.contains(name))
    }
}

/// Whether opening `docs` needs any KMS call at all. When it does not, kmsenv
/// starts no runtime and loads no AWS configuration.
pub fn needs_kms(docs: &[Document], sel: Selection<'_>) -> bool {
    docs.iter().any(|d| {
        d.has_keys()
            || d.entries
                .iter()
                .any(|e| matches!(e.value, Value::Kms { .. }) && sel.wants(&e.name))
    })
}

/// Open `docs` when [`needs_kms`] says no KMS call is needed.
pub fn open_local(docs: &[Document], sel: Selection<'_>) -> Result<Vec<OpenedFile>> {
    docs.iter().map(|d| finish(d, None, Vec::new(), sel)).collect()
}

/// The region of the first key ARN in `docs`, used when none is configured.
pub fn first_arn_region<'a>(docs: impl IntoIterator<Item = &'a Document> + Clone) -> Option<String> {
    let keys = docs
        .clone()
        .into_iter()
        .flat_map(|d| d.keys.iter().map(|k| k.arn.as_str()));
    let direct = docs.into_iter().flat_map(|d| {
        d.entries.iter().filter_map(|e| match &e.value {
            Value::Kms { key, .. } => key.as_deref(),
            _ => None,
        })
    });
    keys.chain(direct).find_map(arn_region).map(str::to_string)
}

/// Open `docs` through `kms`: every KMS call of every file at once. Under a
/// trust pin, data keys open only through trusted keys and direct values must
/// decrypt under one.
pub async fn open_with<K: KeyService>(
    kms: &K,
    docs: &[Document],
    sel: Selection<'_>,
    deadline: Instant,
    pin: Option<&TrustPin>,
) -> Result<Vec<OpenedFile>> {
    let data_keys = join_all(docs.iter().map(|d| async move {
        if d.has_keys() {
            Some(unwrap_data_key(kms, d, deadline, pin).await)
        } else {
            None
        }
    }));
    let directs = join_all(docs.iter().map(|d| decrypt_directs(kms, d, sel, pin)));
    let (data_keys, directs) = futures_util::future::join(data_keys, directs).await;

    let mut opened = Vec::with_capacity(docs.len());
    for ((doc, dk), direct) in docs.iter().zip(data_keys).zip(directs) {
        let dk = dk.transpose()?;
        opened.push(finish(doc, dk, direct?, sel)?);
    }
    Ok(opened)
}

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
    if let Some(h) = last.as_ref().and_then(AwsError::hint) {
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
        _ => Err(Error::integrity(format!(
            "{}: every wrapping key must open the same data key before its key list can be trusted, and {}",
            doc.path.display(),
            causes.join("; ")
        ))
        .with_hint(
            "a [[kmsenv.keys]] entry you did not add may be an attacker's: remove it by hand, or retry if a key was unreachable",
        )),
    }
}

/// Decrypt the selected direct `kms` values of `doc`, concurrently.
async fn decrypt_directs<K: KeyService>(
    kms: &K,
    doc: &Document,
    sel: Selection<'_>,
    pin: Option<&TrustPin>,
) -> Result<Vec<(String, Secret)>> {
    let jobs = doc
        .entries
        .iter()
        .filter(|e| sel.wants(&e.name))
        .filter_map(|e| match &e.value {
            Value::Kms { blob, key, context } => Some(async move {
                let r = kms.decrypt(key.as_deref(), blob, context, None).await;
                (e, key, context, r)
            }),
            _ => None,
        });
    let mut out = Vec::new();
    for (e, key, context, r) in join_all(jobs).await {
        match r {
            Ok(d) if pin.is_some_and(|p| !p.trusts(&d.key_arn)) => {
                return Err(Error::integrity(format!(
                    "{}:{}: {}: decrypted under {}, which is not a trusted key",
                    doc.path.display(),
                    e.at,
                    e.name,
                    escape(&d.key_arn)
                )));
            }
            Ok(d) => out.push((e.name.clone(), d.plaintext)),
            Err(k) => {
                let key = key.as_deref().unwrap_or("(the key named in the ciphertext)");
                let ctx = if context.is_empty() {
                    "no context".to_string()
                } else {
                    format!("context {context:?}")
                };
                let mut err = Error::kms(format!(
                    "{}:{}: {}: KMS Decrypt with key {key} and {ctx} failed: {k}",
                    doc.path.display(),
                    e.at,
                    e.name
                ));
                if let Some(h) = k.hint() {
                    err = err.with_hint(h);
                }
                return Err(err);
            }
        }
    }
    Ok(out)
}

/// Verify the MAC, open sealed values and assemble the file's values in order.
fn finish(
    doc: &Document,
    dk: Option<(DataKey, String)>,
    direct: Vec<(String, Secret)>,
    sel: Selection<'_>,
) -> Result<OpenedFile> {
    let mut direct: std::collections::HashMap<String, Secret> = direct.into_iter().collect();
    let path = doc.path.display();
    if let (Some((dk, _)), true) = (&dk, sel.verify_mac) {
        verify_mac(doc, dk)?;
    }
    let mut values = Vec::new();
    for e in doc.entries.iter().filter(|e| sel.wants(&e.name)) {
        let secret = match &e.value {
            Value::Plain(t) => Secret::new(t.as_bytes().to_vec()),
            Value::Sealed(text) => {
                let Some((dk, _)) = &dk else {
                    return Err(Error::input(format!(
                        "{path}: {}: sealed value in a file without keys",
                        e.name
                    )));
                };
                open_sealed(doc, dk, e, text)?
            }
            Value::Kms { .. } => match direct.remove(e.name.as_str()) {
                Some(secret) => secret,
                None => continue,
            },
        };
        // A file value reaches the program through a memfd, which may hold any bytes.
        if !e.file && secret.expose().contains(&0) {
            return Err(Error::input(format!(
                "{path}: {}: decrypted value contains a NUL byte, which an environment variable cannot hold",
                e.name
            )));
        }
        values.push(OpenedValue {
            name: e.name.clone(),
            secret,
            file: e.file,
        });
    }
    Ok(OpenedFile {
        path: doc.path.clone(),
        opened_by: dk.map(|(_, arn)| arn),
        values,
    })
}

/// Open one sealed entry of `doc`; the error names the file, line, column and name.
pub fn open_sealed(doc: &Document, dk: &DataKey, e: &Entry, text: &str) -> Result<Secret> {
    dk.open(&e.name, text).map_err(|why| {
        Error::integrity(format!(
            "{}:{}: {}: {}",
            doc.path.display(),
            e.at,
            e.name,
            why.describe()
        ))
    })
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
    use crate::kms::fake::FakeKms;

    /// The fake KMS does no I/O: a runtime with only a clock (for deadlines) runs it.
    fn block_on<F: std::future::Future>(fut: F) -> std::io::Result<F::Output> {
        Ok(tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?
            .block_on(fut))
    }
    use std::path::Path;

    /// A file made through the fake KMS, with the given sealed and plain values.
    fn make_file(
        kms: &FakeKms,
        sealed: &[(&str, &[u8])],
        plain: &[(&str, &str)],
    ) -> std::result::Result<Document, Box<dyn std::error::Error>> {
        let ctx: Context = [("app".to_string(), "t".to_string())].into();
        let mut dk_ctx = ctx.clone();
        dk_ctx.insert("kmsenv:purpose".into(), "data-key".into());
        let g = block_on(kms.generate_data_key("k1", &dk_ctx))??;
        let dk = DataKey::from_plaintext(&g.plaintext).ok_or("the fake's data key has 32 bytes")?;
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&g.blob);
        let mut text = format!(
            "[kmsenv]\nversion = 2\ncontext = {{ app = \"t\" }}\n\n[[kmsenv.keys]]\narn = \"k1\"\ndata_key = \"{b64}\"\n\n[env]\n"
        );
        for (n, v) in sealed {
            text += &format!("{n} = {{ sealed = \"{}\" }}\n", dk.seal(n, v));
        }
        for (n, v) in plain {
            text += &format!("{n} = \"{v}\"\n");
        }
        let doc = Document::parse(Path::new("t.toml"), text.clone())?;
        let mac = dk.mac(&doc.mac_input());
        text = text.replacen("version = 2\n", &format!("version = 2\nmac = \"{mac}\"\n"), 1);
        Ok(Document::parse(Path::new("t.toml"), text)?)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn opens_sealed_and_plain_values_with_one_kms_call() -> TestResult {
        let kms = FakeKms::default();
        let doc = make_file(&kms, &[("A", b"one"), ("B", b"two")], &[("C", "three")])?;
        kms.calls.set(0);
        let files = block_on(open_with(&kms, &[doc], Selection::ALL, far(), None))??;
        let got: Vec<_> = files[0]
            .values
            .iter()
            .map(|v| (v.name.as_str(), v.secret.expose()))
            .collect();
        assert_eq!(got, [("A", &b"one"[..]), ("B", b"two"), ("C", b"three")]);
        assert_eq!(kms.calls.get(), 1);
        Ok(())
    }

    #[test]
    fn edited_plain_value_fails_the_mac() -> TestResult {
        let kms = FakeKms::default();
        let doc = make_file(&kms, &[("A", b"one")], &[("HOST", "db1")])?;
        let tampered = Document::parse(Path::new("t.toml"), doc.text.replace("db1", "evil"))?;
        let err = block_on(open_with(&kms, &[tampered], Selection::ALL, far(), None))?.unwrap_err();
        assert!(err.to_string().contains("modified outside kmsenv"), "{err}");
        Ok(())
    }

    #[test]
    fn data_key_failure_lists_every_key() -> TestResult {
        let kms = FakeKms {
            denied: vec!["k1".into()],
            ..Default::default()
        };
        let doc = make_file(&FakeKms::default(), &[("A", b"one")], &[])?;
        let err = block_on(open_with(&kms, &[doc], Selection::ALL, far(), None))?.unwrap_err();
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
        let err = block_on(open_with(&kms, &[doc], Selection::ALL, far(), Some(&pin)))?.unwrap_err();
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

    #[test]
    fn plain_only_files_need_no_kms() -> TestResult {
        let doc = Document::parse(
            Path::new("p.toml"),
            "[kmsenv]\nversion = 2\n[env]\nA = \"x\"\n".into(),
        )?;
        assert!(!needs_kms(std::slice::from_ref(&doc), Selection::ALL));
        Ok(())
    }
}
