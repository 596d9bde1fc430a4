//! `kmsenv lint`: the offline checks of `lint`, over the files given (or the
//! run's files), printed for people or as JSON for tools. No AWS at all: no
//! session is started, no credential is looked for, so it runs in a commit hook
//! and in an empty container. Exit 0 clean, 1 findings, 125 a file unreadable.

use std::path::{Path, PathBuf};

use crate::cli::{LintArgs, LintFormat};
use crate::document::{Document, Pos};
use crate::dotenv::json_string;
use crate::error::{Class, Error, Result, report};
use crate::lint::{Finding, lint};
use crate::run::{Connect, Run, write_stdout};
use crate::s3;
use crate::terminal::escape;

pub fn run<K: Connect>(run: &Run<K>, args: LintArgs) -> Result<()> {
    let paths: Vec<PathBuf> = if args.paths.is_empty() {
        run.files.clone()
    } else {
        args.paths
    };
    let mut found: Vec<(&Path, Finding)> = Vec::new();
    let mut errors: Vec<(&Path, Error)> = Vec::new();
    for path in &paths {
        let seen = if s3::is_url(path) {
            Err(Error::usage(format!(
                "{}: lint reads local files only (it makes no AWS call)",
                path.display()
            )))
        } else {
            Document::load_inspect(path, run.deadline)
        };
        match seen {
            Ok(seen) => found.extend(
                lint(&seen, run.pin.as_ref())
                    .into_iter()
                    .map(|f| (path.as_path(), f)),
            ),
            Err(e) => errors.push((path, e)),
        }
    }
    let out = match args.format {
        LintFormat::Text => text(&found),
        LintFormat::Json => json(&found, &errors),
    };
    write_stdout(&[&out])?;
    if args.format == LintFormat::Text {
        errors.iter().for_each(|(_, e)| report(e));
    }
    if !errors.is_empty() {
        return Err(Error::input(format!(
            "lint: {} of {} files could not be read",
            errors.len(),
            paths.len()
        )));
    }
    match found.len() {
        0 => Ok(()),
        n => Err(Error::new(
            Class::Findings,
            format!(
                "lint: {n} finding{} in {} files checked",
                if n == 1 { "" } else { "s" },
                paths.len()
            ),
        )),
    }
}

/// Where a finding is; a finding about the whole file points at its start.
fn place(at: Pos) -> Pos {
    if at.line == 0 {
        Pos { line: 1, column: 1 }
    } else {
        at
    }
}

fn text(found: &[(&Path, Finding)]) -> Vec<u8> {
    let mut out = String::new();
    for (path, f) in found {
        let var = f
            .variable
            .as_deref()
            .map(|v| format!("{v}: "))
            .unwrap_or_default();
        let line = format!(
            "{}:{}: {var}{} [{}]",
            path.display(),
            place(f.at),
            f.message,
            f.rule
        );
        out += &escape(&line);
        out += "\n    fix: ";
        out += &escape(&f.fix);
        out += "\n";
    }
    out.into_bytes()
}

fn json(found: &[(&Path, Finding)], errors: &[(&Path, Error)]) -> Vec<u8> {
    let mut out = b"{\"findings\":[".to_vec();
    for (i, (path, f)) in found.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let at = place(f.at);
        out.extend_from_slice(b"{\"file\":");
        json_string(&path.to_string_lossy(), &mut out);
        out.extend_from_slice(
            format!(",\"line\":{},\"column\":{},\"variable\":", at.line, at.column).as_bytes(),
        );
        match &f.variable {
            Some(v) => json_string(v, &mut out),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"rule\":");
        json_string(f.rule, &mut out);
        out.extend_from_slice(b",\"message\":");
        json_string(&f.message, &mut out);
        out.extend_from_slice(b",\"fix\":");
        json_string(&f.fix, &mut out);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"errors\":[");
    for (i, (path, e)) in errors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"file\":");
        json_string(&path.to_string_lossy(), &mut out);
        out.extend_from_slice(b",\"message\":");
        json_string(e.message(), &mut out);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
    out
}
