//! The contributor workflow of DESIGN §1: a value encrypted with the stock
//! `aws kms encrypt` and pasted into a file by hand is usable by `kmsenv exec`.

mod support;

use std::path::Path;

use support::*;

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write kmsenv file");
}

#[test]
fn exec_decrypts_a_value_pasted_from_aws_kms_encrypt_without_context() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let secret = b"pasted by a contributor \n with a newline and = sign";
    let blob = aws_kms_encrypt(&sandbox, &key, secret, None);
    let file = sandbox.path("kmsenv.toml");
    write_file(
        &file,
        &format!("[kmsenv]\nversion = 2\n\n[env]\nLEGACY_TOKEN = {{ kms = \"{blob}\" }}\n"),
    );

    let env = sandbox.exec_env(&[&file]);

    assert_eq!(env.get("LEGACY_TOKEN").map(Vec::as_slice), Some(&secret[..]));
}

#[test]
fn exec_decrypts_a_value_pasted_from_aws_kms_encrypt_bound_to_its_name() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let secret = b"partner-key-0042";
    let blob = aws_kms_encrypt(&sandbox, &key, secret, Some("kmsenv:var=PARTNER_KEY"));
    let file = sandbox.path("kmsenv.toml");
    write_file(
        &file,
        &format!(
            "[kmsenv]\nversion = 2\n\n[env]\n\
             PARTNER_KEY = {{ kms = \"{blob}\", key = \"{key}\", context = {{ \"kmsenv:var\" = \"PARTNER_KEY\" }} }}\n"
        ),
    );

    let env = sandbox.exec_env(&[&file]);

    assert_eq!(env.get("PARTNER_KEY").map(Vec::as_slice), Some(&secret[..]));
}

#[test]
fn a_value_pasted_from_aws_kms_encrypt_into_a_file_with_a_mac_needs_no_fix_mac() {
    // Direct kms values are outside the MAC so that someone holding only
    // kms:Encrypt can add one to a file they cannot open.
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "DATABASE_URL", b"postgres://db/billing");
    let blob = aws_kms_encrypt(&sandbox, &key, b"contributed-secret", None);
    let text = sandbox.read(&file);
    sandbox.write(
        &file,
        &insert_in_env(&text, &format!("CONTRIBUTED = {{ kms = \"{blob}\" }}")),
    );

    let env = sandbox.exec_env(&[&file]);

    assert_eq!(
        env.get("CONTRIBUTED").map(Vec::as_slice),
        Some(&b"contributed-secret"[..])
    );
    assert_eq!(
        env.get("DATABASE_URL").map(Vec::as_slice),
        Some(&b"postgres://db/billing"[..])
    );
}

#[test]
fn exec_refuses_a_pasted_value_whose_kmsenv_var_context_names_another_variable() {
    // A ciphertext made for OTHER, pasted under the name STOLEN with its true
    // context, would decrypt at KMS; kmsenv must refuse it because `kmsenv:var`
    // may only equal the entry's own name.
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let blob = aws_kms_encrypt(&sandbox, &key, b"meant-for-other", Some("kmsenv:var=OTHER"));
    let file = sandbox.path("kmsenv.toml");
    write_file(
        &file,
        &format!(
            "[kmsenv]\nversion = 2\n\n[env]\n\
             STOLEN = {{ kms = \"{blob}\", context = {{ \"kmsenv:var\" = \"OTHER\" }} }}\n"
        ),
    );

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["STOLEN", &file.display().to_string()]);
    sandbox.assert_command_did_not_run();
}
