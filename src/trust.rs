//! The trust pin (DESIGN §8): KMS keys named outside the file, where an image
//! or a unit already fixes the command line, that a file must be opened through.
//!
//! No file format can stop a writer from replacing the whole file with one of
//! their own, wrapped by a key they control, and carrying the direct values
//! over: the MAC of such a file is valid under the writer's own data key. The
//! pin answers that. Under it every file must carry a MAC in format version 2,
//! its data key is opened only through a trusted key, and every direct value
//! must decrypt under one. What can be decided without KMS is decided here,
//! before any network call; `resolve` enforces the rest as it decrypts.

use std::collections::BTreeSet;
use std::ffi::OsString;

use crate::document::{Document, Value};
use crate::error::{Error, Result};
use crate::terminal::escape;

/// The environment variable that holds a pin (comma-separated key ARNs).
pub const TRUST_ENV: &str = "KMSENV_TRUST_KEYS";

/// The key ARNs a run trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPin {
    keys: BTreeSet<String>,
}

impl TrustPin {
    /// The pin from `--trust-key` (which, when given, replaces the environment)
    /// or from `KMSENV_TRUST_KEYS`; `None` when neither is set. A variable that is
    /// set but names no key is an error, not "no pin": a templating slip must not
    /// turn the protection off silently.
    pub fn from_sources(flags: &[String], env: Option<OsString>) -> Result<Option<TrustPin>> {
        let (keys, from): (Vec<String>, &str) = if !flags.is_empty() {
            (flags.to_vec(), "--trust-key")
        } else if let Some(list) = env {
            let list = list
                .into_string()
                .map_err(|_| Error::usage(format!("{TRUST_ENV} is not UTF-8")))?;
            let keys: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
            if keys.is_empty() {
                return Err(Error::usage(format!(
                    "{TRUST_ENV} is set but names no key; give comma-separated key ARNs, or unset it"
                )));
            }
            (keys, TRUST_ENV)
        } else {
            return Ok(None);
        };
        for k in &keys {
            if !is_key_arn(k) {
                return Err(Error::usage(format!(
                    "{from} {}: a trusted key must be a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)",
                    escape(k)
                ))
                .with_hint("aliases and bare key ids can be re-pointed; `aws kms describe-key --key-id alias/NAME` prints the ARN"));
            }
        }
        Ok(Some(TrustPin {
            keys: keys.into_iter().collect(),
        }))
    }

    pub fn trusts(&self, arn: &str) -> bool {
        self.keys.contains(arn)
    }

    /// The trusted keys, for messages.
    pub fn describe(&self) -> String {
        self.keys
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What the pin requires of a file that can be decided offline: keys and a
    /// MAC, format version 2, a trusted wrapping key, and no direct value that
    /// names an untrusted key. A writer may open a format-1 file (`upgrade`, or
    /// any write, which upgrades it after every wrapping opened the same data
    /// key); a reader may not.
    pub fn admit(&self, doc: &Document, writing: bool) -> Result<()> {
        let path = doc.path.display();
        let refuse = |why: String| Error::integrity(format!("{path}: {why} (trusted: {})", self.describe()));
        if !doc.has_keys() {
            return Err(refuse(
                "has no [[kmsenv.keys]] and so no MAC, and a trust pin accepts only files with both".into(),
            )
            .with_hint(
                "a file without keys can be written by anyone; create one with `kmsenv init --key ARN`",
            ));
        }
        if doc.is_legacy() && !writing {
            return Err(refuse(
                "is format version 1, whose MAC does not cover the wrapping keys; a trust pin accepts version 2 only"
                    .into(),
            )
            .with_hint("upgrade it with `kmsenv upgrade` (needs kms:Decrypt), then commit it"));
        }
        if !doc.keys.iter().any(|k| self.trusts(&k.arn)) {
            return Err(refuse(
                "none of its wrapping keys is trusted: the file may have been replaced by one under another key".into(),
            ));
        }
        for e in &doc.entries {
            if let Value::Kms { key: Some(k), .. } = &e.value
                && !self.trusts(k)
            {
                return Err(Error::integrity(format!(
                    "{path}:{}: {}: its key {} is not trusted (trusted: {})",
                    e.at,
                    e.name,
                    escape(k),
                    self.describe()
                )));
            }
            // Neither Secrets Manager nor Parameter Store says which KMS key
            // protected a value, so the pin cannot vouch for it: what it can do
            // is make sure the file (verified through a trusted key) names the
            // value exactly, in one account and region.
            if let Value::Ref(r) = &e.value
                && !r.is_arn()
            {
                return Err(Error::integrity(format!(
                    "{path}:{}: {}: the {} reference {} is a name, and under a trust pin references must be full ARNs \
                     (a name is read in whatever account and region the caller's configuration points at)",
                    e.at,
                    e.name,
                    r.kind(),
                    escape(&r.to_string())
                ))
                .with_hint("write the parameter ARN: arn:aws:ssm:REGION:ACCOUNT:parameter/NAME"));
            }
        }
        Ok(())
    }
}

/// Whether `s` is a KMS key ARN (not an alias ARN): `arn:P:kms:R:A:key/ID`.
pub fn is_key_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", p, "kms", r, a, res]
        if !p.is_empty() && !r.is_empty() && !a.is_empty()
            && res.strip_prefix("key/").is_some_and(|id| !id.is_empty() && !id.contains(char::is_whitespace)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab";

    #[test]
    fn the_flag_replaces_the_environment() -> TestResult {
        let pin = TrustPin::from_sources(&[ARN.into()], Some("arn:aws:kms:eu-west-1:1:key/x".into()))?;
        assert_eq!(pin.map(|p| p.describe()), Some(ARN.to_string()));
        Ok(())
    }

    #[test]
    fn the_environment_is_a_comma_separated_list() -> TestResult {
        let env = format!(" {ARN} ,arn:aws:kms:eu-west-1:1:key/x,");
        let pin = TrustPin::from_sources(&[], Some(env.into()))?.ok_or("a pin")?;
        assert!(pin.trusts(ARN) && pin.trusts("arn:aws:kms:eu-west-1:1:key/x"));
        assert!(TrustPin::from_sources(&[], None)?.is_none());
        Ok(())
    }

    fn keyed_file(env: &str) -> crate::error::Result<Document> {
        Document::parse(
            std::path::Path::new("k.toml"),
            format!(
                "[kmsenv]\nversion = 2\nmac = \"AAAA\"\n[[kmsenv.keys]]\narn = \"{ARN}\"\ndata_key = \"AQID\"\n[env]\n{env}\n"
            ),
        )
    }

    #[test]
    fn under_a_pin_an_ssm_name_reference_is_refused_naming_the_variable() -> TestResult {
        let pin = TrustPin::from_sources(&[ARN.into()], None)?.ok_or("a pin")?;
        let named = keyed_file("DB = { ssm = \"/prod/db\" }")?;
        let err = pin.admit(&named, false).unwrap_err().to_string();
        assert!(err.contains("DB: the ssm reference /prod/db is a name"), "{err}");
        let arn = keyed_file("DB = { ssm = \"arn:aws:ssm:us-east-1:111122223333:parameter/prod/db\" }")?;
        assert!(pin.admit(&arn, false).is_ok());
        let secret = keyed_file(
            "DB = { secret = \"arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf\" }",
        )?;
        assert!(pin.admit(&secret, false).is_ok());
        Ok(())
    }

    #[test]
    fn an_empty_variable_or_an_alias_is_refused() {
        assert!(TrustPin::from_sources(&[], Some(" , ".into())).is_err());
        assert!(TrustPin::from_sources(&["alias/app".into()], None).is_err());
        assert!(TrustPin::from_sources(&["arn:aws:kms:us-east-1:1:alias/app".into()], None).is_err());
    }
}
