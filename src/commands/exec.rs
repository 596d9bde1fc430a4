//! `kmsenv exec`: parse → validate → unwrap data keys → open values → build the
//! environment → (switch user) → execve, or fork and supervise with `--init`.
//! Top to bottom; no step reaches back.

use std::collections::BTreeSet;

use crate::cli::ExecArgs;
use crate::document::check_name;
use crate::error::{Error, Result};
use crate::exec::{self, Environment, Policy};
use crate::resolve::Selection;
use crate::run::{Connect, Run};
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

    let docs = run.load_all()?;
    if let Some(only) = &only {
        for n in only {
            if !docs.iter().any(|d| d.entry(n).is_some()) {
                return Err(Error::usage(format!("--only {n}: no file defines {n}")));
            }
        }
    }

    let sel = Selection {
        only: only.as_ref(),
        verify_mac: true,
    };
    let files = run.open(&docs, sel)?;

    let policy = Policy {
        pristine: args.pristine,
        no_override: args.no_override,
    };
    let mut env = Environment::inherit(exec::inherited(), policy);
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
    run.end_session();

    if args.init {
        let code = init::run(&args.command, env, user.as_ref())?;
        std::process::exit(code);
    }
    if let Some(user) = &user {
        user.switch()?;
    }
    Err(exec::exec(&args.command, &env))
}
