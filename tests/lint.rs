//! `kmsenv lint`: offline findings with file:line:column, the variable and what
//! to do; never the value. Files are written by hand (lint decrypts nothing)
//! and, where it matters, made for real against moto.

mod support;

use support::*;

const TOKEN: &str = "ghp_CANARYaBcDeFgHiJkLmNoPqRsTuVwXyZ012345";

/// kmsenv with no environment at all: no PATH, no HOME, no AWS anything.
fn bare(sandbox: &Sandbox) -> Kmsenv {
    sandbox.kmsenv_without_aws().env_remove("PATH").env_remove("HOME")
}

#[test]
fn a_plaintext_token_is_reported_with_its_place_and_fix_but_never_its_value() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SEALED", TOKEN.as_bytes());
    sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"info");
    sandbox.set_with(&file, &["--plain"], "GITHUB_TOKEN", TOKEN.as_bytes());
    let text = sandbox.read(&file);
    let line = text
        .lines()
        .position(|l| l.starts_with("GITHUB_TOKEN"))
        .expect("line")
        + 1;

    let out = bare(&sandbox).args(["lint", "kmsenv.toml"]).run().code_is(1);

    let report = out.stdout_text();
    assert!(
        report.starts_with(&format!(
            "kmsenv.toml:{line}:1: GITHUB_TOKEN: plain value ({} characters, stored in clear) looks like a GitHub token [plain-secret]\n",
            TOKEN.len()
        )),
        "{report}"
    );
    assert!(
        report.contains("fix: seal it: `printf %s \"$VALUE\" | kmsenv set GITHUB_TOKEN`"),
        "{report}"
    );
    assert_eq!(
        report.matches("[plain-secret]").count(),
        1,
        "sealed and ordinary values pass: {report}"
    );
    assert!(
        !contains_bytes(&out.all_output(), b"CANARY"),
        "the value must never be printed"
    );
    assert!(
        out.stderr.contains("lint: 1 finding in 1 files checked"),
        "{}",
        out.stderr
    );
}

#[test]
fn allow_plain_on_the_line_silences_that_finding_only() {
    let sandbox = Sandbox::new();
    let file = sandbox.path("kmsenv.toml");
    sandbox.write(
        &file,
        &keyless_file(&[
            &format!("PUBLIC_FIXTURE = \"{TOKEN}\"   # kmsenv:allow-plain (a revoked test token)"),
            &format!("OTHER = \"{TOKEN}\""),
            // A `#` inside the string is part of the value, not a comment.
            &format!("TRICK = \"{TOKEN} # kmsenv:allow-plain\""),
        ]),
    );

    let out = bare(&sandbox).args(["lint", "kmsenv.toml"]).run().code_is(1);

    let report = out.stdout_text();
    assert!(!report.contains("PUBLIC_FIXTURE"), "{report}");
    assert!(report.contains(": OTHER: plain value"), "{report}");
    assert!(report.contains(": TRICK: plain value"), "{report}");
}

#[test]
fn a_clean_file_passes_with_exit_0() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", TOKEN.as_bytes());
    sandbox.set_with(&file, &["--plain"], "HOST", b"db.internal");
    sandbox.set_with(
        &file,
        &["--template"],
        "URL",
        b"postgres://app:${TOKEN}@${HOST}/app",
    );

    let out = bare(&sandbox).args(["lint", "kmsenv.toml"]).run().ok();

    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn weak_protection_is_reported_file_by_file() {
    let sandbox = Sandbox::new();
    let keyless = sandbox.path("kmsenv.mixed.toml");
    sandbox.write(
        &keyless,
        &keyless_file(&["HOST = \"db\"", "TOKEN = { kms = \"AQID\" }"]),
    );
    let legacy = sandbox.path("kmsenv.v1.toml");
    sandbox.write(
        &legacy,
        "[kmsenv]\nversion = 1\nmac = \"AAAA\"\n\n[[kmsenv.keys]]\narn = \"arn:aws:kms:us-east-1:111122223333:key/k\"\ndata_key = \"AQID\"\n\n[env]\nBOUND = { kms = \"AQID\", context = { \"kmsenv:var\" = \"BOUND\" } }\n",
    );
    let no_mac = sandbox.path("kmsenv.nomac.toml");
    sandbox.write(
        &no_mac,
        "[kmsenv]\nversion = 2\n\n[[kmsenv.keys]]\narn = \"arn:aws:kms:us-east-1:111122223333:key/k\"\ndata_key = \"AQID\"\n\n[env]\n",
    );

    let out = bare(&sandbox)
        .args(["lint", "kmsenv.mixed.toml", "kmsenv.v1.toml", "kmsenv.nomac.toml"])
        .run()
        .code_is(1);

    let report = out.stdout_text();
    for want in [
        "kmsenv.mixed.toml:5:1: HOST: the file has no [[kmsenv.keys]] (so no MAC) but mixes plain values like this one with kms values (TOKEN at line 6)",
        "kmsenv.mixed.toml:6:1: TOKEN: this kms value is not bound to its name",
        "fix: re-set it with `kmsenv set --kms TOKEN`",
        "kmsenv.v1.toml:2:1: format version 1",
        "fix: run `kmsenv upgrade`",
        "kmsenv.nomac.toml:1:2: the file has [[kmsenv.keys]] but no `mac`: every reading command will refuse it [no-mac]",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }
}

#[test]
fn with_trust_key_a_file_wrapped_by_another_key_is_a_finding() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let other = sandbox.key();

    bare(&sandbox)
        .args(["lint", "--trust-key", &key, "kmsenv.toml"])
        .run()
        .ok();
    let out = bare(&sandbox)
        .args(["lint", "--trust-key", &other, "kmsenv.toml"])
        .run()
        .code_is(1);
    assert!(
        out.stdout_text().contains("none of its wrapping keys is trusted"),
        "{}",
        out.stdout_text()
    );
    assert!(file.exists());
}

#[test]
fn json_output_carries_every_field_for_tools() {
    let sandbox = Sandbox::new();
    let file = sandbox.path("kmsenv.toml");
    sandbox.write(&file, &keyless_file(&["AWS_KEY_ID = \"AKIAIOSFODNN7CANARY0\""]));

    let out = bare(&sandbox)
        .args(["lint", "--format", "json", "kmsenv.toml", "missing.toml"])
        .run()
        .code_is(125);

    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let f = &json["findings"][0];
    assert_eq!(f["file"], "kmsenv.toml");
    assert_eq!((f["line"].as_u64(), f["column"].as_u64()), (Some(5), Some(1)));
    assert_eq!(f["variable"], "AWS_KEY_ID");
    assert_eq!(f["rule"], "plain-secret");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("an AWS access key id"))
    );
    assert!(
        f["fix"]
            .as_str()
            .is_some_and(|m| m.contains("kmsenv set AWS_KEY_ID"))
    );
    assert_eq!(json["errors"][0]["file"], "missing.toml");
    assert!(!contains_bytes(&out.all_output(), b"CANARY"));
}

#[test]
fn an_unreadable_file_exits_125() {
    let sandbox = Sandbox::new();
    sandbox.write(&sandbox.path("kmsenv.toml"), "[kmsenv\nversion = 2\n");
    bare(&sandbox)
        .args(["lint", "kmsenv.toml"])
        .run()
        .kmsenv_error(&["kmsenv.toml:1:", "invalid TOML"]);
}
