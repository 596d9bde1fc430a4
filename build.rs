//! Gives the binary the commit it was built from (`kmsenv --version`), so a bug
//! report names the exact source.
//!
//! Reproducible: the commit is the same text for every build of one commit,
//! wherever it is checked out. The order of sources: `KMSENV_COMMIT` (a
//! packager's choice), the git checkout this crate is the top of, the
//! `.cargo_vcs_info.json` that `cargo package` writes, else `unknown` (a source
//! tarball without .git still builds). A checkout with uncommitted changes still
//! names its commit: telling them apart would rebuild on every file change.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KMSENV_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = std::env::var("KMSENV_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| from_git(&dir))
        .or_else(|| from_vcs_info(&dir))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KMSENV_COMMIT={}", commit.trim());
    // The triple cargo builds for (a cross build names the target, not the host).
    println!(
        "cargo:rustc-env=KMSENV_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn from_git(dir: &Path) -> Option<String> {
    // Only a checkout of this crate: a source tarball unpacked inside some other
    // repository must not take that repository's commit.
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = match (Path::new(&top).canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points to
    // (a commit: a loose ref, or packed-refs), in a worktree or not.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for item in watch {
        if let Some(path) = git(dir, &["rev-parse", "--path-format=absolute", "--git-path", &item]) {
            let path = PathBuf::from(path);
            // A loose ref may appear later: watch its folder then.
            let path = if path.exists() {
                path
            } else {
                path.parent().map(Path::to_path_buf).unwrap_or(path)
            };
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(commit)
}

fn from_vcs_info(dir: &Path) -> Option<String> {
    // {"git": {"sha1": "…"}, "path_in_vcs": ""}: no JSON parser needed for one field.
    let text = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let rest = &text[text.find("\"sha1\"")? + 6..];
    let start = rest.find('"')? + 1;
    let sha: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    (sha.len() >= 12).then(|| sha[..12].to_string())
}
