//! The commit hooks, for real: the `pre-commit` framework (PyPI, installed by
//! this test when missing, as `make tools` does) running this repository's
//! `.pre-commit-hooks.yaml`, and the plain git hook of examples/git-hooks, each
//! in a temporary git repository with the kmsenv built from this tree first on
//! PATH. A commit adding a plaintext token is refused with the finding; a
//! clean one passes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use support::*;

const TOKEN: &str = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";

/// `pre-commit` importable by python3, installed with pip the first time.
fn ensure_pre_commit() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let have = |_: ()| {
            Command::new("python3")
                .args(["-m", "pre_commit", "--version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have(()) {
            let ok = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "pre-commit"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok && have(()), "cannot install pre-commit with pip");
        }
    });
}

/// A command in `dir` whose PATH starts with the folder of the kmsenv under test.
fn command(sandbox: &Sandbox, dir: &Path, program: &str) -> Command {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kmsenv"));
    let bin_dir = bin.parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(program);
    c.current_dir(dir)
        .env("PATH", path)
        .env("HOME", sandbox.path(""))
        .env("PRE_COMMIT_HOME", sandbox.path("pre-commit-cache"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env_remove("KMSENV_FILE")
        .env_remove("KMSENV_TRUST_KEYS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(sandbox: &Sandbox, dir: &Path, program: &str, args: &[&str]) -> Output {
    let mut c = command(sandbox, dir, program);
    c.args(args);
    let what = format!("{program} {}", args.join(" "));
    wait_bounded(c.spawn().unwrap_or_else(|e| panic!("start {what}: {e}")), &what)
}

fn git(sandbox: &Sandbox, dir: &Path, args: &[&str]) -> Output {
    run(sandbox, dir, "git", args)
}

fn new_repo(sandbox: &Sandbox, name: &str) -> PathBuf {
    let dir = sandbox.path(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    git(sandbox, &dir, &["init", "-q", "-b", "main"]).ok();
    dir
}

fn leaky_file() -> String {
    keyless_file(&["LOG_LEVEL = \"info\"", &format!("GITHUB_TOKEN = \"{TOKEN}\"")])
}

fn clean_file() -> String {
    keyless_file(&["LOG_LEVEL = \"info\""])
}

/// Whether `repo` has a commit.
fn has_commit(sandbox: &Sandbox, repo: &Path) -> bool {
    git(sandbox, repo, &["rev-parse", "-q", "--verify", "HEAD"])
        .status
        .success()
}

#[test]
fn the_pre_commit_framework_refuses_a_plaintext_token_and_passes_a_clean_commit() {
    ensure_pre_commit();
    let sandbox = Sandbox::new();
    // The hook repository as it is in this tree, committed, for pre-commit to clone.
    let hooks = new_repo(&sandbox, "hooks");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(".pre-commit-hooks.yaml");
    std::fs::copy(&manifest, hooks.join(".pre-commit-hooks.yaml")).expect("copy hooks");
    git(&sandbox, &hooks, &["add", "."]).ok();
    git(&sandbox, &hooks, &["commit", "-q", "-m", "hooks"]).ok();
    let rev = git(&sandbox, &hooks, &["rev-parse", "HEAD"])
        .ok()
        .stdout_text()
        .trim()
        .to_string();

    let project = new_repo(&sandbox, "project");
    sandbox.write(
        &project.join(".pre-commit-config.yaml"),
        &format!(
            "repos:\n  - repo: {}\n    rev: {rev}\n    hooks:\n      - id: kmsenv-lint\n",
            hooks.display()
        ),
    );
    run(&sandbox, &project, "python3", &["-m", "pre_commit", "install"]).ok();
    std::fs::create_dir_all(project.join("config")).expect("mkdir");
    sandbox.write(&project.join("config/kmsenv.prod.toml"), &leaky_file());
    sandbox.write(&project.join("notes.toml"), &leaky_file()); // not a kmsenv file: not linted
    git(&sandbox, &project, &["add", "."]).ok();

    let refused = git(&sandbox, &project, &["commit", "-q", "-m", "leak"]);

    assert!(!refused.status.success(), "the commit must be refused");
    let said = String::from_utf8_lossy(&refused.all_output()).into_owned();
    assert!(
        said.contains("config/kmsenv.prod.toml:6:1: GITHUB_TOKEN: plain value")
            && said.contains("looks like a GitHub token"),
        "{said}"
    );
    assert!(!said.contains("notes.toml"), "{said}");
    assert!(!said.contains(TOKEN), "the hook must not print the token: {said}");
    assert!(!has_commit(&sandbox, &project));

    sandbox.write(&project.join("config/kmsenv.prod.toml"), &clean_file());
    git(&sandbox, &project, &["add", "."]).ok();
    git(&sandbox, &project, &["commit", "-q", "-m", "clean"]).ok();
    assert!(has_commit(&sandbox, &project));
}

#[test]
fn the_plain_git_hook_checks_the_staged_copy() {
    let sandbox = Sandbox::new();
    let project = new_repo(&sandbox, "project");
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/git-hooks/pre-commit");
    let installed = project.join(".git/hooks/pre-commit");
    std::fs::copy(&hook, &installed).expect("install hook");

    sandbox.write(&project.join("kmsenv.toml"), &leaky_file());
    git(&sandbox, &project, &["add", "kmsenv.toml"]).ok();
    // The working copy is fixed but not staged: what would be committed still leaks.
    sandbox.write(&project.join("kmsenv.toml"), &clean_file());

    let refused = git(&sandbox, &project, &["commit", "-q", "-m", "leak"]);

    assert!(!refused.status.success(), "the commit must be refused");
    let said = String::from_utf8_lossy(&refused.all_output()).into_owned();
    assert!(
        said.contains("kmsenv.toml:6:1: GITHUB_TOKEN: plain value"),
        "{said}"
    );
    assert!(said.contains("commit refused"), "{said}");
    assert!(!said.contains(TOKEN), "{said}");
    assert!(!has_commit(&sandbox, &project));

    git(&sandbox, &project, &["add", "kmsenv.toml"]).ok();
    git(&sandbox, &project, &["commit", "-q", "-m", "clean"]).ok();
    assert!(has_commit(&sandbox, &project));
}
