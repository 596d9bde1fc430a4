//! From validated files to decrypted values: unwrap every file's data key,
//! decrypt every direct `kms` value and read every reference (`refs`)
//! concurrently, verify each MAC, open the sealed values, and refuse NUL bytes
//! (DESIGN §4 steps 2–4).
//!
//! The result, [`OpenedFile`], holds only plaintext that passed every check.
//! Building the environment from it is `exec`'s business, not this module's.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use futures_util::future::join_all;

use crate::aws::Service;
use crate::document::{Document, Entry, Value, value_rule};
use crate::envelope::DataKey;
use crate::error::{Error, Result};
use crate::kms::{KeyService, arn_region};
use crate::refs::{self, RefService, RefValues};
use crate::secret::Secret;
use crate::terminal::escape;
use crate::trust::TrustPin;
use crate::unlock;

/// One decrypted variable.
#[derive(Debug)]
pub struct OpenedValue {
    pub name: String,
    pub secret: Secret,
    /// Deliver as a memfd path.
    pub file: bool,
    pub origin: Origin,
    /// Whether the value is a secret: sealed or direct, or a template that uses
    /// one (`template::expand` decides). What `export --format github` masks.
    pub sensitive: bool,
}

/// What kind of entry a value was opened from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Plain,
    /// Sealed or direct `kms`.
    Secret,
    /// Holds the template text until `template::expand` resolves it.
    Template,
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

/// How many values `files` hold in all (names counted once per file), to size
/// the indexes built over them.
pub fn value_count(files: &[OpenedFile]) -> usize {
    files.iter().map(|f| f.values.len()).sum()
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

    pub fn wants(&self, name: &str) -> bool {
        self.only.is_none_or(|o| o.contains(name))
    }
}

/// Whether opening `docs` needs any AWS call at all (KMS, or a reference).
/// When it does not, kmsenv starts no runtime and loads no AWS configuration.
pub fn needs_kms(docs: &[Document], sel: Selection<'_>) -> bool {
    refs::any(docs, sel)
        || docs.iter().any(|d| {
            d.has_keys()
                || d.entries
                    .iter()
                    .any(|e| matches!(e.value, Value::Kms { .. }) && sel.wants(&e.name))
        })
}

/// Open `docs` when [`needs_kms`] says no KMS call is needed.
pub fn open_local(docs: &[Document], sel: Selection<'_>) -> Result<Vec<OpenedFile>> {
    docs.iter()
        .map(|d| finish(d, None, None, Vec::new(), &mut RefValues::new(), 0, sel))
        .collect()
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

/// Open `docs` through `kms`: every KMS call of every file, and every read of
/// a reference, at once. Under a trust pin, data keys open only through trusted
/// keys and direct values must decrypt under one, and references are read only
/// once every MAC verified: a hostile writer of the file must not choose which
/// secrets (or which account's) this caller asks for, which the pin promises.
/// A file whose data key or MAC fails is reported before any failed reference:
/// the reference may be the tampered part. `early` is the first file's data key
/// when it was opened already (`early`), as `unlock::unwrap_data_key` would.
pub async fn open_with<K: KeyService + RefService>(
    kms: &K,
    docs: &[Document],
    sel: Selection<'_>,
    deadline: Instant,
    pin: Option<&TrustPin>,
    early: Option<crate::early::Opened>,
) -> Result<Vec<OpenedFile>> {
    let mut early = early;
    let data_keys = join_all(docs.iter().map(|d| {
        let opened = early.take();
        async move {
            match opened {
                Some(key) => Some(key),
                None if d.has_keys() => Some(unlock::unwrap_data_key(kms, d, deadline, pin).await),
                None => None,
            }
        }
    }));
    let directs = join_all(docs.iter().map(|d| decrypt_directs(kms, d, sel, pin)));
    let keys_and_directs = futures_util::future::join(data_keys, directs);
    let (unlocked, directs, references) = if pin.is_some() {
        let (data_keys, directs) = keys_and_directs.await;
        let unlocked = verified(docs, data_keys, sel)?;
        (unlocked, directs, refs::read_all(kms, docs, sel).await)
    } else {
        let ((data_keys, directs), references) =
            futures_util::future::join(keys_and_directs, refs::read_all(kms, docs, sel)).await;
        (verified(docs, data_keys, sel)?, directs, references)
    };
    let mut references = references?;
    let mut opened = Vec::with_capacity(docs.len());
    for (i, ((doc, dk), direct)) in docs.iter().zip(unlocked).zip(directs).enumerate() {
        let (key, by) = match dk {
            Some((k, arn)) => (Some(k), Some(arn)),
            None => (None, None),
        };
        opened.push(finish(doc, key.as_ref(), by, direct?, &mut references, i, sel)?);
    }
    Ok(opened)
}

/// The data key of each file, once its MAC verified (when `sel` asks for it).
fn verified(
    docs: &[Document],
    data_keys: Vec<Option<Result<(DataKey, String)>>>,
    sel: Selection<'_>,
) -> Result<Vec<Option<(DataKey, String)>>> {
    let mut unlocked = Vec::with_capacity(docs.len());
    for (doc, dk) in docs.iter().zip(data_keys) {
        let dk = dk.transpose()?;
        if let (Some((dk, _)), true) = (&dk, sel.verify_mac) {
            unlock::verify_mac(doc, dk)?;
        }
        unlocked.push(dk);
    }
    Ok(unlocked)
}

/// Open `doc` whose data key the caller already holds (`dk`, opened through
/// `opened_by`): its direct values are decrypted, its sealed values opened.
pub async fn open_unlocked<K: KeyService + RefService>(
    kms: &K,
    doc: &Document,
    dk: Option<&DataKey>,
    opened_by: Option<String>,
    sel: Selection<'_>,
    pin: Option<&TrustPin>,
) -> Result<OpenedFile> {
    let docs = std::slice::from_ref(doc);
    // The key is at hand, so the MAC is checked before any reference is read.
    if let (Some(dk), true) = (dk, sel.verify_mac) {
        unlock::verify_mac(doc, dk)?;
    }
    let (direct, references) = futures_util::future::join(
        decrypt_directs(kms, doc, sel, pin),
        refs::read_all(kms, docs, sel),
    )
    .await;
    let mut references = references?;
    finish(doc, dk, opened_by, direct?, &mut references, 0, sel)
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
                let place = format!("{}:{}: {}", doc.path.display(), e.at, e.name);
                return Err(k.into_error(
                    place,
                    format!("KMS Decrypt with key {key} and {ctx}"),
                    Service::Kms,
                ));
            }
        }
    }
    Ok(out)
}

/// Open sealed values and assemble the file's values in order (the MAC is
/// verified by the caller, with `dk`); `references` holds the values read for
/// file number `index`.
fn finish(
    doc: &Document,
    dk: Option<&DataKey>,
    opened_by: Option<String>,
    direct: Vec<(String, Secret)>,
    references: &mut RefValues,
    index: usize,
    sel: Selection<'_>,
) -> Result<OpenedFile> {
    let mut direct: std::collections::HashMap<String, Secret> = direct.into_iter().collect();
    let path = doc.path.display();
    let mut values = Vec::with_capacity(doc.entries.iter().filter(|e| sel.wants(&e.name)).count());
    for e in doc.entries.iter().filter(|e| sel.wants(&e.name)) {
        let origin = match &e.value {
            Value::Plain(_) => Origin::Plain,
            Value::Template(_) => Origin::Template,
            Value::Sealed(_) | Value::Kms { .. } | Value::Ref(_) => Origin::Secret,
        };
        let secret = match &e.value {
            Value::Plain(t) | Value::Template(t) => Secret::new(t.as_bytes().to_vec()),
            Value::Sealed(text) => {
                let Some(dk) = dk else {
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
            Value::Ref(_) => references.remove(&(index, e.name.clone())).ok_or_else(|| {
                Error::new(
                    crate::error::Class::Internal,
                    format!("internal: {path}: {}: its reference was not read", e.name),
                )
            })?,
        };
        // A file value reaches the program through a memfd, which may hold any bytes.
        if let Some(why) = value_rule(&e.name, secret.expose(), e.file) {
            return Err(Error::input(format!("{path}: {why}")));
        }
        values.push(OpenedValue {
            name: e.name.clone(),
            secret,
            file: e.file,
            origin,
            sensitive: origin == Origin::Secret,
        });
    }
    Ok(OpenedFile {
        path: doc.path.clone(),
        opened_by,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;
    use crate::kms::fake::{FakeKms, block_on, far, make_file};
    use std::path::Path;

    #[test]
    fn opens_sealed_and_plain_values_with_one_kms_call() -> TestResult {
        let kms = FakeKms::default();
        let doc = make_file(&kms, &[("A", b"one"), ("B", b"two")], &[("C", "three")])?;
        kms.calls.set(0);
        let files = block_on(open_with(&kms, &[doc], Selection::ALL, far(), None, None))??;
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
        let err = block_on(open_with(&kms, &[tampered], Selection::ALL, far(), None, None))?.unwrap_err();
        assert!(err.to_string().contains("modified outside kmsenv"), "{err}");
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
