//! What a release ships, tested as shipped: the static binaries of both targets
//! (the arm64 one under qemu-user, with the very assertions of x86_64), the
//! `kmsenv-full` binaries next to them (features `full`: S3 files, SSM references),
//! the tarballs holding both, the `--version` line, the shell completions and man
//! pages, and the `FROM scratch` image built and used with the real Docker engine.
//!
//! Needs `make dist` (which `make test` runs first): both static binaries, both
//! kmsenv-full and the tarballs, and qemu-user-static, zsh, fish and man-db, which
//! it installs when missing. The binaries are `KMSENV_STATIC_BIN` /
//! `KMSENV_STATIC_BIN_AARCH64` and `KMSENV_FULL_BIN` / `KMSENV_FULL_BIN_AARCH64`,
//! the tarballs are in `KMSENV_DIST_DIR`; else the paths `make dist` writes.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// The size budget of a shipped binary.
const MAX_BYTES: u64 = 6 * 1024 * 1024;

// ---------------------------------------------------------------------------
// The static binaries, one module of tests per target

/// One shipped binary and how to run it on this machine.
struct Release {
    target: &'static str,
    bin: PathBuf,
    /// qemu-user for a binary of another architecture than this machine's.
    runner: Option<&'static str>,
}

/// The default binary (`kmsenv`) of `target`.
fn release(target: &'static str) -> Release {
    let var = match target {
        "x86_64-unknown-linux-musl" => "KMSENV_STATIC_BIN",
        "aarch64-unknown-linux-musl" => "KMSENV_STATIC_BIN_AARCH64",
        other => panic!("no release target {other}"),
    };
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join(target).join("release/kmsenv"));
    assert!(
        bin.exists(),
        "{} is missing: run `make static` (make test does)",
        bin.display()
    );
    release_of(target, bin)
}

/// `kmsenv-full` (features `full`) of `target`, as `make static-full` builds it.
fn release_full(target: &'static str) -> Release {
    let var = match target {
        "x86_64-unknown-linux-musl" => "KMSENV_FULL_BIN",
        "aarch64-unknown-linux-musl" => "KMSENV_FULL_BIN_AARCH64",
        other => panic!("no release target {other}"),
    };
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("full").join(target).join("release/kmsenv"));
    assert!(
        bin.exists(),
        "{} is missing: run `make static-full` (make test does)",
        bin.display()
    );
    release_of(target, bin)
}

/// A binary of `target` at `bin`, run through qemu-user when it is for another
/// architecture than this machine's.
fn release_of(target: &'static str, bin: PathBuf) -> Release {
    let arch = target.split('-').next().expect("an architecture");
    let qemu = match arch {
        "aarch64" => "qemu-aarch64-static",
        _ => "qemu-x86_64-static",
    };
    let runner = (arch != std::env::consts::ARCH).then_some(qemu);
    Release { target, bin, runner }
}

/// Where the release builds are: `CARGO_TARGET_DIR`, else `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

impl Release {
    /// The binary with a clean environment (test credentials, moto's endpoint)
    /// in the sandbox, through qemu-user when it is for another architecture.
    fn command(&self, sandbox: &Sandbox) -> Command {
        let mut cmd = match self.runner {
            Some(qemu) => {
                let mut c = Command::new(qemu);
                c.arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        test_env(&mut cmd, sandbox.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, sandbox: &Sandbox, args: &[&str]) -> Output {
        let what = format!("{} {}", self.bin.display(), args.join(" "));
        let child = self
            .command(sandbox)
            .args(args)
            .spawn()
            .unwrap_or_else(|e| match self.runner {
                Some(qemu) => panic!("cannot start {qemu} (qemu-user-static; make static installs it): {e}"),
                None => panic!("cannot start {what}: {e}"),
            });
        wait_bounded(child, &what)
    }

    /// `exec -f FILE -- env -0`: the environment the command was given.
    fn exec_env(&self, sandbox: &Sandbox, file: &Path) -> BTreeMap<String, Vec<u8>> {
        let file = file.to_string_lossy();
        self.run(sandbox, &["exec", "-f", &file, "--", "env", "-0"])
            .ok()
            .env0()
    }
}

/// The commit `git` says this checkout is at, when it is one.
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One line: `kmsenv VERSION (commit C, target T, features: …, file format: writes 2, reads 1-2)`.
#[track_caller]
fn assert_version_line(stdout: &[u8], target: &str) {
    let text = String::from_utf8_lossy(stdout);
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    let line = text.trim_end();
    let start = format!("kmsenv {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&start), "{line}");
    assert!(line.contains(&format!("target {target}")), "{line}");
    assert!(line.contains("file format: writes 2, reads 1-2"), "{line}");
    if let Some(commit) = git_commit() {
        assert!(
            line.contains(&format!("(commit {commit},")),
            "{line}: built from another commit than {commit} (a stale binary? run `make static`)"
        );
    }
}

/// The ELF facts of a shipped binary: its machine, no program interpreter
/// (static), no symbol table (stripped).
struct Elf {
    machine: u16,
    has_interpreter: bool,
    has_symtab: bool,
}

fn elf(bytes: &[u8]) -> Elf {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, shoff) = (u64_at(0x20), u64_at(0x28));
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    let (shentsize, shnum) = (u16_at(0x3a) as usize, u16_at(0x3c) as usize);
    const PT_INTERP: u32 = 3;
    const SHT_SYMTAB: u32 = 2;
    Elf {
        machine: u16_at(0x12),
        has_interpreter: (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP),
        has_symtab: (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == SHT_SYMTAB),
    }
}

/// The same tests for every shipped target: the arm64 binary must pass exactly
/// what the x86_64 one passes.
macro_rules! release_tests {
    ($($arch:ident => $target:literal, machine $machine:literal;)*) => {$(
        mod $arch {
            use super::*;

            #[test]
            fn is_static_stripped_and_within_6_mib() {
                let r = release($target);
                let bytes = std::fs::read(&r.bin).expect("read the binary");
                let facts = elf(&bytes);
                assert_eq!(facts.machine, $machine, "ELF machine of {}", r.bin.display());
                assert!(!facts.has_interpreter, "{} names a program interpreter: not static", r.bin.display());
                assert!(!facts.has_symtab, "{} has a symbol table: not stripped", r.bin.display());
                assert!(
                    bytes.len() as u64 <= MAX_BYTES,
                    "{}: {} bytes, over {MAX_BYTES}",
                    r.bin.display(),
                    bytes.len()
                );
            }

            #[test]
            fn version_is_one_line_with_commit_target_and_formats() {
                let r = release($target);
                let out = r.run(&Sandbox::new(), &["--version"]).ok();
                assert_version_line(&out.stdout, r.target);
                // The default binary: no optional feature (kmsenv-full has them).
                assert!(out.stdout_text().contains("features: none,"), "{}", out.stdout_text());
            }

            #[test]
            fn exec_of_a_plain_only_file_sets_its_values() {
                let r = release($target);
                let sandbox = Sandbox::new();
                let file = sandbox.path("plain.toml");
                sandbox.write(&file, &keyless_file(&["LOG_LEVEL = \"info\"", "GREETING = \"héllo wörld\""]));
                let env = r.exec_env(&sandbox, &file);
                assert_eq!(env["LOG_LEVEL"], b"info");
                assert_eq!(env["GREETING"], "héllo wörld".as_bytes());
            }

            #[test]
            fn exec_of_an_envelope_file_opens_sealed_and_plain_values() {
                let r = release($target);
                let sandbox = Sandbox::new();
                let (file, _) = sandbox.new_file("kmsenv.toml");
                sandbox.set(&file, "DATABASE_URL", b"postgres://u:p@db/app");
                sandbox.set(&file, "API_TOKEN", b"tok-123");
                sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"debug");
                let env = r.exec_env(&sandbox, &file);
                assert_eq!(env["DATABASE_URL"], b"postgres://u:p@db/app");
                assert_eq!(env["API_TOKEN"], b"tok-123");
                assert_eq!(env["LOG_LEVEL"], b"debug");
            }

            #[test]
            fn exec_of_direct_kms_values_decrypts_each_against_moto() {
                let r = release($target);
                let sandbox = Sandbox::new();
                let key = sandbox.key();
                let a = encrypt(REGION, &key, b"direct-a", &[("kmsenv:var", "A_TOKEN")]);
                let b = encrypt(REGION, &key, b"direct-b", &[]);
                let file = sandbox.path("direct.toml");
                sandbox.write(
                    &file,
                    &keyless_file(&[
                        &format!("A_TOKEN = {{ kms = \"{a}\", key = \"{key}\", context = {{ \"kmsenv:var\" = \"A_TOKEN\" }} }}"),
                        &format!("B_TOKEN = {{ kms = \"{b}\" }}"),
                    ]),
                );
                let env = r.exec_env(&sandbox, &file);
                assert_eq!(env["A_TOKEN"], b"direct-a");
                assert_eq!(env["B_TOKEN"], b"direct-b");
            }

            #[test]
            fn exec_fails_closed_when_two_sealed_values_were_swapped() {
                let r = release($target);
                let sandbox = Sandbox::new();
                let (file, _) = sandbox.new_file("kmsenv.toml");
                sandbox.set(&file, "FIRST", b"one");
                sandbox.set(&file, "SECOND", b"two");
                let text = sandbox.read(&file);
                let tampered = swap(&text, &sealed_of(&text, "FIRST"), &sealed_of(&text, "SECOND"));
                sandbox.write(&file, &tampered);
                let path = file.to_string_lossy();
                let mut args = vec!["exec", "-f", &path, "--"];
                let marker_command: Vec<String> = sandbox
                    .touch_marker_command()
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                args.extend(marker_command.iter().map(String::as_str));
                let out = r.run(&sandbox, &args).code_is(125);
                assert!(out.stdout.is_empty(), "nothing on stdout");
                assert!(out.stderr.starts_with("kmsenv: "), "one kmsenv error: {}", out.stderr);
                assert!(!out.stderr.contains("one") && !out.stderr.contains("two"), "no value: {}", out.stderr);
                sandbox.assert_command_did_not_run();
            }

            #[test]
            fn exec_fails_closed_when_a_plain_value_was_edited() {
                let r = release($target);
                let sandbox = Sandbox::new();
                let (file, _) = sandbox.new_file("kmsenv.toml");
                sandbox.set(&file, "SECRET", b"s");
                sandbox.set_with(&file, &["--plain"], "ADMIN", b"false");
                let text = sandbox.read(&file);
                sandbox.write(&file, &replace_once(&text, "ADMIN = \"false\"", "ADMIN = \"true\""));
                let path = file.to_string_lossy();
                r.run(&sandbox, &["exec", "-f", &path, "--", "env", "-0"])
                    .kmsenv_error(&["MAC"]);
            }
        }
    )*};
}

release_tests! {
    x86_64 => "x86_64-unknown-linux-musl", machine 62;
    aarch64 => "aarch64-unknown-linux-musl", machine 183;
}

// ---------------------------------------------------------------------------
// kmsenv-full and the tarballs, per target

/// Unpacks `dist/kmsenv-VERSION-SHORT.tar.gz` of `target` into `into`; returns
/// the unpacked folder and the tarball's listing.
fn unpack_tarball(target: &str, into: &Path) -> (PathBuf, Vec<String>) {
    let dist = std::env::var_os("KMSENV_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("dist"));
    let name = format!(
        "kmsenv-{}-{}",
        env!("CARGO_PKG_VERSION"),
        target.replace("-unknown-", "-")
    );
    let tarball = dist.join(format!("{name}.tar.gz"));
    assert!(
        tarball.exists(),
        "{} is missing: run `make dist` (make test does)",
        tarball.display()
    );
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&tarball)
        .output()
        .expect("tar -t");
    assert!(listing.status.success(), "tar -t {}", tarball.display());
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar -x");
    assert!(unpacked.success(), "tar -x {}", tarball.display());
    let listing = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (into.join(name), listing)
}

/// The same tests for kmsenv-full of every target, and for the tarball that
/// ships it next to kmsenv.
macro_rules! full_tests {
    ($($arch:ident => $target:literal, machine $machine:literal;)*) => {$(
        mod $arch {
            use super::*;

            #[test]
            fn kmsenv_full_is_static_and_stripped() {
                let r = release_full($target);
                let bytes = std::fs::read(&r.bin).expect("read the binary");
                let facts = elf(&bytes);
                assert_eq!(facts.machine, $machine, "ELF machine of {}", r.bin.display());
                assert!(!facts.has_interpreter, "{} names a program interpreter: not static", r.bin.display());
                assert!(!facts.has_symtab, "{} has a symbol table: not stripped", r.bin.display());
                let out = r.run(&Sandbox::new(), &["--version"]).ok();
                assert_version_line(&out.stdout, r.target);
                assert!(out.stdout_text().contains("features: s3, ssm,"), "features name s3 and ssm: {}", out.stdout_text());
            }

            /// The point of kmsenv-full: it reads an SSM reference, which the
            /// default binary refuses pointing at kmsenv-full.
            #[test]
            fn kmsenv_full_reads_a_parameter_reference_that_kmsenv_refuses() {
                let sandbox = Sandbox::new();
                let name = unique_name("/release/p");
                moto().put_parameter(REGION, &name, "from-ssm", "SecureString");
                let file = sandbox.path("refs.toml");
                sandbox.write(&file, &keyless_file(&[&format!("P = {{ ssm = {} }}", toml_string(&name))]));

                let env = release_full($target).exec_env(&sandbox, &file);
                assert_eq!(env["P"], b"from-ssm");

                let path = file.to_string_lossy();
                release($target)
                    .run(&sandbox, &["exec", "-f", &path, "--", "env", "-0"])
                    .kmsenv_error(&["P", "kmsenv-full"]);
            }

            #[test]
            fn the_tarball_ships_kmsenv_and_kmsenv_full_and_both_run() {
                let sandbox = Sandbox::new();
                let (dir, listing) = unpack_tarball($target, sandbox.dir.path());
                let top = dir.file_name().expect("a folder").to_string_lossy().into_owned();
                for binary in ["kmsenv", "kmsenv-full"] {
                    assert!(
                        listing.iter().any(|entry| *entry == format!("{top}/{binary}")),
                        "{binary} in the tarball: {listing:?}"
                    );
                    let path = dir.join(binary);
                    let mode = std::os::unix::fs::PermissionsExt::mode(
                        &std::fs::metadata(&path).expect("unpacked binary").permissions(),
                    );
                    assert_eq!(mode & 0o777, 0o755, "{binary} is executable");
                    let bytes = std::fs::read(&path).expect("read the binary");
                    assert_eq!(elf(&bytes).machine, $machine, "{binary}");
                    let out = release_of($target, path).run(&sandbox, &["--version"]).ok();
                    assert_version_line(&out.stdout, $target);
                }
                // What ships is what was built and tested.
                assert_eq!(
                    std::fs::read(dir.join("kmsenv")).expect("kmsenv"),
                    std::fs::read(&release($target).bin).expect("the static binary")
                );
                assert_eq!(
                    std::fs::read(dir.join("kmsenv-full")).expect("kmsenv-full"),
                    std::fs::read(&release_full($target).bin).expect("the full binary")
                );
                let kmsenv_size = std::fs::metadata(dir.join("kmsenv")).expect("kmsenv").len();
                assert!(kmsenv_size <= MAX_BYTES, "kmsenv: {kmsenv_size} bytes, over {MAX_BYTES}");
            }
        }
    )*};
}

mod full {
    use super::*;

    full_tests! {
        x86_64 => "x86_64-unknown-linux-musl", machine 62;
        aarch64 => "aarch64-unknown-linux-musl", machine 183;
    }
}

// ---------------------------------------------------------------------------
// --version, completions and man pages (from the binary under test)

fn kmsenv(args: &[&str]) -> Output {
    let sandbox = Sandbox::new();
    sandbox.kmsenv_without_aws().args(args).run()
}

#[test]
fn version_is_one_line_with_commit_target_and_formats() {
    let out = kmsenv(&["--version"]).ok();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_version_line(&out.stdout, &format!("{}-", std::env::consts::ARCH));
    assert!(text.contains("-linux-"), "{text}");
}

/// Runs `shell ARGS… FILE` and returns its output; the shell must be installed.
fn shell(program: &str, args: &[&str], package: &str) -> std::process::Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install {package} (make static does)"))
}

#[test]
fn bash_completion_loads_and_completes_ex_to_exec_and_export() {
    let sandbox = Sandbox::new();
    let script = sandbox.path("kmsenv.bash");
    std::fs::write(&script, kmsenv(&["completions", "bash"]).ok().stdout).expect("write script");
    // Source it as bash-completion would, then ask its function what `kmsenv ex<TAB>` gives.
    let probe = r#"
        set -e
        source "$1"
        spec=$(complete -p kmsenv)
        fn=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
        [ -n "$fn" ] || { echo "no completion function in: $spec" >&2; exit 1; }
        COMP_WORDS=(kmsenv ex); COMP_CWORD=1; COMP_LINE="kmsenv ex"; COMP_POINT=${#COMP_LINE}
        "$fn" kmsenv ex kmsenv
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let script_path = script.to_string_lossy();
    let out = shell(
        "bash",
        &["--norc", "--noprofile", "-c", probe, "bash", &script_path],
        "bash",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bash: {stderr}");
    assert!(stderr.is_empty(), "loading the script printed: {stderr}");
    let mut offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    offered.sort();
    assert_eq!(offered, ["exec", "export"]);
}

#[test]
fn zsh_completion_parses() {
    let sandbox = Sandbox::new();
    let script = sandbox.path("_kmsenv");
    let text = kmsenv(&["completions", "zsh"]).ok().stdout;
    assert!(String::from_utf8_lossy(&text).starts_with("#compdef kmsenv"));
    std::fs::write(&script, text).expect("write script");
    let out = shell("zsh", &["-n", &script.to_string_lossy()], "zsh");
    assert!(
        out.status.success(),
        "zsh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "zsh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fish_completion_parses() {
    let sandbox = Sandbox::new();
    let script = sandbox.path("kmsenv.fish");
    let text = kmsenv(&["completions", "fish"]).ok().stdout;
    assert!(String::from_utf8_lossy(&text).contains("complete -c kmsenv"));
    std::fs::write(&script, text).expect("write script");
    let out = shell("fish", &["--no-execute", &script.to_string_lossy()], "fish");
    assert!(
        out.status.success(),
        "fish -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "fish -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_for_an_unknown_shell_are_a_usage_error() {
    kmsenv(&["completions", "tcsh"]).code_is(125);
}

/// Every page `kmsenv man --out-dir` writes.
fn man_pages(sandbox: &Sandbox) -> Vec<PathBuf> {
    let dir = sandbox.path("man");
    let dir_arg = dir.to_string_lossy().into_owned();
    kmsenv(&["man", "--out-dir", &dir_arg]).ok();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read the man folder")
        .map(|e| e.expect("entry").path())
        .collect();
    pages.sort();
    pages
}

#[test]
fn man_writes_kmsenv_1_and_one_page_per_subcommand() {
    let sandbox = Sandbox::new();
    let names: Vec<String> = man_pages(&sandbox)
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    for page in [
        "kmsenv.1",
        "kmsenv-exec.1",
        "kmsenv-init.1",
        "kmsenv-set.1",
        "kmsenv-unset.1",
        "kmsenv-get.1",
        "kmsenv-list.1",
        "kmsenv-check.1",
        "kmsenv-export.1",
        "kmsenv-rotate.1",
        "kmsenv-keys.1",
        "kmsenv-keys-add.1",
        "kmsenv-keys-remove.1",
        "kmsenv-keys-list.1",
        "kmsenv-edit.1",
        "kmsenv-upgrade.1",
        "kmsenv-import.1",
        "kmsenv-completions.1",
        "kmsenv-man.1",
    ] {
        assert!(names.iter().any(|n| n == page), "{page} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|n| n == "kmsenv-help.1"),
        "no page for clap's help: {names:?}"
    );
}

#[test]
fn man_renders_every_page_without_warnings() {
    let sandbox = Sandbox::new();
    let pages = man_pages(&sandbox);
    assert!(pages.len() > 10, "{pages:?}");
    for page in pages {
        let out = Command::new("man")
            .arg("--warnings")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "80")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run man ({e}): install man-db (make static does)"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man -l {}: {stderr}", page.display());
        assert!(stderr.is_empty(), "man -l {} warned: {stderr}", page.display());
        let text = without_overstrike(&String::from_utf8_lossy(&out.stdout));
        let stem = page.file_stem().expect("stem").to_string_lossy().into_owned();
        assert!(
            text.contains("NAME") && text.contains(&stem),
            "{}: {text}",
            page.display()
        );
    }
}

/// grotty's bold and underline (`N\bN`, `_\bx`) as plain text.
fn without_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn man_prints_one_page_and_refuses_an_unknown_one() {
    let out = kmsenv(&["man"]).ok();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(".ie"),
        "roff text"
    );
    let exec = kmsenv(&["man", "exec"]).ok();
    assert!(String::from_utf8_lossy(&exec.stdout).contains("kmsenv\\-exec"));
    let keys_add = kmsenv(&["man", "keys", "add"]).ok();
    assert!(String::from_utf8_lossy(&keys_add.stdout).contains("kmsenv\\-keys\\-add"));
    kmsenv(&["man", "nosuch"]).kmsenv_error(&["no man page", "nosuch"]);
}

// ---------------------------------------------------------------------------
// The image to copy from, with the real engine

/// Runs a docker command; panics with its output unless it succeeds.
#[track_caller]
fn docker_ok(args: &[&str]) -> Vec<u8> {
    let out = support::docker::docker_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Removes a test image however the test ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = support::docker::docker_command()
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[test]
fn an_app_image_copies_kmsenv_from_the_release_image_and_runs() {
    let version = env!("CARGO_PKG_VERSION");
    let release_tag = format!("kmsenv:{version}");
    // The engine first, so a machine without one fails here and says why.
    let _ = support::docker::docker_command();
    // `make image`'s own code, with the binary under test.
    let made = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/release.sh"))
        .args(["image", &release(ARCH_TARGET).bin.to_string_lossy()])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/release.sh image");
    assert!(
        made.status.success(),
        "scripts/release.sh image: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    // The release image holds one layer with one file: /kmsenv.
    let sandbox = Sandbox::new();
    let saved = sandbox.path("saved");
    std::fs::create_dir_all(&saved).expect("mkdir");
    let tar = sandbox.path("image.tar");
    docker_ok(&["save", "-o", &tar.to_string_lossy(), &release_tag]);
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&saved)
        .status()
        .expect("tar");
    assert!(untar.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("manifest.json")).expect("manifest.json"))
            .expect("json");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let layer = saved.join(layers[0].as_str().expect("layer path"));
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&layer)
        .output()
        .expect("tar -t");
    let files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(files, ["kmsenv"], "the image holds only /kmsenv");

    // The README's pattern: an app image that copies /kmsenv from the release image.
    let (file, key) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "DATABASE_URL", b"postgres://from-the-image");
    sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"warn");
    let context = sandbox.path("app");
    std::fs::create_dir_all(&context).expect("mkdir");
    std::fs::copy(&file, context.join("kmsenv.toml")).expect("copy file");
    static_printenv(sandbox.dir.path(), &context.join("printenv"));
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             COPY --from={release_tag} /kmsenv /kmsenv\n\
             COPY kmsenv.toml /app/kmsenv.toml\n\
             COPY printenv /app/printenv\n\
             ENTRYPOINT [\"/kmsenv\", \"exec\", \"--trust-key\", \"{key}\", \"-f\", \"/app/kmsenv.toml\", \"--\"]\n\
             CMD [\"/app/printenv\"]\n"
        ),
    )
    .expect("write Dockerfile");
    let app = Image(format!("kmsenv-release-test-app:{}", std::process::id()));
    docker_ok(&["build", "-q", "-t", &app.0, &context.to_string_lossy()]);
    let endpoint = moto().endpoint();
    let stdout = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        "AWS_ACCESS_KEY_ID=testing",
        "-e",
        "AWS_SECRET_ACCESS_KEY=testing",
        "-e",
        &format!("AWS_REGION={REGION}"),
        "-e",
        "AWS_EC2_METADATA_DISABLED=true",
        "-e",
        &format!("AWS_ENDPOINT_URL_KMS={endpoint}"),
        &app.0,
    ]);
    let env = parse_env0(&stdout);
    assert_eq!(env["DATABASE_URL"], b"postgres://from-the-image");
    assert_eq!(env["LOG_LEVEL"], b"warn");
}

/// The release target of this machine's architecture (the image's binary).
const ARCH_TARGET: &str = if cfg!(target_arch = "aarch64") {
    "aarch64-unknown-linux-musl"
} else {
    "x86_64-unknown-linux-musl"
};
