//! References to values that AWS keeps and rotates: a Secrets Manager secret
//! (`{ secret = "arn:…" }`) or a Parameter Store parameter (`{ ssm = "/name" }`),
//! as written in the file — their syntax, their checks, and what the MAC covers.
//!
//! No I/O here: reading them is `refs` (planning and matching) on top of
//! `secrets_manager` and `ssm` (the SDK calls). A reference names exactly one
//! value: a secret by its full ARN (a name or a partial ARN could come to mean
//! another secret once one is deleted and another created), a parameter by its
//! full name or ARN and an optional `:VERSION` or `:LABEL` selector. There is no
//! path or prefix read and no expansion of one secret into several variables:
//! whoever writes the secret must not choose variable names.

use std::fmt;

/// A reference in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Secret(SecretRef),
    Param(ParamRef),
}

/// `{ secret = ARN, json_key?, version_stage? | version_id? }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The full secret ARN (with its six-character suffix).
    pub arn: String,
    /// An exact top-level key of a JSON secret whose value is a string.
    pub json_key: Option<String>,
    pub version: SecretVersion,
}

/// Which version of a secret: the current one, or a pinned stage or id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretVersion {
    /// `AWSCURRENT`, read in batches (`BatchGetSecretValue`).
    Current,
    Stage(String),
    Id(String),
}

/// `{ ssm = NAME[:SELECTOR], type? }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRef {
    /// The full name (`/prod/app/x`, `x`) or the parameter ARN, without selector.
    pub id: String,
    pub selector: Option<Selector>,
    /// The type the parameter must have.
    pub kind: ParamType,
}

/// `:VERSION` or `:LABEL` after a parameter name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    Version(u64),
    Label(String),
}

/// The parameter type a reference accepts. `StringList` never: it is a list,
/// and splitting it into one variable would be a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamType {
    SecureString,
    String,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::SecureString => "SecureString",
            ParamType::String => "String",
        }
    }

    /// The `type` field of the file: `String` or `SecureString`.
    pub fn parse(text: &str) -> Result<ParamType, String> {
        match text {
            "SecureString" => Ok(ParamType::SecureString),
            "String" => Ok(ParamType::String),
            "StringList" => {
                Err("`type = \"StringList\"` is not supported: a list has no one value for a variable".into())
            }
            other => Err(format!(
                "`type` is {other:?}; expected \"SecureString\" (the default) or \"String\""
            )),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Version(v) => write!(f, ":{v}"),
            Selector::Label(l) => write!(f, ":{l}"),
        }
    }
}

impl fmt::Display for Reference {
    /// The reference as a person reads it (never a value).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Secret(s) => {
                f.write_str(&s.arn)?;
                match &s.version {
                    SecretVersion::Current => {}
                    SecretVersion::Stage(st) => write!(f, " (stage {st})")?,
                    SecretVersion::Id(id) => write!(f, " (version {id})")?,
                }
                if let Some(k) = &s.json_key {
                    write!(f, " key {k:?}")?;
                }
                Ok(())
            }
            Reference::Param(p) => {
                write!(f, "{}", p.text())?;
                if p.kind == ParamType::String {
                    f.write_str(" (String)")?;
                }
                Ok(())
            }
        }
    }
}

impl Reference {
    /// "secret" or "ssm": the kind in `list` and in the MAC.
    pub fn kind(&self) -> &'static str {
        match self {
            Reference::Secret(_) => "secret",
            Reference::Param(_) => "ssm",
        }
    }

    /// Whether the reference names its value by a full ARN (what a trust pin asks).
    pub fn is_arn(&self) -> bool {
        match self {
            Reference::Secret(_) => true,
            Reference::Param(p) => p.arn().is_some(),
        }
    }

    /// What the MAC covers: every field, each tagged and length-prefixed, in a
    /// fixed order (the kind itself is tagged by the caller). A field that is
    /// absent is absent from the list, and the count comes first.
    pub fn mac_text(&self) -> Vec<u8> {
        match self {
            Reference::Secret(s) => {
                let mut fields = vec![("secret", s.arn.as_str())];
                if let Some(k) = &s.json_key {
                    fields.push(("json_key", k));
                }
                match &s.version {
                    SecretVersion::Current => {}
                    SecretVersion::Stage(st) => fields.push(("version_stage", st)),
                    SecretVersion::Id(id) => fields.push(("version_id", id)),
                }
                encode(&fields)
            }
            Reference::Param(p) => {
                let sel = p.selector.as_ref().map(ToString::to_string).unwrap_or_default();
                encode(&[("ssm", &p.id), ("selector", &sel), ("type", p.kind.as_str())])
            }
        }
    }
}

/// Count, then each key and value as a u64 big-endian length and its bytes.
fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (fields.len() as u64).to_be_bytes().to_vec();
    for (k, v) in fields {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

/// The parts of an ARN: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(text: &'a str) -> Option<Arn<'a>> {
        let mut p = text.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
            (p.next(), p.next(), p.next(), p.next(), p.next(), p.next())
        else {
            return None;
        };
        let fine = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (fine(partition)
            && fine(service)
            && fine(region)
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !resource.is_empty()
            && !resource.chars().any(|c| c.is_control() || c.is_whitespace()))
        .then_some(Arn {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

/// Whether `c` may be in a secret name (Secrets Manager: letters, digits, `/_+=.@-`).
fn secret_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)
}

/// Check a secret ARN as written in the file: it must be a full one, ending in
/// the six characters Secrets Manager appends to the name.
pub fn check_secret_arn(text: &str) -> Result<(), String> {
    let hint = "give the full secret ARN, with the six characters after the name \
                (`kmsenv set --secret NAME ID` looks it up)";
    let Some(arn) = Arn::parse(text).filter(|a| a.service == "secretsmanager") else {
        return Err(format!(
            "`secret` must be a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf); {hint}"
        ));
    };
    let Some(name) = arn.resource.strip_prefix("secret:") else {
        return Err(format!(
            "`secret` is not a secret ARN (its resource must start with `secret:`); {hint}"
        ));
    };
    if !name.chars().all(secret_name_char) {
        return Err("`secret`: the secret name holds a character Secrets Manager does not allow".into());
    }
    match name.rsplit_once('-') {
        Some((base, suffix))
            if !base.is_empty() && suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`secret` looks like a partial ARN (no six-character suffix): a partial ARN could match another secret; {hint}"
        )),
    }
}

/// Check a `version_stage` or `version_id` (`what`) as written.
pub fn check_version_field(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty()
        || text.len() > 256
        || text
            .chars()
            .any(|c| crate::terminal::is_unsafe(c) || c.is_whitespace())
    {
        return Err(format!(
            "`{what}` must be a non-empty string without spaces or control characters"
        ));
    }
    Ok(())
}

/// Whether `c` may be in a parameter name (`a-zA-Z0-9_.-/`).
fn param_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.-/".contains(c)
}

impl ParamRef {
    /// Parse `NAME[:SELECTOR]` or `arn:…:parameter/NAME[:SELECTOR]`.
    pub fn parse(text: &str, kind: ParamType) -> Result<ParamRef, String> {
        let resource = if text.starts_with("arn:") {
            let arn = Arn::parse(text)
                .filter(|a| a.service == "ssm")
                .ok_or("`ssm` is not a parameter ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)")?;
            arn.resource.strip_prefix("parameter/").ok_or(
                "`ssm` is an SSM ARN but not a parameter's (its resource must start with `parameter/`)",
            )?
        } else {
            text
        };
        let (name, selector) = match resource.split_once(':') {
            Some((n, s)) => (n, Some(parse_selector(s)?)),
            None => (resource, None),
        };
        if name.is_empty() || !name.chars().all(param_name_char) || name.len() > 2048 {
            return Err(format!(
                "`ssm` {name:?} is not a parameter name (letters, digits and _.-/ only), nor a parameter ARN"
            ));
        }
        if name.ends_with('/') || name.contains("//") {
            return Err(format!(
                "`ssm` {name:?} names a path, not one parameter: path reads are not supported"
            ));
        }
        // `resource` ends `text`: the id is `text` up to the end of the name.
        let id_len = text.len() - resource.len() + name.len();
        Ok(ParamRef {
            id: text[..id_len].to_string(),
            selector,
            kind,
        })
    }

    /// The parameter ARN, when the reference is one.
    pub fn arn(&self) -> Option<Arn<'_>> {
        Arn::parse(&self.id)
    }

    /// The reference as written: the name or ARN and the selector.
    pub fn text(&self) -> String {
        match &self.selector {
            Some(s) => format!("{}{s}", self.id),
            None => self.id.clone(),
        }
    }
}

/// `3` (a version, from 1) or `prod` (a label: letters, digits, `._-`, not
/// starting with a digit, at most 100 characters, as Parameter Store allows).
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Written as it prints (no leading zero), so the reference reads back as written.
        return match text.parse::<u64>() {
            Ok(v) if v >= 1 && !text.starts_with('0') => Ok(Selector::Version(v)),
            _ => Err(format!(
                "`ssm` selector :{text} is not a version (1 or more, no leading zero)"
            )),
        };
    }
    let label_ok = text.len() <= 100
        && text.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if label_ok {
        Ok(Selector::Label(text.to_string()))
    } else {
        Err(format!(
            "`ssm` selector {:?} is neither a version (digits) nor a label (letters, digits, ._-)",
            format!(":{text}")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbCdEf";

    #[test]
    fn a_full_secret_arn_is_accepted() {
        assert_eq!(check_secret_arn(SECRET), Ok(()));
    }

    #[test]
    fn a_partial_secret_arn_is_refused() {
        let e = check_secret_arn("arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db").unwrap_err();
        assert!(e.contains("partial ARN"), "{e}");
        let short = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbCd";
        assert!(check_secret_arn(short).is_err());
    }

    #[test]
    fn a_secret_name_or_another_arn_is_refused() {
        assert!(check_secret_arn("prod/db").is_err());
        assert!(check_secret_arn("arn:aws:ssm:eu-west-1:111122223333:secret:x-AbCdEf").is_err());
        assert!(check_secret_arn("arn:aws:secretsmanager:eu-west-1:1111:secret:x-AbCdEf").is_err());
        assert!(check_secret_arn("arn:aws:secretsmanager:eu-west-1:111122223333:key:x-AbCdEf").is_err());
        assert!(check_secret_arn("arn:aws:secretsmanager:eu-west-1:111122223333:secret:a b-AbCdEf").is_err());
    }

    #[test]
    fn a_parameter_name_parses_with_and_without_selector() -> Result<(), String> {
        let p = ParamRef::parse("/prod/app/db", ParamType::SecureString)?;
        assert_eq!((p.id.as_str(), &p.selector), ("/prod/app/db", &None));
        let p = ParamRef::parse("/prod/app/db:3", ParamType::SecureString)?;
        assert_eq!(
            (p.id.as_str(), &p.selector),
            ("/prod/app/db", &Some(Selector::Version(3)))
        );
        let p = ParamRef::parse("plain_name:live", ParamType::String)?;
        assert_eq!(
            (p.id.as_str(), &p.selector),
            ("plain_name", &Some(Selector::Label("live".into())))
        );
        assert_eq!(p.text(), "plain_name:live");
        Ok(())
    }

    #[test]
    fn a_parameter_arn_parses_with_its_selector() -> Result<(), String> {
        let arn = "arn:aws:ssm:eu-west-1:111122223333:parameter/prod/app/db";
        let p = ParamRef::parse(&format!("{arn}:12"), ParamType::SecureString)?;
        assert_eq!((p.id.as_str(), &p.selector), (arn, &Some(Selector::Version(12))));
        assert_eq!(p.arn().map(|a| a.region), Some("eu-west-1"));
        assert!(Reference::Param(p).is_arn());
        Ok(())
    }

    #[test]
    fn bad_selectors_are_refused() {
        for bad in [
            "/x:",
            "/x:0",
            "/x:03",
            "/x:1a b",
            "/x:3prod",
            "/x:a:b",
            "/x:99999999999999999999999",
        ] {
            assert!(ParamRef::parse(bad, ParamType::SecureString).is_err(), "{bad}");
        }
    }

    /// What the parser reads, printed back, reads as the same reference: the
    /// id is never cut short or long by the selector.
    #[test]
    fn a_parameter_reference_reads_back_as_written() -> crate::error::TestResult {
        for text in [
            "/x",
            "/x:3",
            "/x:12",
            "x:lbl",
            "/a/b.c-d_e:Prod-1",
            "arn:aws:ssm:eu-west-1:111122223333:parameter/x",
            "arn:aws:ssm:eu-west-1:111122223333:parameter/a/b:3",
            "arn:aws:ssm:eu-west-1:111122223333:parameter/a/b:lbl",
        ] {
            let p = ParamRef::parse(text, ParamType::SecureString)?;
            assert_eq!(p.text(), text);
            assert!(!p.id.ends_with(':'), "{text}: id {}", p.id);
            assert_eq!(ParamRef::parse(&p.text(), ParamType::SecureString)?, p);
        }
        Ok(())
    }

    #[test]
    fn paths_and_bad_names_are_refused() {
        for bad in [
            "",
            "/prod/",
            "/prod//x",
            "/prod/x y",
            "arn:aws:ssm:eu-west-1:111122223333:document/x",
        ] {
            assert!(ParamRef::parse(bad, ParamType::SecureString).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn string_list_is_never_a_type() {
        assert!(ParamType::parse("StringList").is_err());
        assert_eq!(ParamType::parse("String"), Ok(ParamType::String));
    }

    #[test]
    fn the_mac_text_changes_with_every_field() -> Result<(), String> {
        let s = |json_key: Option<&str>, version| {
            Reference::Secret(SecretRef {
                arn: SECRET.into(),
                json_key: json_key.map(Into::into),
                version,
            })
            .mac_text()
        };
        let base = s(None, SecretVersion::Current);
        for other in [
            s(Some("password"), SecretVersion::Current),
            s(Some(""), SecretVersion::Current),
            s(None, SecretVersion::Stage("AWSPREVIOUS".into())),
            s(None, SecretVersion::Id("AWSPREVIOUS".into())),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            s(None, SecretVersion::Stage("x".into())),
            s(None, SecretVersion::Id("x".into()))
        );
        let p = |text: &str, kind| ParamRef::parse(text, kind).map(|p| Reference::Param(p).mac_text());
        let base = p("/a/b", ParamType::SecureString)?;
        assert_ne!(base, p("/a/b", ParamType::String)?);
        assert_ne!(base, p("/a/b:1", ParamType::SecureString)?);
        assert_ne!(
            p("/a/b:1", ParamType::SecureString)?,
            p("/a/b:2", ParamType::SecureString)?
        );
        assert_ne!(base, p("/a/c", ParamType::SecureString)?);
        Ok(())
    }
}
