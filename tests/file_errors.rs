//! Malformed files: each problem is an error (exit 125, nothing run) that points at
//! `path:line:column`, so a typo can never silently drop a variable or protection.
//! These files have no keys, so no KMS is involved.

mod support;

use std::path::PathBuf;

use support::*;

/// Writes `text` as a file and asserts that exec refuses it pointing at `line`.
#[track_caller]
fn assert_refused_at_line(text: &str, line: usize, also: &[&str]) {
    let sandbox = Sandbox::new();
    let file: PathBuf = sandbox.path("kmsenv.toml");
    sandbox.write(&file, text);

    let out = sandbox
        .kmsenv_without_aws()
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(also);

    sandbox.assert_command_did_not_run();
    let location = format!("{}:{line}:", file.display());
    let at = out
        .stderr
        .find(&location)
        .unwrap_or_else(|| panic!("stderr should point at {location}COLUMN:\n{}", out.stderr));
    let column = &out.stderr[at + location.len()..];
    assert!(
        column.starts_with(|c: char| c.is_ascii_digit()),
        "stderr should point at {location}COLUMN:\n{}",
        out.stderr
    );
}

#[test]
fn a_valid_keyless_file_is_accepted() {
    // The control for the cases below.
    let sandbox = Sandbox::new();
    let file = sandbox.path("kmsenv.toml");
    sandbox.write(&file, &keyless_file(&["GOOD_NAME = \"x\"", "_ALSO_9 = \"y\""]));

    let env = sandbox
        .kmsenv_without_aws()
        .file(&file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["GOOD_NAME"], b"x");
    assert_eq!(env["_ALSO_9"], b"y");
}

#[test]
fn an_empty_env_table_is_allowed() {
    let sandbox = Sandbox::new();
    let file = sandbox.path("kmsenv.toml");
    sandbox.write(&file, &keyless_file(&[]));

    sandbox
        .kmsenv_without_aws()
        .file(&file)
        .args(["exec", "--", "true"])
        .run()
        .ok();
}

#[test]
fn a_toml_syntax_error_points_at_its_line_and_column() {
    assert_refused_at_line(
        &keyless_file(&["OK = \"fine\"", "BROKEN = \"unterminated"]),
        6,
        &[],
    );
}

#[test]
fn an_invalid_variable_name_points_at_its_line() {
    assert_refused_at_line(
        &keyless_file(&["OK = \"fine\"", "BAD-NAME = \"x\""]),
        6,
        &["BAD-NAME"],
    );
}

#[test]
fn a_name_starting_with_a_digit_points_at_its_line() {
    assert_refused_at_line(&keyless_file(&["9LIVES = \"x\""]), 5, &["9LIVES"]);
}

#[test]
fn an_unknown_field_in_a_value_table_points_at_its_line() {
    assert_refused_at_line(
        &keyless_file(&["OK = \"fine\"", "TYPO = { kms = \"AQID\", flie = true }"]),
        6,
        &["TYPO"],
    );
}

#[test]
fn a_value_that_is_not_a_string_or_table_points_at_its_line() {
    assert_refused_at_line(&keyless_file(&["PORT = 8080"]), 5, &["PORT"]);
}

#[test]
fn a_non_string_context_value_points_at_its_line() {
    assert_refused_at_line(
        &keyless_file(&[
            "OK = \"fine\"",
            "TOKEN = { kms = \"AQID\", context = { app = 1 } }",
        ]),
        6,
        &["TOKEN"],
    );
}

#[test]
fn an_unknown_key_under_kmsenv_points_at_its_line() {
    assert_refused_at_line(
        "[kmsenv]\nversion = 2\nmca = \"typo for mac\"\n\n[env]\nOK = \"fine\"\n",
        3,
        &["mca"],
    );
}

#[test]
fn an_unsupported_version_is_refused() {
    let sandbox = Sandbox::new();
    let file = sandbox.path("kmsenv.toml");
    sandbox.write(&file, "[kmsenv]\nversion = 3\n\n[env]\nOK = \"fine\"\n");

    sandbox
        .kmsenv_without_aws()
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&[&file.display().to_string(), "unsupported format version 3"]);

    sandbox.assert_command_did_not_run();
}

/// Output that cannot be written (a full disk, a closed pipe) is a failure with
/// a message, exit 125 — not a panic.
#[test]
fn a_failed_write_to_stdout_is_an_error_not_a_panic() {
    let sandbox = Sandbox::new();
    let file = sandbox.path("plain.toml");
    sandbox.write(&file, "[kmsenv]\nversion = 2\n\n[env]\nA = \"x\"\n");
    for args in [&["list"][..], &["check"], &["get", "A"], &["export"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsenv"))
            .arg("-f")
            .arg(&file)
            .args(args)
            .stdout(std::fs::File::create("/dev/full").expect("open /dev/full"))
            .output()
            .expect("run kmsenv");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(
            stderr.contains("kmsenv: cannot write to stdout"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
