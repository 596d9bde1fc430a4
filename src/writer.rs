//! A file opened for writing: the one way a command changes or creates a file.
//!
//! A [`Writer`] locks first, parses once, opens and checks the data key only
//! when a command needs it, and saves atomically. Nothing is encrypted, wrapped
//! or MAC'd under a key list that was not verified: the data key is handed out
//! only after the MAC verified (format 2 covers the keys) or, where no MAC
//! vouches for the keys (format 1, or `check --fix-mac`), after every wrapping
//! opened the same data key. Saving writes format 2.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::aws::Service;
use crate::document::{Document, FILE_CONTEXT_KEY, FORMAT_VERSION, Value};
use crate::envelope::DataKey;
use crate::error::{Class, Error, Result};
use crate::kms::new_data_key;
use crate::run::{Connect, Run};
use crate::session::Session;
use crate::store::{self, Editor, Lock, Mode};
use crate::unlock;

pub struct Writer<'r, K> {
    run: &'r Run<K>,
    _lock: Lock,
    /// The file as it was loaded (or, for a new file, as it starts).
    doc: Document,
    editor: Editor,
    /// Verified for `doc`, or the new one after `rekey` or `create`.
    data_key: Option<DataKey>,
    mode: Mode,
}

/// How much the file's MAC is trusted when its data key is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MacCheck {
    /// The MAC must verify (format 2: it covers the keys; format 1: it does not,
    /// so every wrapping must also open the same data key).
    Verify,
    /// `check --fix-mac`: the MAC is not trusted; every wrapping must agree.
    Replace,
}

impl<'r, K: Connect> Writer<'r, K> {
    /// Lock and load `path`. Nothing is unwrapped yet.
    pub fn open(run: &'r Run<K>, path: &Path) -> Result<Writer<'r, K>> {
        let w = Writer::open_to_upgrade(run, path)?;
        // A write upgrades a format-1 file; one whose file-delivered direct
        // values are not bound yet needs `upgrade` itself (which re-encrypts
        // them): said now, before any KMS work is done for nothing.
        let unbound: Vec<&str> = w
            .doc
            .entries
            .iter()
            .filter(|e| {
                e.file && matches!(&e.value, Value::Kms { context, .. } if !context.contains_key(FILE_CONTEXT_KEY))
            })
            .map(|e| e.name.as_str())
            .collect();
        if w.doc.is_legacy() && !unbound.is_empty() {
            return Err(Error::usage(format!(
                "{}: format version 1 with direct values delivered as files whose flag is not bound yet ({}); nothing was changed",
                path.display(),
                unbound.join(" ")
            ))
            .with_hint("run `kmsenv upgrade` first (it binds them), then this command"));
        }
        Ok(w)
    }

    /// [`Writer::open`] for `upgrade`, which binds what format 1 left unbound.
    pub fn open_to_upgrade(run: &'r Run<K>, path: &Path) -> Result<Writer<'r, K>> {
        let lock = store::lock(path, run.deadline)?;
        let doc = Document::load(path, run.deadline)?;
        run.admit(&doc, true)?;
        let editor = Editor::new(&doc)?;
        Ok(Writer {
            run,
            _lock: lock,
            doc,
            editor,
            data_key: None,
            mode: Mode::Replace,
        })
    }

    /// Lock and load the file `original` was read from, which must not have
    /// changed since (`edit` reads it, lets the user edit, then writes): else a
    /// conflict, and nothing is written. `unlocked` is the data key the caller
    /// opened and verified for `original`; a format-1 file is verified again
    /// here, every wrapping included, before it is upgraded.
    pub fn open_unchanged(
        run: &'r Run<K>,
        original: &Document,
        unlocked: Option<DataKey>,
    ) -> Result<Writer<'r, K>> {
        let mut w = Writer::open(run, &original.path)?;
        if w.doc.text != original.text {
            return Err(Error::new(
                Class::Conflict,
                format!(
                    "{}: the file changed while you were editing; nothing was written",
                    original.path.display()
                ),
            )
            .with_hint("run `kmsenv edit` again"));
        }
        if !w.doc.is_legacy() {
            w.data_key = unlocked;
        }
        Ok(w)
    }

    /// A new file at `path` (`init`): a fresh data key made under `keys` (the
    /// first generates it, each further one wraps it), with the encryption
    /// `context`; written, by `save`, only if no file is there.
    pub fn create(
        run: &'r Run<K>,
        path: &Path,
        context: &BTreeMap<String, String>,
        keys: &[&str],
    ) -> Result<Writer<'r, K>> {
        let lock = store::lock(path, run.deadline)?;
        if path.exists() {
            return Err(Error::input(format!(
                "{}: already exists; refusing to overwrite it",
                path.display()
            ))
            .with_hint("use `kmsenv set` to add values, or remove the file first"));
        }
        // Validated the way the file will be read back, before any KMS call.
        let mut editor = Editor::create(path, context)?;
        let doc = editor.finish()?;
        let (session, kms) = run.kms(std::slice::from_ref(&doc))?;
        let made = session
            .block_on(new_data_key(kms, keys, &doc.data_key_context()))
            .map_err(|f| kms_failure(path, None, &f.key, f.op, f.error))?;
        if let Some(pin) = &run.pin
            && !made.wrappings.iter().any(|(arn, _)| pin.trusts(arn))
        {
            return Err(Error::usage(format!(
                "{}: none of the keys given is trusted (trusted: {}); nothing was written",
                path.display(),
                pin.describe()
            )));
        }
        let data_key = DataKey::from_plaintext(&made.plaintext).ok_or_else(|| {
            Error::kms(format!(
                "{}: KMS returned a data key that is not 32 bytes",
                path.display()
            ))
        })?;
        for (arn, blob) in &made.wrappings {
            editor.add_key(arn, &B64.encode(blob))?;
        }
        Ok(Writer {
            run,
            _lock: lock,
            doc,
            editor,
            data_key: Some(data_key),
            mode: Mode::CreateNew,
        })
    }

    /// The file as it was loaded.
    pub fn doc(&self) -> &Document {
        &self.doc
    }

    /// The edits that `save` writes.
    pub fn editor(&mut self) -> &mut Editor {
        &mut self.editor
    }

    /// The run's session and key service, for a command's own KMS calls.
    pub fn kms(&self) -> Result<(&'r Session, &'r K)> {
        self.run.kms(std::slice::from_ref(&self.doc))
    }

    /// The file's data key, once the file verified; `None` for a file without keys.
    pub fn data_key(&mut self) -> Result<Option<&DataKey>> {
        self.open_data_key(MacCheck::Verify)
    }

    /// Seal `value` for `name` under the verified data key.
    pub fn seal(&mut self, name: &str, value: &[u8]) -> Result<String> {
        let path = self.doc.path.display().to_string();
        match self.data_key()? {
            Some(dk) => Ok(dk.seal(name, value)),
            None => Err(Error::usage(format!("{path}: has no [[kmsenv.keys]] to seal {name} with"))
                .with_hint(
                    "use --kms (one KMS ciphertext per value), or create a keyed file with `kmsenv init --key KEY`",
                )),
        }
    }

    /// The data key for `check --fix-mac`, which does not trust the old MAC:
    /// every wrapping must open the same data key.
    pub fn data_key_for_new_mac(&mut self) -> Result<&DataKey> {
        let path = self.doc.path.display().to_string();
        self.open_data_key(MacCheck::Replace)?
            .ok_or_else(|| Error::usage(format!("{path}: has no [[kmsenv.keys]], so it has no MAC to fix")))
    }

    /// The data key opened through every wrapping but the `index`-th, with the
    /// MAC of the file as it is verified: `keys remove` proves the file still
    /// opens without that key.
    pub fn data_key_without(&mut self, index: usize) -> Result<&DataKey> {
        let path = self.doc.path.display().to_string();
        if self.doc.is_legacy() {
            // No MAC vouches for a format-1 key list: every wrapping (so also
            // those that remain) must open the same data key first.
            return self
                .open_data_key(MacCheck::Verify)?
                .ok_or_else(|| Error::usage(format!("{path}: has no [[kmsenv.keys]]")));
        }
        let mut rest = self.doc.clone();
        rest.keys.remove(index);
        let (session, kms) = self.kms()?;
        let (dk, arn) = session
            .block_on(unlock::unwrap_data_key(
                kms,
                &rest,
                self.run.deadline,
                self.run.pin.as_ref(),
            ))
            .map_err(|e| e.with_hint("the file would not open without this key; nothing was changed"))?;
        self.check_opened(&dk, &arn, MacCheck::Verify)?;
        Ok(self.data_key.insert(dk))
    }

    /// `rotate`: a new data key under the file's keys, its wrappings put in the
    /// editor; from now on values are sealed and MAC'd under it. Returns the old
    /// one (verified), to open what was sealed under it.
    pub fn rekey(&mut self) -> Result<DataKey> {
        let path = self.doc.path.clone();
        if self.data_key()?.is_none() {
            return Err(Error::usage(format!(
                "{}: has no data key to rotate",
                path.display()
            )));
        }
        let arns: Vec<&str> = self.doc.keys.iter().map(|k| k.arn.as_str()).collect();
        let (session, kms) = self.kms()?;
        let made = session
            .block_on(new_data_key(kms, &arns, &self.doc.data_key_context()))
            .map_err(|f| kms_failure(&path, None, &f.key, f.op, f.error))?;
        let new = DataKey::from_plaintext(&made.plaintext).ok_or_else(|| {
            Error::kms(format!(
                "{}: KMS returned a data key that is not 32 bytes",
                path.display()
            ))
        })?;
        for (i, (_, blob)) in made.wrappings.iter().enumerate() {
            self.editor.set_key_blob(i, &B64.encode(blob))?;
        }
        self.data_key
            .replace(new)
            .ok_or_else(|| Error::new(Class::Internal, "internal: the old data key is gone"))
    }

    /// The key a new direct value of this file is encrypted to when `--key` is
    /// not given: the first wrapping key, once the key list verified (needs
    /// kms:Decrypt), or the first trusted one under a pin (the pin vouches).
    pub fn direct_value_key(&mut self) -> Result<String> {
        if let Some(pin) = &self.run.pin
            && let Some(k) = self.doc.keys.iter().find(|k| pin.trusts(&k.arn))
        {
            return Ok(k.arn.clone());
        }
        let path = self.doc.path.display().to_string();
        let hint = "pass the key to encrypt to with --key ARN (or --trust-key ARN), so an unverified file cannot choose it";
        match self.data_key() {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(
                    Error::usage(format!("{path}: has no [[kmsenv.keys]]; name a key with --key"))
                        .with_hint("e.g. --kms --key arn:aws:kms:REGION:ACCOUNT:key/ID"),
                );
            }
            Err(e) => {
                return Err(Error::new(
                    e.class,
                    format!("cannot verify which key to encrypt to: {}", e.message()),
                )
                .with_hint(hint));
            }
        }
        self.doc
            .keys
            .first()
            .map(|k| k.arn.clone())
            .ok_or_else(|| Error::usage(format!("{path}: has no [[kmsenv.keys]]")))
    }

    /// The key a changed direct value of `name` is encrypted to (`edit`): the
    /// entry's own `key` only when the verified key list or the pin vouches for
    /// it — the entry is outside the MAC, so whoever wrote the file chose it —
    /// else refused; without one, [`Writer::direct_value_key`].
    pub fn vouched_key(&mut self, name: &str, named: Option<&str>) -> Result<String> {
        let Some(key) = named else {
            return self.direct_value_key();
        };
        if self.run.pin.as_ref().is_some_and(|p| p.trusts(key)) {
            return Ok(key.to_string());
        }
        self.data_key()?;
        if self.doc.keys.iter().any(|k| k.arn == key) {
            return Ok(key.to_string());
        }
        Err(Error::usage(format!(
            "{}: {name}: its key {key} is not one of the file's wrapping keys, and the file cannot vouch for it; nothing was changed",
            self.doc.path.display()
        ))
        .with_hint(format!(
            "if that key is yours, re-set the value with `kmsenv set --kms --key ARN {name}`"
        )))
    }

    /// Under a pin, a value may only be encrypted to a trusted key: `arn` is
    /// what KMS answered for the key the user named.
    pub fn check_trusted(&self, name: &str, arn: &str) -> Result<()> {
        match &self.run.pin {
            Some(pin) if !pin.trusts(arn) => Err(Error::usage(format!(
                "{}: {name}: key {arn} is not trusted (trusted: {}); nothing was changed",
                self.doc.path.display(),
                pin.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// A failed KMS call about this file (`name`: one variable of it).
    pub fn kms_error(&self, name: Option<&str>, key: &str, op: &str, e: crate::aws::AwsError) -> Error {
        kms_failure(&self.doc.path, name, key, op, e)
    }

    fn open_data_key(&mut self, check: MacCheck) -> Result<Option<&DataKey>> {
        if self.data_key.is_some() || !self.doc.has_keys() {
            return Ok(self.data_key.as_ref());
        }
        let (session, kms) = self.kms()?;
        let deadline = self.run.deadline;
        let every = check == MacCheck::Replace || self.doc.is_legacy();
        let (dk, arn) = if every {
            session.block_on(unlock::unwrap_every_key(kms, &self.doc, deadline))?
        } else {
            session.block_on(unlock::unwrap_data_key(
                kms,
                &self.doc,
                deadline,
                self.run.pin.as_ref(),
            ))?
        };
        self.check_opened(&dk, &arn, check)?;
        Ok(Some(self.data_key.insert(dk)))
    }

    fn check_opened(&self, dk: &DataKey, arn: &str, check: MacCheck) -> Result<()> {
        if check == MacCheck::Verify {
            unlock::verify_mac(&self.doc, dk)?;
        }
        self.run
            .info(format!("{}: data key opened with {arn}", self.doc.path.display()));
        Ok(())
    }

    /// Re-validate the edited text, write format 2 and, if the file has keys,
    /// the MAC under the verified data key; replace (or create) the file atomically.
    pub fn save(mut self) -> Result<Document> {
        let upgrade = self.doc.version != FORMAT_VERSION;
        if upgrade {
            if self.doc.has_keys() {
                let path = self.doc.path.display().to_string();
                self.open_data_key(MacCheck::Verify).map_err(|e| {
                    if e.class == Class::Kms {
                        Error::kms(format!(
                            "{path}: is format version 1, and a write upgrades it to version 2, which needs kms:Decrypt on every wrapping key; nothing was written: {}",
                            e.message()
                        ))
                        .with_hint("have someone with kms:Decrypt run `kmsenv upgrade` and commit the result, then try again")
                    } else {
                        e
                    }
                })?;
            }
            self.editor.set_version(FORMAT_VERSION)?;
        }
        let mut doc = self.editor.finish()?;
        // A change to what the MAC covers (or an upgrade) needs the verified
        // data key; with it the MAC is always written anew (`check --fix-mac`
        // changes nothing else). Without it only direct `kms` entries changed:
        // they are outside the MAC, which is what lets a contributor with only
        // kms:Encrypt add one.
        if doc.has_keys() {
            if doc.mac_input() != self.doc.mac_input() {
                self.open_data_key(MacCheck::Verify)?;
            }
            if let Some(dk) = &self.data_key {
                let mac = dk.mac(&doc.mac_input());
                self.editor.set_mac(&mac)?;
                doc = self.editor.finish()?;
            }
        }
        store::write_atomic(&doc.path, &doc.text, self.mode)?;
        if upgrade {
            self.run.note(format!(
                "{}: upgraded to format version {FORMAT_VERSION} (its MAC now covers the wrapping keys)",
                doc.path.display()
            ));
        }
        Ok(doc)
    }
}

/// A failed KMS call of a writing command about `path` (and variable `name`).
pub fn kms_failure(path: &Path, name: Option<&str>, key: &str, op: &str, e: crate::aws::AwsError) -> Error {
    let place = match name {
        Some(n) => format!("{}: {n}", path.display()),
        None => path.display().to_string(),
    };
    e.into_error(place, format!("KMS {op} with key {key}"), Service::Kms)
}
