//! `kmsenv set`: seal one value (or store it plain, as a direct KMS ciphertext,
//! or as a ciphertext another tool made) and rewrite the MAC. Only that entry's
//! text changes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::aws::Service;
use crate::cli::SetArgs;
use crate::document::{
    FILE_CONTEXT_KEY, FILE_CONTEXT_VALUE, MAX_KMS_BLOB, check_name, parse_context, value_rule,
};
use crate::error::{Error, Result};
use crate::input::read_value;
use crate::reference::{self, ParamRef, ParamType, Reference, SecretRef, SecretVersion};
use crate::refs;
use crate::run::{Connect, Run};
use crate::secret::Secret;
use crate::terminal::escape;
use crate::writer::Writer;

pub fn run<K: Connect>(run: &Run<K>, args: SetArgs) -> Result<()> {
    let path = run.single_file("set")?;
    if args.secret || args.ssm {
        return set_reference(run, path, &args);
    }
    if let Some(t) = &args.target {
        return Err(Error::usage(format!(
            "unexpected argument {}: a second argument is for --secret NAME SECRET_ID or --ssm NAME PARAM",
            crate::terminal::escape(t)
        )));
    }
    if args.no_verify && !args.ciphertext {
        return Err(Error::usage(
            "--no-verify applies to --ciphertext, --secret and --ssm",
        ));
    }
    // `--plain NAME=VALUE` is allowed: a plain value is not a secret.
    let (name, inline) = match (args.plain, args.name.split_once('=')) {
        (true, Some((n, v))) => (n.to_string(), Some(Secret::new(v.as_bytes().to_vec()))),
        (false, Some(_)) => {
            return Err(Error::usage(format!(
                "{}: secret values are never taken from the command line (argv is visible to other users)",
                args.name.split('=').next().unwrap_or_default()
            ))
            .with_hint(
                "pipe it in: printf %s \"$VALUE\" | kmsenv set NAME  (or --plain NAME=VALUE for non-secrets)",
            ));
        }
        _ => (args.name.clone(), None),
    };
    check_name(&name)?;
    if args.key.is_some() && !(args.kms || args.ciphertext) {
        return Err(Error::usage("--key applies to --kms and --ciphertext only"));
    }
    let value = match inline {
        Some(v) => v,
        None => read_value(&name, args.from_file.as_deref())?,
    };

    // The data key is opened only when needed: a direct kms value that replaces
    // nothing under the MAC needs only kms:Encrypt.
    let mut w = Writer::open(run, path)?;
    let file = args.as_file || w.doc().entry(&name).is_some_and(|e| e.file);
    if args.template {
        return set_template(run, w, &name, &value, file);
    }
    if args.plain && std::str::from_utf8(value.expose()).is_err() {
        return Err(Error::usage(format!(
            "{name}: a --plain value must be UTF-8 text (TOML strings are); seal it instead"
        )));
    }
    if !args.ciphertext {
        check_value(&name, value.expose(), file)?;
    }

    let what = if args.ciphertext {
        store_ciphertext(&mut w, &args, &name, &value, file)?;
        "a KMS ciphertext from another tool"
    } else if args.kms {
        let key = match &args.key {
            Some(k) => k.clone(),
            None => w.direct_value_key()?,
        };
        let context = w.doc().direct_value_context(&name, file);
        let (session, kms) = w.kms()?;
        let (blob, arn) = session
            .block_on(kms.encrypt(&key, value.expose(), &context))
            .map_err(|e| w.kms_error(Some(&name), &key, "Encrypt", e))?;
        w.check_trusted(&name, &arn)?;
        w.editor()
            .set_kms(&name, &B64.encode(blob), Some(&arn), &context, file)?;
        "a direct KMS ciphertext"
    } else if args.plain {
        w.editor()
            .set_plain(&name, std::str::from_utf8(value.expose()).unwrap_or_default())?;
        "a plain value"
    } else {
        let sealed = w.seal(&name, value.expose())?;
        w.editor().set_sealed(&name, &sealed, file)?;
        "a sealed value"
    };
    drop(value);
    w.save()?;
    run.note(format!("{}: set {name} ({what})", path.display()));
    Ok(())
}

/// `--template`: the text is checked for the template syntax here, so a typo
/// is refused before the file changes; it is stored in clear, under the MAC.
fn set_template<K: Connect>(
    run: &Run<K>,
    mut w: Writer<K>,
    name: &str,
    value: &Secret,
    file: bool,
) -> Result<()> {
    let text = std::str::from_utf8(value.expose())
        .map_err(|_| Error::usage(format!("{name}: a template must be UTF-8 text")))?;
    let pieces = crate::template::parse(text).map_err(|why| {
        Error::usage(format!("{name}: {why}"))
            .with_hint("a template knows only ${NAME} and $$ (a literal $): printf %s 'x${A}y' | kmsenv set --template NAME")
    })?;
    if pieces.contains(&crate::template::Piece::Ref(name)) {
        return Err(Error::usage(format!(
            "{name}: the template uses ${{{name}}}, itself"
        )));
    }
    w.editor().set_template(name, text, file)?;
    let path = w.doc().path.clone();
    w.save()?;
    let uses = crate::template::references(text).join(" ");
    run.note(format!(
        "{}: set {name} (a template using {uses})",
        path.display()
    ));
    Ok(())
}

/// The NUL rule for a value given to `set`.
fn check_value(name: &str, value: &[u8], file: bool) -> Result<()> {
    match value_rule(name, value, file) {
        Some(why) => {
            Err(Error::usage(why).with_hint("binary values can be delivered as a file: add --as-file"))
        }
        None => Ok(()),
    }
}

/// `--ciphertext`: the input is a CiphertextBlob (raw, or base64 as the AWS CLI
/// prints it). Checked with a test Decrypt unless `--no-verify`.
fn store_ciphertext<K: Connect>(
    w: &mut Writer<K>,
    args: &SetArgs,
    name: &str,
    input: &Secret,
    file: bool,
) -> Result<()> {
    let text = input.expose();
    let looks_base64 = text
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n \t".contains(b));
    let blob = if looks_base64 {
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        B64.decode(compact)
            .map_err(|_| Error::usage(format!("{name}: the ciphertext is not valid base64")))?
    } else {
        text.to_vec()
    };
    if blob.is_empty() || blob.len() > MAX_KMS_BLOB {
        return Err(Error::usage(format!(
            "{name}: {} bytes is not a KMS ciphertext (1 to {MAX_KMS_BLOB} bytes)",
            blob.len()
        )));
    }
    // The reserved pairs a direct value may carry: its own name, and the
    // binding of its `file` flag.
    let context = parse_context(&args.context, Some(name))?;
    if file != context.contains_key(FILE_CONTEXT_KEY) {
        return Err(Error::usage(format!(
            "{name}: a value delivered as a file must be encrypted with \"{FILE_CONTEXT_KEY}\" = \"{FILE_CONTEXT_VALUE}\" \
             in its context, and only such a value"
        ))
        .with_hint(
            "aws kms encrypt ... --encryption-context kmsenv:file=true, then --as-file --context kmsenv:file=true; or drop --as-file",
        ));
    }
    if !args.no_verify {
        let (session, kms) = w.kms()?;
        let plain = session
            .block_on(kms.decrypt(args.key.as_deref(), &blob, &context, None))
            .map_err(|e| {
                let key = args.key.as_deref().unwrap_or("(the key named in the ciphertext)");
                w.kms_error(Some(name), key, "Decrypt", e)
                    .with_hint("pass the --context and --key it was encrypted with, or --no-verify")
            })?;
        w.check_trusted(name, &plain.key_arn)?;
        check_value(name, plain.plaintext.expose(), file)?;
    }
    w.editor()
        .set_kms(name, &B64.encode(&blob), args.key.as_deref(), &context, file)
}

/// `--secret` / `--ssm`: a reference, checked by one read as the file would
/// read it (unless `--no-verify`), then written under the MAC like a plain
/// value. The value read is dropped unseen.
fn set_reference<K: Connect>(run: &Run<K>, path: &std::path::Path, args: &SetArgs) -> Result<()> {
    let name = args.name.as_str();
    check_name(name)?;
    let Some(target) = args.target.as_deref() else {
        return Err(Error::usage("give the secret id or parameter after the name"));
    };
    let mut w = Writer::open(run, path)?;
    let file = args.as_file || w.doc().entry(name).is_some_and(|e| e.file);
    let reference = if args.secret {
        let version = match (&args.version_stage, &args.version_id) {
            (Some(st), _) => SecretVersion::Stage(st.clone()),
            (None, Some(id)) => SecretVersion::Id(id.clone()),
            (None, None) => SecretVersion::Current,
        };
        for (what, v) in [
            ("version-stage", &args.version_stage),
            ("version-id", &args.version_id),
        ] {
            if let Some(v) = v {
                reference::check_version_field(what, v)
                    .map_err(|why| Error::usage(format!("{name}: --{why}")))?;
            }
        }
        if args.json_key.as_deref() == Some("") {
            return Err(Error::usage(format!("{name}: --json-key is empty")));
        }
        let mut s = SecretRef {
            arn: target.to_string(),
            json_key: args.json_key.clone(),
            version,
        };
        if args.no_verify {
            reference::check_secret_arn(target).map_err(|why| {
                Error::usage(format!("{name}: {why}"))
                    .with_hint("without --no-verify, a name or partial ARN is looked up")
            })?;
        } else {
            let region = refs::region_of(w.kms()?.1, target, "secret", name)?;
            let (session, svc) = w.kms()?;
            s.arn = session
                .block_on(refs::test_read_secret(svc, &region, target, &s, name, file))
                .map_err(|e| {
                    test_read_error(
                        format!("{}: {name}: secret {}", path.display(), escape(target)),
                        format!("Secrets Manager GetSecretValue in {region}"),
                        Service::SecretsManager,
                        e,
                    )
                })?;
        }
        Reference::Secret(s)
    } else {
        let kind = match &args.param_type {
            Some(t) => ParamType::parse(t)
                .map_err(|why| Error::usage(format!("{name}: {}", why.replace("`type", "`--type"))))?,
            None => ParamType::SecureString,
        };
        let p = ParamRef::parse(target, kind).map_err(|why| Error::usage(format!("{name}: {why}")))?;
        if run.pin.is_some() && p.arn().is_none() {
            return Err(Error::usage(format!(
                "{name}: under a trust pin, an ssm reference must be the parameter's ARN, not a name"
            ))
            .with_hint("give arn:aws:ssm:REGION:ACCOUNT:parameter/NAME"));
        }
        if !crate::ssm::ENABLED && !args.no_verify {
            return Err(refs::without_ssm(name, target));
        }
        if !args.no_verify {
            let region = refs::region_of(w.kms()?.1, &p.id, "ssm reference", name)?;
            let (session, svc) = w.kms()?;
            session
                .block_on(refs::test_read_param(svc, &region, &p, name, file))
                .map_err(|e| {
                    test_read_error(
                        format!("{}: {name}: ssm {}", path.display(), escape(target)),
                        format!("SSM GetParameters in {region}"),
                        Service::Ssm,
                        e,
                    )
                })?;
        }
        Reference::Param(p)
    };
    w.editor().set_reference(name, &reference, file)?;
    w.save()?;
    let article = if args.ssm { "an" } else { "a" };
    run.note(format!(
        "{}: set {name} ({article} {} reference to {reference})",
        path.display(),
        reference.kind(),
    ));
    Ok(())
}

/// A failed test read: the AWS call that failed, or why the value would be refused.
fn test_read_error(place: String, call: String, service: Service, e: refs::TestReadError) -> Error {
    match e {
        refs::TestReadError::Aws(e) => e.into_error(place, call, service),
        refs::TestReadError::Value(why) => Error::input(format!("{place}: {why}; nothing was changed")),
    }
}
