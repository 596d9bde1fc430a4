//! `kmsenv exec`: parse → validate → unwrap data keys → open values → build the
//! environment → (switch user) → execve, or fork and supervise with `--init`.
//! Top to bottom; no step reaches back.

use std::collections::BTreeSet;

use crate::cli::ExecArgs;
use crate::document::check_name;
use crate::document::{Document, OWN_ENV_PREFIX, Value};
use crate::error::{Error, Result};
use crate::exec::{self, Environment, Policy};
use crate::resolve::{OpenedFile, Origin, Selection};
use crate::run::{Connect, Run};
use crate::template::references;
use crate::{init, user};

pub fn run<K: Connect>(run: &mut Run<K>, args: ExecArgs) -> Result<()> {
    let only: Option<BTreeSet<String>> = if args.only.is_empty() {
        None
    } else {
        for n in &args.only {
            check_name(n)?;
        }
        Some(args.only.iter().cloned().collect())
    };
    // Resolved before any KMS call; switched to only after everything is decrypted.
    let user = args.user.as_deref().map(user::Target::resolve).transpose()?;

    let docs = run.load_all_to_open(&|docs| {
        for n in only.iter().flatten() {
            if !docs.iter().any(|d| d.entry(n).is_some()) {
                return Err(Error::usage(format!("--only {n}: no file defines {n}")));
            }
        }
        Ok(())
    })?;

    let sel = Selection {
        only: only.as_ref(),
        verify_mac: true,
    };
    let files = run.open(&docs, sel)?;

    let policy = Policy {
        pristine: args.pristine,
        no_override: args.no_override,
    };
    let inherited = exec::inherited();
    if policy.no_override && !policy.pristine {
        templates_see_what_the_program_gets(&docs, &files, &inherited)?;
    }
    let mut env = Environment::inherit(inherited, policy);
    let names = env.apply(&files, policy)?;
    for f in &files {
        match &f.opened_by {
            Some(arn) => run.info(format!("{}: data key opened with {arn}", f.path.display())),
            None => run.info(format!(
                "{}: no data key (plain and kms values only)",
                f.path.display()
            )),
        }
    }
    run.info(format!("setting {}", names.join(" ")));
    drop(files);
    run.end_session(args.init);

    if args.init {
        let code = init::run(&args.command, env, user.as_ref())?;
        std::process::exit(code);
    }
    if let Some(user) = &user {
        user.switch()?;
    }
    Err(exec::exec(&args.command, &env))
}

/// Under `--no-override` an inherited variable wins over the files' value; a
/// template that uses that name was resolved with the file's value (templates
/// never read inherited variables), so the program would see two different
/// values for one name. Refused rather than guessed.
fn templates_see_what_the_program_gets(
    docs: &[Document],
    files: &[OpenedFile],
    inherited: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<()> {
    let kept = |n: &str| {
        !n.starts_with(OWN_ENV_PREFIX)
            && inherited
                .iter()
                .any(|(k, _)| k.as_encoded_bytes() == n.as_bytes())
    };
    for (doc, f) in docs.iter().zip(files) {
        for v in f
            .values
            .iter()
            .filter(|v| v.origin == Origin::Template && !kept(&v.name))
        {
            let Some(Value::Template(text)) = doc.entry(&v.name).map(|e| &e.value) else {
                continue;
            };
            if let Some(r) = references(text).into_iter().find(|r| kept(r)) {
                return Err(Error::usage(format!(
                    "{}: {}: the template uses ${{{r}}}, which is inherited and kept by --no-override: \
                     the template uses the files' {r}, the program would get another",
                    doc.path.display(),
                    v.name
                ))
                .with_hint(format!("unset {r} before running kmsenv, or drop --no-override")));
            }
        }
    }
    Ok(())
}
