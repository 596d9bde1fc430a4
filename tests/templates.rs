//! Templates (`{ template = "…${NAME}…$$…" }`): composed after decryption from
//! the variables of every file, with the files' precedence; never from the
//! inherited environment; never re-expanded; under the MAC. Against moto.

mod support;

use support::*;

/// A keyed file with `DB_USER` (plain), `DB_PASSWORD` (sealed) and `DB_HOST` (plain).
fn database_file(sandbox: &Sandbox, name: &str, password: &[u8]) -> std::path::PathBuf {
    let (file, _) = sandbox.new_file(name);
    sandbox.set_with(&file, &["--plain"], "DB_USER", b"app");
    sandbox.set(&file, "DB_PASSWORD", password);
    sandbox.set_with(&file, &["--plain"], "DB_HOST", b"db.internal");
    file
}

fn set_template(sandbox: &Sandbox, file: &std::path::Path, name: &str, text: &str) {
    sandbox.set_with(file, &["--template"], name, text.as_bytes());
}

#[test]
fn exec_get_and_export_give_the_resolved_value() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"s3cret");
    set_template(
        &sandbox,
        &file,
        "DATABASE_URL",
        "postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/app?cost=$$5",
    );
    let want = b"postgres://app:s3cret@db.internal/app?cost=$5";

    assert_eq!(
        sandbox.exec_env(&[&file]).get("DATABASE_URL").map(Vec::as_slice),
        Some(&want[..])
    );
    let got = sandbox
        .kmsenv()
        .file(&file)
        .args(["get", "DATABASE_URL"])
        .run()
        .ok();
    assert_eq!(got.stdout, want);
    let json = sandbox
        .kmsenv()
        .file(&file)
        .args(["export", "--format", "json"])
        .run()
        .ok();
    assert!(
        json.stdout_text()
            .contains(r#""DATABASE_URL":"postgres://app:s3cret@db.internal/app?cost=$5""#)
    );
    // The file holds the template, not the password.
    assert!(!sandbox.read(&file).contains("s3cret"));
}

#[test]
fn a_decrypted_value_holding_dollar_syntax_is_never_re_expanded() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"p$${DB_HOST}$DB_USER${x");
    set_template(&sandbox, &file, "URL", "${DB_PASSWORD}|${DB_HOST}");

    let env = sandbox.exec_env(&[&file]);

    assert_eq!(env["URL"], b"p$${DB_HOST}$DB_USER${x|db.internal");
}

#[test]
fn references_resolve_across_files_with_the_last_file_winning() {
    let sandbox = Sandbox::new();
    let base = database_file(&sandbox, "base.toml", b"base-pw");
    set_template(
        &sandbox,
        &base,
        "DATABASE_URL",
        "${DB_USER}:${DB_PASSWORD}@${DB_HOST}",
    );
    let (prod, _) = sandbox.new_file("prod.toml");
    sandbox.set(&prod, "DB_PASSWORD", b"prod-pw");
    sandbox.set_with(&prod, &["--plain"], "DB_HOST", b"prod.internal");

    let env = sandbox.exec_env(&[&base, &prod]);
    assert_eq!(env["DATABASE_URL"], b"app:prod-pw@prod.internal");

    // `get` of the template opens every file it needs, with the same precedence.
    let got = sandbox
        .kmsenv()
        .file(&base)
        .file(&prod)
        .args(["get", "DATABASE_URL"])
        .run()
        .ok();
    assert_eq!(got.stdout, b"app:prod-pw@prod.internal");

    // exec --only the template: what it uses is opened, but not set.
    let only = sandbox
        .kmsenv()
        .file(&base)
        .file(&prod)
        .args(["exec", "--pristine", "--only", "DATABASE_URL", "--", "env", "-0"])
        .run()
        .ok()
        .env0();
    assert_eq!(only.keys().collect::<Vec<_>>(), ["DATABASE_URL"]);
    assert_eq!(only["DATABASE_URL"], b"app:prod-pw@prod.internal");
}

#[test]
fn an_unknown_name_fails_closed_naming_the_variable_and_never_reads_the_inherited_environment() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"pw");
    set_template(
        &sandbox,
        &file,
        "LEAK",
        "https://${AWS_SECRET_ACCESS_KEY}@x.example/",
    );

    // AWS_SECRET_ACCESS_KEY is in kmsenv's own environment (Sandbox::kmsenv sets it).
    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["LEAK: the template uses ${AWS_SECRET_ACCESS_KEY}, which no file defines"]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn a_cycle_fails_closed_naming_the_variables() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"pw");
    set_template(&sandbox, &file, "A", "${B}");
    set_template(&sandbox, &file, "B", "x${C}");
    set_template(&sandbox, &file, "C", "${A}");

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["templates form a cycle: A → B → C → A"]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn a_reference_to_itself_or_bad_syntax_is_refused_with_its_line() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--template", "SELF"])
        .stdin("a${SELF}")
        .run()
        .kmsenv_error(&["SELF: the template uses ${SELF}, itself"]);
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--template", "HOME_DIR"])
        .stdin("$HOME/x")
        .run()
        .kmsenv_error(&["HOME_DIR: `$` at character 1 must start `${NAME}`"]);

    // Written by hand: the parser names the line and column.
    let text = keyless_file(&["SELF = { template = \"${SELF}\" }"]);
    let hand = sandbox.path("hand.toml");
    sandbox.write(&hand, &text);
    sandbox
        .kmsenv_without_aws()
        .file(&hand)
        .args(["list"])
        .run()
        .kmsenv_error(&["hand.toml:", "SELF: the template uses ${SELF}, itself"]);
}

#[test]
fn tampering_with_the_template_text_fails_the_mac() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"pw");
    set_template(
        &sandbox,
        &file,
        "DATABASE_URL",
        "postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/app",
    );
    sandbox.assert_command_runs(&[&file]);

    // A writer without the data key points the password at their own host.
    let text = sandbox.read(&file);
    sandbox.write(
        &file,
        &replace_once(&text, "@${DB_HOST}/app", "@evil.example/app"),
    );

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["modified outside kmsenv"]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn a_plain_value_turned_into_a_template_fails_the_mac() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"pw");
    sandbox.set_with(&file, &["--plain"], "SENTRY_DSN", b"https://key@sentry.example/1");
    let text = sandbox.read(&file);
    let line = entry_line(&text, "SENTRY_DSN").to_string();
    let forged = "SENTRY_DSN = { template = \"https://${DB_PASSWORD}@evil.example/1\" }";
    sandbox.write(&file, &text.replace(&line, forged));

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["modified outside kmsenv"]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn a_template_in_a_file_without_keys_may_not_copy_a_secret() {
    let sandbox = Sandbox::new();
    let secrets = database_file(&sandbox, "secrets.toml", b"CANARY-pw");
    // A configuration file without keys: anyone who can write it could add this.
    let config = sandbox.path("config.toml");
    sandbox.write(
        &config,
        &keyless_file(&[
            "HOST_URL = { template = \"https://${DB_HOST}/\" }",
            "SENTRY_DSN = { template = \"https://${DB_PASSWORD}@evil.example/1\" }",
        ]),
    );

    let out = sandbox.exec_marker(&[&secrets, &config]).kmsenv_error(&[
        "SENTRY_DSN: the template uses ${DB_PASSWORD}, a secret, but this file has no [[kmsenv.keys]]",
    ]);
    assert!(!contains_bytes(&out.all_output(), b"CANARY-pw"));
    sandbox.assert_command_did_not_run();

    // Using plain values is what such a file is for.
    sandbox.write(
        &config,
        &keyless_file(&["HOST_URL = { template = \"https://${DB_HOST}/\" }"]),
    );
    assert_eq!(
        sandbox.exec_env(&[&secrets, &config])["HOST_URL"],
        b"https://db.internal/"
    );
}

#[test]
fn a_keyless_file_never_mixes_templates_and_kms_values() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let blob = encrypt(REGION, &key, b"tok", &[("kmsenv:var", "TOKEN")]);
    let file = sandbox.path("mixed.toml");
    sandbox.write(
        &file,
        &keyless_file(&[
            &format!("TOKEN = {{ kms = \"{blob}\", context = {{ \"kmsenv:var\" = \"TOKEN\" }} }}"),
            "URL = { template = \"https://${TOKEN}@evil.example/\" }",
        ]),
    );

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["has no [[kmsenv.keys]] (so no MAC) but holds both plain values (URL"]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn list_shows_what_a_template_uses_and_never_a_value() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"CANARY-list");
    set_template(
        &sandbox,
        &file,
        "DATABASE_URL",
        "postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/app",
    );

    let out = sandbox.kmsenv_without_aws().file(&file).arg("list").run().ok();

    let text = out.stdout_text();
    let line = text
        .lines()
        .find(|l| l.contains("DATABASE_URL"))
        .unwrap_or_default();
    assert!(
        line.contains("template  uses DB_USER DB_PASSWORD DB_HOST"),
        "{text}"
    );
    assert!(!text.contains("CANARY-list"));
}

#[test]
fn a_template_can_be_delivered_as_a_file() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"pw");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--template", "--as-file", "PGPASSFILE"])
        .stdin("${DB_HOST}:5432:app:${DB_USER}:${DB_PASSWORD}\n")
        .run()
        .ok();

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "case \"$PGPASSFILE\" in /proc/self/fd/*) cat \"$PGPASSFILE\";; esac",
        ])
        .run()
        .ok();

    assert_eq!(out.stdout, b"db.internal:5432:app:app:pw\n");
}

#[test]
fn no_override_refuses_a_template_whose_reference_the_inherited_environment_keeps() {
    let sandbox = Sandbox::new();
    let file = database_file(&sandbox, "kmsenv.toml", b"pw");
    set_template(&sandbox, &file, "URL", "https://${DB_HOST}/");

    sandbox
        .kmsenv()
        .file(&file)
        .env("DB_HOST", "inherited.example")
        .args(["exec", "--no-override", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&["URL: the template uses ${DB_HOST}, which is inherited and kept by --no-override"]);
    sandbox.assert_command_did_not_run();

    // Without --no-override the file's DB_HOST wins for both.
    let env = sandbox
        .kmsenv()
        .file(&file)
        .env("DB_HOST", "inherited.example")
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();
    assert_eq!(env["URL"], b"https://db.internal/");
    assert_eq!(env["DB_HOST"], b"db.internal");
}

/// A keyless file (anyone may write it) of templates using templates, deeper than
/// the resolver goes: refused with 125, not a stack overflow.
#[test]
fn templates_nested_too_deep_fail_closed_instead_of_overflowing_the_stack() {
    let sandbox = Sandbox::new();
    let file = sandbox.path("deep.toml");
    // Each uses the next, so resolving the first goes down the whole chain.
    let mut text = String::from("[kmsenv]\nversion = 2\n\n[env]\n");
    for i in 0..5000 {
        text += &format!("T{i} = {{ template = \"${{T{}}}\" }}\n", i + 1);
    }
    text += "T5000 = \"x\"\n";
    sandbox.write(&file, &text);
    sandbox
        .kmsenv_without_aws()
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&["more than 64 deep"]);
    sandbox.assert_command_did_not_run();
}

/// Many templates each using one large value: the total is capped, so the file
/// cannot make kmsenv take gigabytes.
#[test]
fn templates_that_together_resolve_to_too_much_fail_closed() {
    let sandbox = Sandbox::new();
    let file = sandbox.path("wide.toml");
    let big = "b".repeat(1 << 20);
    let mut text = format!("[kmsenv]\nversion = 2\n\n[env]\nBIG = \"{big}\"\n");
    let sixteen = "${BIG}".repeat(15);
    for i in 0..6 {
        text += &format!("W{i} = {{ template = \"{sixteen}\" }}\n");
    }
    sandbox.write(&file, &text);
    sandbox
        .kmsenv_without_aws()
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&["resolve to more than", "together"]);
    sandbox.assert_command_did_not_run();
}
