//! `kmsenv init`: a new file with a fresh data key, wrapped by each `--key`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cli::InitArgs;
use crate::commands::{Ctx, kms_error, parse_context};
use crate::document::{Document, FORMAT_VERSION};
use crate::envelope::DataKey;
use crate::error::{Error, Result};
use crate::kms::new_data_key;
use crate::store::{self, Mode};

/// The first line of every new file.
const HEADER: &str =
    "# kmsenv — encrypted environment. Safe to commit; edit with `kmsenv set` / `kmsenv edit`.\n";

pub fn run(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let path = ctx.single_file("init")?;
    let context = parse_context(&args.context)?;
    if path.exists() {
        return Err(Error::input(format!(
            "{}: already exists; refusing to overwrite it",
            path.display()
        ))
        .with_hint("use `kmsenv set` to add values, or remove the file first"));
    }
    // Validate the context the way the file will be read back, before any KMS call.
    let mut text = String::from(HEADER);
    text += &format!("[kmsenv]\nversion = {FORMAT_VERSION}\n");
    if !context.is_empty() {
        let pairs: Vec<String> = context
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_key(k), toml_edit::Value::from(v.as_str())))
            .collect();
        text += &format!("context = {{ {} }}\n", pairs.join(", "));
    }
    let probe = Document::parse(path, text.clone())?;
    let dk_ctx = probe.data_key_context();

    if args.keys.is_empty() {
        return Err(Error::usage("init needs --key"));
    }
    let session = ctx.session(std::slice::from_ref(&probe))?;
    let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
    let made = session
        .block_on(new_data_key(&session.kms, &keys, &dk_ctx))
        .map_err(|f| kms_error(path, &f.key, f.op, f.error))?;
    if let Some(pin) = &ctx.pin
        && !made.wrappings.iter().any(|(arn, _)| pin.trusts(arn))
    {
        return Err(Error::usage(format!(
            "{}: none of the keys given is trusted (trusted: {}); nothing was written",
            path.display(),
            pin.describe()
        )));
    }
    let wrappings = made.wrappings;
    let dk = DataKey::from_plaintext(&made.plaintext).ok_or_else(|| {
        Error::kms(format!(
            "{}: KMS returned a data key that is not 32 bytes",
            path.display()
        ))
    })?;

    for (arn, blob) in &wrappings {
        text += &format!(
            "\n[[kmsenv.keys]]\narn = {}\ndata_key = \"{}\"\n",
            toml_edit::Value::from(arn.as_str()),
            B64.encode(blob)
        );
    }
    text += "\n[env]\n";
    let doc = Document::parse(path, text.clone())?;
    let mac = dk.mac(&doc.mac_input());
    // The MAC goes last in [kmsenv], before the first [[kmsenv.keys]].
    text = text.replacen(
        "\n[[kmsenv.keys]]",
        &format!("mac = \"{mac}\"\n\n[[kmsenv.keys]]"),
        1,
    );
    Document::parse(path, text.clone())?;
    let _lock = store::lock(path, ctx.deadline)?;
    store::write_atomic(path, &text, Mode::CreateNew)?;
    let arns: Vec<&str> = wrappings.iter().map(|(a, _)| a.as_str()).collect();
    ctx.note(format!(
        "created {} with a data key wrapped by {}",
        path.display(),
        arns.join(", ")
    ));
    Ok(())
}

/// A TOML key, quoted when it is not a bare key.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_edit::Value::from(k).to_string()
    }
}
