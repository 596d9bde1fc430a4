//! Files edited behind kmsenv's back: every case must fail closed (exit 125, the
//! command not run) with a message that says what is wrong and where.
//!
//! Each test first proves that the untouched file runs the marker command, then
//! edits the TOML text by plain string replacement, then proves it no longer does.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// A file with two sealed values and one plain value, proved to run the command.
struct Victim {
    sandbox: Sandbox,
    file: PathBuf,
    key: String,
}

impl Victim {
    fn new() -> Victim {
        let sandbox = Sandbox::new();
        let (file, key) = sandbox.file_with(
            "kmsenv.toml",
            &[
                sealed("ALPHA", b"alpha-secret"),
                sealed("BRAVO", b"bravo-secret"),
                plain("DB_HOST", b"db.internal"),
            ],
        );
        sandbox.assert_command_runs(&[&file]);
        Victim { sandbox, file, key }
    }

    fn text(&self) -> String {
        self.sandbox.read(&self.file)
    }

    fn edit(&self, edit: impl FnOnce(&str) -> String) {
        let text = self.text();
        let edited = edit(&text);
        assert_ne!(edited, text, "the edit changed nothing");
        self.sandbox.write(&self.file, &edited);
    }

    fn path(&self) -> String {
        self.file.display().to_string()
    }

    /// `exec` must fail 125 with every needle in stderr, and not run the command.
    #[track_caller]
    fn assert_exec_fails_closed(&self, needles: &[&str]) -> Output {
        let out = self.sandbox.exec_marker(&[&self.file]).kmsenv_error(needles);
        self.sandbox.assert_command_did_not_run();
        out
    }
}

#[test]
fn exec_fails_closed_when_two_sealed_values_are_swapped() {
    let victim = Victim::new();
    let text = victim.text();
    let (alpha, bravo) = (sealed_of(&text, "ALPHA"), sealed_of(&text, "BRAVO"));

    victim.edit(|text| swap(text, &alpha, &bravo));

    victim.assert_exec_fails_closed(&[&victim.path()]);
}

#[test]
fn check_fix_mac_refuses_to_bless_two_swapped_sealed_values() {
    // The MAC would catch the swap; --fix-mac recomputes the MAC, so only the
    // binding of each sealed value to its name can catch it here.
    let victim = Victim::new();
    let text = victim.text();
    let (alpha, bravo) = (sealed_of(&text, "ALPHA"), sealed_of(&text, "BRAVO"));
    victim.edit(|text| swap(text, &alpha, &bravo));
    let swapped = victim.text();

    let out = victim
        .sandbox
        .kmsenv()
        .file(&victim.file)
        .args(["check", "--fix-mac"])
        .run();

    assert_ne!(
        out.code(),
        Some(0),
        "--fix-mac accepted swapped values:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("ALPHA") || out.stderr.contains("BRAVO"),
        "the error should name a swapped variable:\n{}",
        out.stderr
    );
    assert_eq!(victim.text(), swapped, "the file must not be rewritten");
    victim.assert_exec_fails_closed(&[]);
}

#[test]
fn exec_fails_closed_when_a_plain_value_is_edited_by_hand() {
    let victim = Victim::new();

    victim.edit(|text| replace_once(text, "\"db.internal\"", "\"evil.example\""));

    victim.assert_exec_fails_closed(&["modified outside kmsenv", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_an_entry_is_deleted_by_hand() {
    let victim = Victim::new();

    victim.edit(|text| remove_entry(text, "BRAVO"));

    victim.assert_exec_fails_closed(&["modified outside kmsenv", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_a_plain_entry_is_added_by_hand() {
    let victim = Victim::new();

    victim.edit(|text| insert_in_env(text, "LD_PRELOAD = \"/tmp/evil.so\""));

    victim.assert_exec_fails_closed(&["modified outside kmsenv", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_a_sealed_value_is_turned_into_plain() {
    let victim = Victim::new();
    let line = entry_line(&victim.text(), "ALPHA").to_string();

    victim.edit(|text| replace_once(text, &line, "ALPHA = \"attacker-chosen\""));

    victim.assert_exec_fails_closed(&["modified outside kmsenv", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_the_mac_line_is_deleted() {
    let victim = Victim::new();
    let text = victim.text();
    let mac_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("mac"))
        .unwrap_or_else(|| panic!("no mac line in:\n{text}"))
        .to_string();

    victim.edit(|text| replace_once(text, &format!("{mac_line}\n"), ""));

    victim.assert_exec_fails_closed(&[&victim.path()]);
}

#[test]
fn exec_fails_closed_when_the_data_key_is_pasted_as_a_kms_value_without_context() {
    // Outside the MAC, so KMS itself must refuse: the data key was wrapped under
    // the reserved data-key context, and this value asks for none.
    let victim = Victim::new();
    let data_key = data_key_of(&victim.text());

    victim.edit(|text| insert_in_env(text, &format!("STOLEN_KEY = {{ kms = \"{data_key}\" }}")));

    victim.assert_exec_fails_closed(&["STOLEN_KEY", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_the_data_key_is_pasted_as_a_kms_value_with_the_data_key_context() {
    // This one KMS would decrypt: kmsenv must refuse the reserved context key itself.
    let victim = Victim::new();
    let data_key = data_key_of(&victim.text());

    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "STOLEN_KEY = {{ kms = \"{data_key}\", context = {{ \"kmsenv:purpose\" = \"data-key\" }} }}"
            ),
        )
    });

    let out = victim.assert_exec_fails_closed(&["STOLEN_KEY", &victim.path()]);
    assert!(out.stdout.is_empty());
}

#[test]
fn get_refuses_a_kms_value_with_a_reserved_context_key() {
    let victim = Victim::new();
    let data_key = data_key_of(&victim.text());
    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "STOLEN_KEY = {{ kms = \"{data_key}\", context = {{ \"kmsenv:purpose\" = \"data-key\" }} }}"
            ),
        )
    });

    let out = victim
        .sandbox
        .kmsenv()
        .file(&victim.file)
        .args(["get", "STOLEN_KEY"])
        .run()
        .kmsenv_error(&["STOLEN_KEY"]);

    assert!(out.stdout.is_empty(), "get printed the data key");
}

#[test]
fn exec_fails_closed_when_a_kms_value_was_encrypted_under_another_context() {
    let victim = Victim::new();
    let blob = encrypt(
        REGION,
        &victim.key,
        b"partner",
        &[("kmsenv:var", "PARTNER_KEY"), ("app", "other")],
    );
    let key = victim.key.clone();

    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "PARTNER_KEY = {{ kms = \"{blob}\", key = \"{key}\", context = {{ \"kmsenv:var\" = \"PARTNER_KEY\" }} }}"
            ),
        )
    });

    victim.assert_exec_fails_closed(&[
        "PARTNER_KEY",
        "InvalidCiphertextException",
        &victim.key,
        &victim.path(),
    ]);
}

#[test]
fn exec_fails_closed_when_two_kms_values_are_swapped() {
    let victim = Victim::new();
    victim
        .sandbox
        .set_with(&victim.file, &["--kms"], "KMS_ONE", b"one");
    victim
        .sandbox
        .set_with(&victim.file, &["--kms"], "KMS_TWO", b"two");
    victim.sandbox.assert_command_runs(&[&victim.file]);
    let text = victim.text();
    let (one, two) = (kms_of(&text, "KMS_ONE"), kms_of(&text, "KMS_TWO"));

    victim.edit(|text| swap(text, &one, &two));

    let out = victim.assert_exec_fails_closed(&[&victim.path()]);
    assert!(
        out.stderr.contains("KMS_ONE") || out.stderr.contains("KMS_TWO"),
        "the error should name a swapped variable:\n{}",
        out.stderr
    );
}

#[test]
fn exec_fails_closed_when_a_sealed_value_is_copied_from_another_file() {
    let victim = Victim::new();
    let (other, _) = victim.sandbox.new_file("other.toml");
    victim.sandbox.set(&other, "ALPHA", b"other-file-alpha");
    let foreign = sealed_of(&victim.sandbox.read(&other), "ALPHA");
    let own = sealed_of(&victim.text(), "ALPHA");

    victim.edit(|text| replace_once(text, &own, &foreign));

    victim.assert_exec_fails_closed(&[&victim.path()]);
}

#[test]
fn check_fix_mac_refuses_a_sealed_value_copied_from_another_file() {
    let victim = Victim::new();
    let (other, _) = victim.sandbox.new_file("other.toml");
    victim.sandbox.set(&other, "ALPHA", b"other-file-alpha");
    let foreign = sealed_of(&victim.sandbox.read(&other), "ALPHA");
    let own = sealed_of(&victim.text(), "ALPHA");
    victim.edit(|text| replace_once(text, &own, &foreign));
    let edited = victim.text();

    victim
        .sandbox
        .kmsenv()
        .file(&victim.file)
        .args(["check", "--fix-mac"])
        .run()
        .kmsenv_error(&["ALPHA"]);

    assert_eq!(victim.text(), edited, "the file must not be rewritten");
}

#[test]
fn exec_fails_closed_when_the_file_context_is_edited() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let file = sandbox.path("kmsenv.toml");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["init", "--key", &key, "--context", "app=billing"])
        .run()
        .ok();
    sandbox.set(&file, "TOKEN", b"token");
    sandbox.assert_command_runs(&[&file]);

    let text = sandbox.read(&file);
    sandbox.write(&file, &replace_once(&text, "\"billing\"", "\"payroll\""));

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&[&file.display().to_string()]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn check_fails_on_a_tampered_file() {
    let victim = Victim::new();
    victim.edit(|text| replace_once(text, "\"db.internal\"", "\"evil.example\""));

    victim
        .sandbox
        .kmsenv()
        .file(&victim.file)
        .arg("check")
        .run()
        .kmsenv_error(&["modified outside kmsenv", &victim.path()]);
}

#[test]
fn get_refuses_an_untouched_value_when_another_entry_was_edited() {
    let victim = Victim::new();
    victim.edit(|text| replace_once(text, "\"db.internal\"", "\"evil.example\""));

    let out = victim
        .sandbox
        .kmsenv()
        .file(&victim.file)
        .args(["get", "ALPHA"])
        .run()
        .kmsenv_error(&["modified outside kmsenv"]);

    assert!(out.stdout.is_empty());
}

/// A write command on a tampered file must not re-MAC (and so bless) the edit.
fn assert_write_refuses_tampered_file(run: impl FnOnce(&Sandbox, &Path) -> Output) {
    let victim = Victim::new();
    victim.edit(|text| replace_once(text, "\"db.internal\"", "\"evil.example\""));
    let tampered = victim.text();

    run(&victim.sandbox, &victim.file).kmsenv_error(&["modified outside kmsenv"]);

    assert_eq!(victim.text(), tampered, "the tampered file must not be rewritten");
    victim.assert_exec_fails_closed(&["modified outside kmsenv"]);
}

#[test]
fn set_refuses_to_rewrite_the_mac_of_a_tampered_file() {
    assert_write_refuses_tampered_file(|sandbox, file| {
        sandbox
            .kmsenv()
            .file(file)
            .args(["set", "NEW_ONE"])
            .stdin(b"new")
            .run()
    });
}

#[test]
fn unset_refuses_to_rewrite_the_mac_of_a_tampered_file() {
    assert_write_refuses_tampered_file(|sandbox, file| {
        sandbox.kmsenv().file(file).args(["unset", "ALPHA"]).run()
    });
}

#[test]
fn import_refuses_to_rewrite_the_mac_of_a_tampered_file() {
    assert_write_refuses_tampered_file(|sandbox, file| {
        sandbox
            .kmsenv()
            .file(file)
            .arg("import")
            .stdin(b"NEW_ONE=new\n")
            .run()
    });
}

#[test]
fn a_tampered_second_file_stops_the_first_from_being_used_too() {
    let sandbox = Sandbox::new();
    let (base, _) = sandbox.new_file("base.toml");
    let (prod, _) = sandbox.new_file("prod.toml");
    sandbox.set(&base, "TOKEN", b"base-token");
    sandbox.set_with(&prod, &["--plain"], "DB_HOST", b"db.internal");
    sandbox.assert_command_runs(&[&base, &prod]);

    let text = sandbox.read(&prod);
    sandbox.write(&prod, &replace_once(&text, "\"db.internal\"", "\"evil.example\""));

    sandbox
        .exec_marker(&[&base, &prod])
        .kmsenv_error(&["modified outside kmsenv", &prod.display().to_string()]);
    sandbox.assert_command_did_not_run();
}
