//! `kmsenv export`: print decrypted values as dotenv, POSIX shell or JSON, or
//! hand them to later GitHub Actions steps (`github`). Every format reads back
//! as the exact bytes; a format refuses, by name, a value it cannot carry
//! that way (`dotenv::format_dotenv`, `github::text` say which).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::cli::{ExportArgs, Format};
use crate::dotenv;
use crate::error::{Error, Result};
use crate::github;
use crate::resolve::{OpenedValue, Selection};
use crate::run::{Connect, Run, write_stdout};
use crate::secret::Secret;

pub fn run<K: Connect>(run: &Run<K>, args: ExportArgs) -> Result<()> {
    let docs = run.load_all_to_open(&|_| Ok(()))?;
    let files = run.open(&docs, Selection::ALL)?;
    // Later files win; each name once, in order of first appearance. The index
    // keeps this linear: 200 000 entries took half a minute with a scan per name.
    let count = crate::resolve::value_count(&files);
    let mut winners: Vec<&OpenedValue> = Vec::with_capacity(count);
    let mut slot_of: HashMap<&str, usize> = HashMap::with_capacity(count);
    for v in files.iter().flat_map(|f| f.values.iter()) {
        match slot_of.get(v.name.as_str()) {
            Some(&i) => winners[i] = v,
            None => {
                slot_of.insert(&v.name, winners.len());
                winners.push(v);
            }
        }
    }
    if args.format == Format::Github {
        return to_github(&winners, std::env::var_os("GITHUB_ENV"));
    }
    let merged: Vec<(&str, &Secret)> = winners.iter().map(|v| (v.name.as_str(), &v.secret)).collect();
    // Sized for the worst escaping (dotenv adds none, shell makes `'` four,
    // JSON makes a control byte six), so the buffer never grows and never leaves
    // an unwiped copy of the values behind.
    let grow = match args.format {
        Format::Dotenv => 1,
        Format::Shell => 4,
        Format::Json | Format::Github => 6,
    };
    let size = merged
        .iter()
        .map(|(n, v)| n.len() + grow * v.expose().len() + 16)
        .sum::<usize>()
        + 4;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(size));
    match args.format {
        Format::Dotenv => {
            for (n, v) in &merged {
                dotenv::format_dotenv(n, v.expose(), &mut out)?;
            }
        }
        Format::Shell => merged
            .iter()
            .for_each(|(n, v)| dotenv::format_shell(n, v.expose(), &mut out)),
        Format::Json => {
            out.push(b'{');
            for (i, (n, v)) in merged.iter().enumerate() {
                let text = std::str::from_utf8(v.expose()).map_err(|_| {
                    Error::usage(format!(
                        "{n}: value is not UTF-8 and JSON cannot carry it; use --format shell"
                    ))
                })?;
                if i > 0 {
                    out.push(b',');
                }
                dotenv::json_string(n, &mut out);
                out.push(b':');
                dotenv::json_string(text, &mut out);
            }
            out.extend_from_slice(b"}\n");
        }
        Format::Github => {}
    }
    write_stdout(&[&out])
}

/// Mask every line of every secret on stdout, then append every variable to
/// `$GITHUB_ENV` (the `github` module says why in that order). Everything is
/// checked and built before anything is printed, so a value that cannot be
/// carried leaves no half-written file.
fn to_github(values: &[&OpenedValue], github_env: Option<OsString>) -> Result<()> {
    let Some(target) = github_env.filter(|p| !p.is_empty()).map(PathBuf::from) else {
        return Err(Error::usage(
            "--format github: $GITHUB_ENV is not set, so there is no file to hand the values to; nothing was written",
        )
        .with_hint("run it in a GitHub Actions step; elsewhere use --format shell or exec"));
    };
    // Sized for the worst case (`%` escapes to three bytes; a line adds a
    // 13-byte command; an entry adds two 45-byte delimiters), so neither buffer
    // grows and leaves an unwiped copy behind.
    let (mut mask_size, mut env_size) = (0, 0);
    for v in values {
        let len = v.secret.expose().len();
        let lines = v.secret.expose().iter().filter(|&&b| b == b'\n').count() + 1;
        mask_size += 3 * len + 14 * lines;
        env_size += v.name.len() + len + 2 * 64;
    }
    let mut masks = Zeroizing::new(Vec::with_capacity(mask_size));
    let mut entries = Zeroizing::new(Vec::with_capacity(env_size));
    for v in values {
        let text = github::text(&v.name, v.secret.expose())?;
        if v.sensitive {
            github::masks(text, &mut masks);
        }
        github::env_entry(&v.name, text, &mut entries)?;
    }
    write_stdout(&[&masks])?;
    // The runner made the file; a missing one is a wrong path, not one to create.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&target)
        .and_then(|mut f| f.write_all(&entries))
        .map_err(|e| Error::io("append to $GITHUB_ENV", &target, &e))
}
