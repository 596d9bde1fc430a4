//! The attacker of tests/integrity.rs (issue 10, DESIGN §8): someone who can write
//! the file but holds no `kms:Decrypt` on its data key, with a KMS key of their own.
//!
//! A [`Victim`] is a genuine file made by kmsenv, proved to run a marker command,
//! whose kmsenv runs all go through a fault proxy, so a test can list which KMS
//! key each call asked for. The edits here change the TOML text the way a pull
//! request or an S3 `PutObject` would; the version-1 file is built from a genuine
//! one with the data key and the v1 MAC computed here, independently of the
//! library (so a v1 encoding that drifted would show).

use std::collections::BTreeMap;
use std::path::PathBuf;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

/// Values a file holds; none may ever appear in the output of a refused run.
pub const DATABASE_URL_VALUE: &str = "postgres://billing:canary-db-5b1f@db.internal/billing";
pub const API_TOKEN_VALUE: &str = "canary-api-token-93c2";
pub const TLS_KEY_VALUE: &str = "-----BEGIN PRIVATE KEY-----canary-tls-4d7a";
const CANARIES: [&str; 3] = [DATABASE_URL_VALUE, API_TOKEN_VALUE, TLS_KEY_VALUE];

/// The file context of every victim (so context-bound calls can be told apart).
pub const APP: (&str, &str) = ("app", "billing");

/// The encryption context of the victim's data key: file context + purpose.
pub fn data_key_context() -> Vec<(&'static str, &'static str)> {
    vec![APP, ("kmsenv:purpose", "data-key")]
}

/// KMS operations that make a ciphertext a key's holder can open.
pub const WRAPPING_OPS: [&str; 3] = ["Encrypt", "GenerateDataKey", "ReEncrypt"];

/// A genuine file and the world around it.
pub struct Victim {
    pub sandbox: Sandbox,
    pub file: PathBuf,
    /// The genuine wrapping keys, in file order.
    pub keys: Vec<String>,
    /// Every kmsenv run of the victim goes through it.
    pub proxy: Proxy,
}

impl Victim {
    /// `init --key K --context app=billing`, then a sealed `DATABASE_URL`, a direct
    /// `API_TOKEN` (`set --kms`) and a plain `DB_HOST`; proved to run the command.
    pub fn new() -> Victim {
        Victim::with_keys(1)
    }

    /// Like [`Victim::new`], wrapped by `n` genuine keys.
    pub fn with_keys(n: usize) -> Victim {
        let sandbox = Sandbox::new();
        let keys: Vec<String> = (0..n).map(|_| sandbox.key()).collect();
        let file = sandbox.path("kmsenv.toml");
        let mut init = sandbox.kmsenv().file(&file).arg("init");
        for key in &keys {
            init = init.arg("--key").arg(key);
        }
        init.args(["--context", "app=billing"]).run().ok();
        sandbox.set(&file, "DATABASE_URL", DATABASE_URL_VALUE.as_bytes());
        sandbox.set_with(&file, &["--kms"], "API_TOKEN", API_TOKEN_VALUE.as_bytes());
        sandbox.set_with(&file, &["--plain"], "DB_HOST", b"db.internal");
        let victim = Victim {
            sandbox,
            file,
            keys,
            proxy: Proxy::start(),
        };
        victim.assert_runs(|k| k);
        victim
    }

    /// Adds `TLS_KEY` made by `set --kms --as-file`.
    pub fn with_tls_key_as_file(self) -> Victim {
        self.sandbox.set_with(
            &self.file,
            &["--kms", "--as-file"],
            "TLS_KEY",
            TLS_KEY_VALUE.as_bytes(),
        );
        self.assert_runs(|k| k);
        self
    }

    /// Makes `API_TOKEN` again, under `key` (`set --kms --key`).
    pub fn with_api_token_under(self, key: &str) -> Victim {
        self.sandbox.set_with(
            &self.file,
            &["--kms", "--key", key],
            "API_TOKEN",
            API_TOKEN_VALUE.as_bytes(),
        );
        self.assert_runs(|k| k);
        self
    }

    /// The first genuine key.
    pub fn key(&self) -> &str {
        &self.keys[0]
    }

    pub fn text(&self) -> String {
        self.sandbox.read(&self.file)
    }

    pub fn path(&self) -> String {
        self.file.display().to_string()
    }

    /// Rewrites the file as an attacker would; the edit must change something.
    #[track_caller]
    pub fn edit(&self, edit: impl FnOnce(&str) -> String) {
        let text = self.text();
        let edited = edit(&text);
        assert_ne!(edited, text, "the edit changed nothing");
        self.sandbox.write(&self.file, &edited);
    }

    /// `kmsenv -f FILE` through the proxy.
    pub fn kmsenv(&self) -> Kmsenv {
        self.sandbox
            .kmsenv()
            .endpoint(&self.proxy.endpoint())
            .file(&self.file)
    }

    /// `kmsenv -f FILE [options] exec -- sh -c 'touch MARKER'` through the proxy;
    /// `options` adds global options or environment (e.g. a trust pin).
    pub fn exec_marker(&self, options: impl FnOnce(Kmsenv) -> Kmsenv) -> Output {
        options(self.kmsenv())
            .args(["exec", "--"])
            .args(self.sandbox.touch_marker_command())
            .run()
    }

    /// Asserts that exec runs the command; removes the marker again.
    #[track_caller]
    pub fn assert_runs(&self, options: impl FnOnce(Kmsenv) -> Kmsenv) -> Output {
        let out = self.exec_marker(options).ok();
        assert!(
            self.sandbox.marker().exists(),
            "the marker command should have run"
        );
        std::fs::remove_file(self.sandbox.marker()).expect("remove marker");
        out
    }

    /// exec must fail 125 with every needle in stderr, print no secret, and not run
    /// the command.
    #[track_caller]
    pub fn assert_exec_fails_closed(
        &self,
        options: impl FnOnce(Kmsenv) -> Kmsenv,
        needles: &[&str],
    ) -> Output {
        let out = self.exec_marker(options).kmsenv_error(needles);
        self.sandbox.assert_command_did_not_run();
        assert_no_secret(&out);
        out
    }

    /// The data key, unwrapped through moto from the first `data_key` of the file.
    pub fn data_key(&self) -> Vec<u8> {
        let blob = data_key_of(&self.text());
        moto()
            .decrypt(REGION, &blob, &data_key_context())
            .unwrap_or_else(|e| panic!("Decrypt of the victim's data key: {e:?}"))
    }

    /// Rewrites the file as the version-1 file that kmsenv up to commit 728c9ab
    /// wrote: `version = 1` and a MAC that does not cover the keys.
    pub fn downgrade_to_version_1(&self) {
        let dk = self.data_key();
        let text = set_version_and_mac(&self.text(), 1, "");
        let mac = v1_mac(&dk, &text);
        let text = set_version_and_mac(&text, 1, &mac);
        self.sandbox.write(&self.file, &text);
    }

    /// The KMS requests of this victim's runs that asked for `key` in one of `ops`
    /// (as `KeyId`, or as ReEncrypt's `DestinationKeyId`).
    pub fn calls_to(&self, ops: &[&str], key: &str) -> Vec<BTreeMap<String, String>> {
        calls_to(&self.proxy, ops, key)
    }

    /// Asserts that no ciphertext was made under `key`: nothing was wrapped or
    /// encrypted to it.
    #[track_caller]
    pub fn assert_nothing_encrypted_to(&self, key: &str) {
        let calls = self.calls_to(&WRAPPING_OPS, key);
        assert!(calls.is_empty(), "kmsenv made ciphertexts under {key}: {calls:?}");
    }

    /// Runs a writer; it must fail (non-zero), leave the file byte for byte as it
    /// was, and print no secret.
    #[track_caller]
    pub fn assert_writer_refuses(&self, run: Kmsenv) -> Output {
        let before = self.text();
        let out = run.run();
        assert_ne!(
            out.code(),
            Some(0),
            "the writer accepted the edited file:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.starts_with("kmsenv: "),
            "a refusal says why:\n{}",
            out.stderr
        );
        assert_eq!(self.text(), before, "the file must not be rewritten");
        assert_no_secret(&out);
        out
    }
}

/// The requests `proxy` saw that asked for `key` in one of `ops`.
pub fn calls_to(proxy: &Proxy, ops: &[&str], key: &str) -> Vec<BTreeMap<String, String>> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| ops.contains(&r.get("op").map(String::as_str).unwrap_or("")))
        .filter(|r| {
            ["kms.KeyId", "kms.DestinationKeyId"]
                .iter()
                .filter_map(|field| r.get(*field))
                .any(|asked| same_key(asked, key))
        })
        .collect()
}

/// Whether a `KeyId` as sent names the key with ARN `arn` (the ARN or its key id).
pub fn same_key(asked: &str, arn: &str) -> bool {
    asked == arn || arn.rsplit_once(":key/").is_some_and(|(_, id)| asked == id)
}

/// Asserts that no value of any victim appears in a run's output.
#[track_caller]
pub fn assert_no_secret(out: &Output) {
    let all = out.all_output();
    for canary in CANARIES {
        assert!(
            !contains_bytes(&all, canary.as_bytes()),
            "a secret value reached the output of `{}`:\n{}",
            out.what,
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// The attacker's own key

/// Someone with a KMS key of their own (in the same moto, so nothing but kmsenv
/// stops a call to it).
pub struct Attacker {
    pub key: String,
}

/// The attacker's own data key: known to them, so anything under it is theirs.
pub const ATTACKER_DATA_KEY: [u8; 32] = [0xA7; 32];

impl Attacker {
    pub fn new() -> Attacker {
        Attacker {
            key: create_key(REGION),
        }
    }

    /// Their data key wrapped under their key with the victim's data-key context:
    /// a `data_key` any kmsenv would unwrap.
    pub fn wrapped_data_key(&self) -> String {
        encrypt(REGION, &self.key, &ATTACKER_DATA_KEY, &data_key_context())
    }

    /// A direct value of `name` under their key, bound to `name` like `set --kms`.
    pub fn kms_value(&self, name: &str, plaintext: &[u8]) -> String {
        encrypt(REGION, &self.key, plaintext, &[APP, ("kmsenv:var", name)])
    }
}

/// Base64 that is no KMS ciphertext at all.
pub fn garbage_blob() -> String {
    b64(&[0x5a; 160])
}

// ---------------------------------------------------------------------------
// Editing wrapping keys

/// One `[[kmsenv.keys]]` entry as kmsenv writes it.
pub fn key_block(arn: &str, data_key: &str) -> String {
    format!("[[kmsenv.keys]]\narn = \"{arn}\"\ndata_key = \"{data_key}\"\n\n")
}

/// Adds a wrapping key after the last one (right before `[env]`).
#[track_caller]
pub fn append_key(text: &str, arn: &str, data_key: &str) -> String {
    replace_once(
        text,
        "\n[env]\n",
        &format!("\n{}[env]\n", key_block(arn, data_key)),
    )
}

/// Adds a wrapping key before the first one.
#[track_caller]
pub fn prepend_key(text: &str, arn: &str, data_key: &str) -> String {
    let first = key_blocks(text)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no [[kmsenv.keys]] in:\n{text}"));
    replace_once(text, &first, &format!("{}{first}", key_block(arn, data_key)))
}

/// The text of each `[[kmsenv.keys]]` entry, header to its last line, in order.
pub fn key_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed == "[[kmsenv.keys]]" {
            blocks.extend(current.take());
            current = Some(line.to_string());
        } else if let Some(block) = current.as_mut() {
            if trimmed.is_empty() || trimmed.starts_with('[') {
                blocks.extend(current.take());
            } else {
                block.push_str(line);
            }
        }
    }
    blocks.extend(current);
    blocks
}

/// Removes the `[[kmsenv.keys]]` entries and the `mac` line.
#[track_caller]
pub fn strip_keys_and_mac(text: &str) -> String {
    let mut text = text.to_string();
    for block in key_blocks(&text) {
        text = replace_once(&text, &block, "");
    }
    let mac_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("mac"))
        .unwrap_or_else(|| panic!("no mac line in:\n{text}"))
        .to_string();
    replace_once(&text, &format!("{mac_line}\n"), "")
}

// ---------------------------------------------------------------------------
// Editing entries through toml_edit (keeps every other byte)

/// Applies `change` to the inline table of `[env]` entry `name`.
#[track_caller]
pub fn edit_entry(text: &str, name: &str, change: impl FnOnce(&mut toml_edit::InlineTable)) -> String {
    let mut doc: toml_edit::DocumentMut = text.parse().expect("the victim's file is TOML");
    let table = doc["env"][name]
        .as_inline_table_mut()
        .unwrap_or_else(|| panic!("{name} is not an inline table in:\n{text}"));
    change(table);
    doc.to_string()
}

/// Removes `key` from the context of `[env]` entry `name`.
#[track_caller]
pub fn remove_context_pair(text: &str, name: &str, key: &str) -> String {
    edit_entry(text, name, |table| {
        let context = table
            .get_mut("context")
            .and_then(toml_edit::Value::as_inline_table_mut)
            .unwrap_or_else(|| panic!("{name} has no context"));
        assert!(context.remove(key).is_some(), "{name}'s context has no {key}");
    })
}

/// Sets `[kmsenv] version` and `mac` (an empty `mac` removes the line).
fn set_version_and_mac(text: &str, version: i64, mac: &str) -> String {
    let mut doc: toml_edit::DocumentMut = text.parse().expect("the victim's file is TOML");
    let head = doc["kmsenv"].as_table_mut().expect("[kmsenv] table");
    head["version"] = toml_edit::value(version);
    if mac.is_empty() {
        head.remove("mac");
    } else {
        head["mac"] = toml_edit::value(mac);
    }
    doc.to_string()
}

// ---------------------------------------------------------------------------
// The version-1 MAC (DESIGN §2.3, §2.4 before issue 10; src/envelope.rs at 728c9ab)

/// HMAC-SHA256 under HKDF(dk, "kmsenv v1 mac") over the v1 encoding: domain,
/// version "1", the context pairs sorted, then the plain and sealed entries sorted
/// by name (name, kind, text, file flag) — every field a u64 big-endian length and
/// its bytes, every list preceded by its count. The wrapping keys are not covered.
pub fn v1_mac(data_key: &[u8], text: &str) -> String {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let doc: toml_edit::DocumentMut = text.parse().expect("the victim's file is TOML");
    let mut context = BTreeMap::new();
    if let Some(table) = doc["kmsenv"].get("context").and_then(|c| c.as_table_like()) {
        for (k, v) in table.iter() {
            context.insert(k.to_string(), v.as_str().expect("string context").to_string());
        }
    }
    let mut entries = BTreeMap::new();
    if let Some(env) = doc.get("env").and_then(|e| e.as_table_like()) {
        for (name, item) in env.iter() {
            if let Some(plain) = item.as_str() {
                entries.insert(name.to_string(), ("plain", plain.to_string(), false));
            } else if let Some(table) = item.as_table_like()
                && let Some(sealed) = table.get("sealed").and_then(|s| s.as_str())
            {
                let file = table.get("file").and_then(|f| f.as_bool()).unwrap_or(false);
                entries.insert(name.to_string(), ("sealed", sealed.to_string(), file));
            }
        }
    }
    let mut input = Vec::new();
    field(&mut input, b"kmsenv v1 file mac");
    field(&mut input, b"1");
    input.extend_from_slice(&(context.len() as u64).to_be_bytes());
    for (k, v) in &context {
        field(&mut input, k.as_bytes());
        field(&mut input, v.as_bytes());
    }
    input.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    for (name, (kind, text, file)) in &entries {
        field(&mut input, name.as_bytes());
        field(&mut input, kind.as_bytes());
        field(&mut input, text.as_bytes());
        field(&mut input, if *file { b"1" } else { b"0" });
    }
    let mut mac_key = [0u8; 32];
    Hkdf::<Sha256>::new(None, data_key)
        .expand(b"kmsenv v1 mac", &mut mac_key)
        .expect("32 bytes from HKDF-SHA256");
    let mut hmac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&mac_key).expect("any HMAC key length");
    hmac.update(&input);
    b64(&hmac.finalize().into_bytes())
}

/// The version-2 MAC of `text` under `data_key`, as kmsenv computes it: what an
/// attacker who knows a data key (their own) runs to make a consistent file.
pub fn v2_mac(path: &std::path::Path, data_key: &[u8], text: &str) -> String {
    let doc = kmsenv::document::Document::parse(path, text.to_string())
        .unwrap_or_else(|e| panic!("the attacker's file does not parse: {e:?}"));
    assert_eq!(doc.version, 2, "a version-2 file");
    let dk = kmsenv::envelope::DataKey::from_plaintext(&kmsenv::secret::Secret::new(data_key.to_vec()))
        .expect("a 32-byte data key");
    dk.mac(&doc.mac_input())
}

/// Sets `[kmsenv] mac` of a version-2 file.
pub fn with_mac(text: &str, mac: &str) -> String {
    let version = text
        .parse::<toml_edit::DocumentMut>()
        .ok()
        .and_then(|d| d["kmsenv"]["version"].as_integer())
        .expect("a version");
    set_version_and_mac(text, version, mac)
}

// ---------------------------------------------------------------------------
// Talking to KMS as the attacker would (the AWS CLI), through a proxy

/// `Encrypt` of `plaintext` under `key` with `context`, through `proxy` (so its
/// rules apply), signed for the default region.
pub fn encrypt_through(
    proxy: &Proxy,
    key: &str,
    plaintext: &[u8],
    context: &[(&str, &str)],
) -> Result<serde_json::Value, KmsError> {
    kms_call(
        proxy.port,
        REGION,
        "Encrypt",
        &encrypt_request(key, plaintext, context),
    )
}
