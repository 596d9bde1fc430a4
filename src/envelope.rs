//! Envelope encryption: the file's data key, its two HKDF subkeys, sealing and
//! opening values with AES-256-GCM, and the file MAC (DESIGN §2.3, §2.4).
//!
//! This module does no I/O and knows nothing of KMS or TOML: it turns a 32-byte
//! data key into the operations a file needs. Sealed values are bound to their
//! variable name through the associated data, so swapping two ciphertexts fails;
//! the MAC covers names, kinds, texts and flags through a length-prefixed encoding,
//! so no two different files encode alike (the `a:b:` ambiguity sops had).

use std::borrow::Cow;
use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Length of a data key in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SEAL_INFO: &[u8] = b"kmsenv v1 seal";
const MAC_INFO: &[u8] = b"kmsenv v1 mac";
const AAD_PREFIX: &[u8] = b"kmsenv v1 env\0";
const MAC_DOMAIN: &[u8] = b"kmsenv v1 file mac";

/// Why a sealed value did not open. Carries no bytes of the value.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not valid base64.
    Encoding,
    /// Shorter than a nonce and a tag.
    Truncated,
    /// Authentication failed: another name, another data key, or altered text.
    Authentication,
}

impl OpenError {
    pub fn describe(&self) -> &'static str {
        match self {
            OpenError::Encoding => "sealed text is not valid base64",
            OpenError::Truncated => "sealed text is too short to be a sealed value",
            OpenError::Authentication => {
                "sealed value does not open: it was sealed for another name or \
                 under another file's data key, or it was altered"
            }
        }
    }
}

/// The subkeys derived from a file's data key. Zeroized on drop; no `Debug` of bytes.
pub struct DataKey {
    /// The data key itself, kept to wrap it under another KMS key (`keys add`).
    raw: Secret,
    /// AES-256-GCM under the seal subkey, its key schedule computed once per
    /// file rather than once per value. The AES round keys are wiped on drop
    /// (the `aes` crate's `zeroize` feature, which aes-gcm's own does not turn
    /// on); GCM's hash key H = AES(0) is not: polyval 0.6's run-time-detected
    /// backend never drops its state. H does not give the key, but forges tags
    /// under it; the process ends (or execs) right after its last use.
    seal: Aes256Gcm,
    mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// Derive the subkeys from a data key as KMS returned it; `None` if it is not 32 bytes.
    pub fn from_plaintext(dk: &Secret) -> Option<DataKey> {
        if dk.len() != DATA_KEY_LEN {
            return None;
        }
        let hk = Hkdf::<Sha256>::new(None, dk.expose());
        let mut seal = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        // Expanding 32 bytes from SHA-256 HKDF cannot fail (limit is 255 * 32).
        hk.expand(SEAL_INFO, seal.as_mut()).ok()?;
        hk.expand(MAC_INFO, mac.as_mut()).ok()?;
        Some(DataKey {
            raw: dk.clone(),
            seal: Aes256Gcm::new(seal.as_ref().into()),
            mac,
        })
    }

    /// The data key's bytes, to wrap it under another KMS key.
    pub fn plaintext(&self) -> &Secret {
        &self.raw
    }

    /// Seal `plaintext` for variable `name`: base64 of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        let aad = aad(name);
        let sealed = self
            .seal
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // AES-GCM encryption fails only for messages over 64 GiB.
            .unwrap_or_else(|_| Vec::new());
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Open a sealed value of variable `name`.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Secret, OpenError> {
        let raw = B64.decode(sealed.trim()).map_err(|_| OpenError::Encoding)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Truncated);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let aad = aad(name);
        self.seal
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: &aad })
            .map(Secret::new)
            .map_err(|_| OpenError::Authentication)
    }

    /// The file MAC, base64.
    pub fn mac(&self, input: &MacInput<'_>) -> String {
        B64.encode(self.hmac(input).finalize().into_bytes())
    }

    /// Whether `mac` (base64) is the MAC of `input`, compared in constant time.
    pub fn verify_mac(&self, input: &MacInput<'_>, mac: &str) -> bool {
        match B64.decode(mac.trim()) {
            Ok(tag) => self.hmac(input).verify_slice(&tag).is_ok(),
            Err(_) => false,
        }
    }

    fn hmac(&self, input: &MacInput<'_>) -> Hmac<Sha256> {
        // An HMAC key of any length is valid.
        let mut h = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(self.mac.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        h.update(&input.encode());
        h
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    // getrandom fails only when the OS has no entropy source at all; continuing
    // with a zero nonce would be worse than stopping.
    if getrandom::getrandom(buf).is_err() {
        eprintln!("kmsenv: error: the operating system's random source failed");
        std::process::exit(125);
    }
}

/// One `[env]` entry as the MAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacEntry<'a> {
    pub name: &'a str,
    /// "plain", "sealed", "template", "secret" or "ssm"; direct `kms` entries
    /// are outside the MAC.
    pub kind: &'a str,
    /// The plain value, the sealed base64 text, the template text, or a
    /// reference's own length-prefixed fields (`Reference::mac_text`).
    pub text: Cow<'a, [u8]>,
    pub file: bool,
}

/// One `[[kmsenv.keys]]` entry as the MAC sees it: the text as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacKey<'a> {
    pub arn: &'a str,
    /// The base64 `data_key` text.
    pub data_key: &'a str,
}

/// Everything the MAC covers (DESIGN §2.4).
#[derive(Debug, PartialEq, Eq)]
pub struct MacInput<'a> {
    pub version: i64,
    pub context: &'a BTreeMap<String, String>,
    /// The wrapping keys in file order. Covered from format version 2 on: a
    /// version-1 MAC left them out, so a writer could add their own.
    pub keys: Vec<MacKey<'a>>,
    pub entries: Vec<MacEntry<'a>>,
}

impl MacInput<'_> {
    /// Canonical, length-prefixed encoding: every field is a u64 big-endian length
    /// followed by its bytes, and every list is preceded by its count. The
    /// version comes first, so a version-1 MAC can never verify as version 2.
    fn encode(&self) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        field(&mut out, MAC_DOMAIN);
        field(&mut out, self.version.to_string().as_bytes());
        out.extend_from_slice(&(self.context.len() as u64).to_be_bytes());
        for (k, v) in self.context {
            field(&mut out, k.as_bytes());
            field(&mut out, v.as_bytes());
        }
        if self.version >= 2 {
            out.extend_from_slice(&(self.keys.len() as u64).to_be_bytes());
            for k in &self.keys {
                field(&mut out, k.arn.as_bytes());
                field(&mut out, k.data_key.as_bytes());
            }
        }
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| a.name.cmp(b.name));
        out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for e in &entries {
            field(&mut out, e.name.as_bytes());
            field(&mut out, e.kind.as_bytes());
            field(&mut out, &e.text);
            field(&mut out, if e.file { b"1" } else { b"0" });
        }
        out
    }
}

/// A new random data key (KMS makes the real ones; this serves the test fake).
#[cfg(test)]
pub fn new_data_key() -> Secret {
    let mut dk = vec![0u8; DATA_KEY_LEN];
    random_bytes(&mut dk);
    Secret::new(dk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data key of `byte` repeated (32 bytes, so `from_plaintext` accepts it).
    fn key_of(byte: u8) -> DataKey {
        match DataKey::from_plaintext(&Secret::new(vec![byte; 32])) {
            Some(k) => k,
            None => panic!("32 bytes make a data key"),
        }
    }

    fn key() -> DataKey {
        key_of(7)
    }

    #[test]
    fn sealed_value_opens_under_its_own_name_only() {
        let k = key();
        let s = k.seal("DATABASE_URL", b"postgres://x");
        assert_eq!(
            k.open("DATABASE_URL", &s).as_ref().map(Secret::expose),
            Ok(&b"postgres://x"[..])
        );
        assert_eq!(k.open("OTHER", &s), Err(OpenError::Authentication));
    }

    #[test]
    fn sealed_value_does_not_open_under_another_data_key() {
        let s = key().seal("A", b"v");
        let other = key_of(8);
        assert_eq!(other.open("A", &s), Err(OpenError::Authentication));
    }

    #[test]
    fn truncated_and_garbage_sealed_text_are_classified() {
        let k = key();
        assert_eq!(k.open("A", "AAAA"), Err(OpenError::Truncated));
        assert_eq!(k.open("A", "!!!"), Err(OpenError::Encoding));
    }

    #[test]
    fn data_key_must_be_32_bytes() {
        assert!(DataKey::from_plaintext(&Secret::new(vec![1u8; 16])).is_none());
    }

    #[test]
    fn mac_changes_with_any_covered_field() {
        let k = key();
        let ctx: BTreeMap<String, String> = [("app".to_string(), "b".to_string())].into();
        let base = |entries: Vec<MacEntry<'static>>| MacInput {
            version: 2,
            context: &ctx,
            keys: vec![],
            entries,
        };
        let e = |name, kind, text: &'static str, file| MacEntry {
            name,
            kind,
            text: Cow::Borrowed(text.as_bytes()),
            file,
        };
        let m = k.mac(&base(vec![e("A", "plain", "x", false)]));
        assert!(k.verify_mac(&base(vec![e("A", "plain", "x", false)]), &m));
        assert!(!k.verify_mac(&base(vec![e("A", "plain", "y", false)]), &m));
        assert!(!k.verify_mac(&base(vec![e("A", "sealed", "x", false)]), &m));
        assert!(!k.verify_mac(&base(vec![e("A", "plain", "x", true)]), &m));
        assert!(!k.verify_mac(&base(vec![e("B", "plain", "x", false)]), &m));
        assert!(!k.verify_mac(&base(vec![]), &m));
        // Length prefixes: moving a byte between name and text changes the MAC.
        let m2 = k.mac(&base(vec![e("AB", "plain", "", false)]));
        assert!(!k.verify_mac(&base(vec![e("A", "plain", "B", false)]), &m2));
    }

    #[test]
    fn version_2_mac_covers_every_wrapping_key_in_order() {
        let k = key();
        let ctx = BTreeMap::new();
        let (a, b) = (
            MacKey {
                arn: "arn:a",
                data_key: "AAAA",
            },
            MacKey {
                arn: "arn:b",
                data_key: "BBBB",
            },
        );
        let input = |version, keys: Vec<MacKey<'static>>| MacInput {
            version,
            context: &ctx,
            keys,
            entries: vec![],
        };
        let m = k.mac(&input(2, vec![a, b]));
        assert!(k.verify_mac(&input(2, vec![a, b]), &m));
        assert!(!k.verify_mac(&input(2, vec![b, a]), &m), "reordered");
        assert!(!k.verify_mac(&input(2, vec![a]), &m), "removed");
        assert!(!k.verify_mac(&input(2, vec![a, b, a]), &m), "added");
        let edited = MacKey {
            arn: "arn:b",
            data_key: "BBBC",
        };
        assert!(!k.verify_mac(&input(2, vec![a, edited]), &m), "edited");
        // Version 1 leaves the keys out, and never verifies as version 2.
        let v1 = k.mac(&input(1, vec![a]));
        assert!(k.verify_mac(&input(1, vec![b, a]), &v1));
        assert!(!k.verify_mac(&input(2, vec![a]), &v1));
    }
}
