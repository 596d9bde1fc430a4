//! Round trips through the file: init, set, get, list, unset, import, export and
//! check, and what every write must preserve (user comments, untouched values).

mod support;

use std::collections::BTreeMap;

use support::*;

const HEADER_COMMENT: &str = "# owned by the billing team";
const ENV_COMMENT: &str = "# database settings: ask #billing before rotating";

#[test]
fn init_creates_a_file_that_check_accepts() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");

    let text = sandbox.read(&file);
    assert!(text.contains(&key), "the file should name its key:\n{text}");
    assert!(
        text.contains("data_key"),
        "the file should hold a data key:\n{text}"
    );
    sandbox.kmsenv().file(&file).arg("check").run().ok();
}

#[test]
fn init_with_context_records_it_in_the_file() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let file = sandbox.path("kmsenv.toml");
    sandbox
        .kmsenv()
        .file(&file)
        .args([
            "init",
            "--key",
            &key,
            "--context",
            "app=billing",
            "--context",
            "stage=prod",
        ])
        .run()
        .ok();
    sandbox.set(&file, "TOKEN", b"t0ken");

    let text = sandbox.read(&file);
    assert!(text.contains("billing") && text.contains("prod"), "{text}");
    assert_eq!(sandbox.exec_env(&[&file])["TOKEN"], b"t0ken");
}

#[test]
fn init_refuses_to_overwrite_an_existing_kmsenv_file() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"keep me");
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["init", "--key", &key])
        .run()
        .kmsenv_error(&[&file.display().to_string()]);

    assert_eq!(sandbox.read(&file), before);
    assert_eq!(sandbox.exec_env(&[&file])["TOKEN"], b"keep me");
}

#[test]
fn init_refuses_to_overwrite_any_existing_file() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let file = sandbox.path("notes.toml");
    sandbox.write(&file, "not a kmsenv file\n");

    sandbox
        .kmsenv()
        .file(&file)
        .args(["init", "--key", &key])
        .run()
        .kmsenv_error(&[&file.display().to_string()]);

    assert_eq!(sandbox.read(&file), "not a kmsenv file\n");
}

#[test]
fn set_then_get_returns_exactly_the_bytes_without_a_trailing_newline() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "DATABASE_URL", b"postgres://u:p@db/billing");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["get", "DATABASE_URL"])
        .run()
        .ok();

    assert_eq!(out.stdout, b"postgres://u:p@db/billing");
}

#[test]
fn set_keeps_a_trailing_newline_from_stdin() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "ECHOED", b"value\n");

    let out = sandbox.kmsenv().file(&file).args(["get", "ECHOED"]).run().ok();

    assert_eq!(out.stdout, b"value\n");
}

#[test]
fn set_seals_the_value_so_the_file_does_not_hold_it_in_clear() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "API_TOKEN", b"tok-5d1e-clear-text");

    let text = sandbox.read(&file);
    assert!(!text.contains("tok-5d1e-clear-text"), "{text}");
    assert!(!sealed_of(&text, "API_TOKEN").is_empty());
}

#[test]
fn set_refuses_empty_stdin_naming_the_variable() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "EMPTY_ONE"])
        .stdin(b"")
        .run()
        .kmsenv_error(&["EMPTY_ONE"]);

    assert_eq!(sandbox.read(&file), before);
}

#[test]
fn set_plain_accepts_name_equals_value_and_stores_it_in_clear() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");

    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--plain", "LOG_LEVEL=info"])
        .run()
        .ok();

    let text = sandbox.read(&file);
    assert_eq!(quoted_field_of_plain(&text, "LOG_LEVEL"), "info");
    assert_eq!(sandbox.exec_env(&[&file])["LOG_LEVEL"], b"info");
}

/// The clear text of a plain entry `NAME = "…"`.
fn quoted_field_of_plain(text: &str, name: &str) -> String {
    let line = entry_line(text, name);
    let value = line.split_once('=').expect("=").1.trim();
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
    value
        .unwrap_or_else(|| panic!("{name} is not a plain string: {line}"))
        .to_string()
}

#[test]
fn set_plain_reads_stdin_too() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");

    sandbox.set_with(&file, &["--plain"], "REGION_NAME", b"eu-west-1");

    assert_eq!(
        quoted_field_of_plain(&sandbox.read(&file), "REGION_NAME"),
        "eu-west-1"
    );
    assert_eq!(sandbox.exec_env(&[&file])["REGION_NAME"], b"eu-west-1");
}

#[test]
fn set_from_file_reads_the_value_from_that_path() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let pem = b"-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n";
    let source = sandbox.path("key.pem");
    std::fs::write(&source, pem).unwrap();

    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "TLS_KEY", "--from-file"])
        .arg(&source)
        .run()
        .ok();

    let out = sandbox.kmsenv().file(&file).args(["get", "TLS_KEY"]).run().ok();
    assert_eq!(out.stdout, pem);
    assert!(!sandbox.read(&file).contains("MIIB"));
}

#[test]
fn set_kms_writes_a_direct_kms_value_bound_to_its_name_and_the_file_context() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let file = sandbox.path("kmsenv.toml");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["init", "--key", &key, "--context", "app=billing"])
        .run()
        .ok();

    sandbox.set_with(&file, &["--kms"], "PARTNER_KEY", b"partner-secret");

    let text = sandbox.read(&file);
    let line = entry_line(&text, "PARTNER_KEY");
    assert_eq!(quoted_field(line, "key"), key, "{line}");
    assert!(line.contains("\"kmsenv:var\" = \"PARTNER_KEY\""), "{line}");
    // It is a real KMS ciphertext under exactly that context (what `aws kms decrypt`
    // would need), not something only kmsenv can read.
    let blob = kms_of(&text, "PARTNER_KEY");
    let plaintext = moto()
        .decrypt(
            REGION,
            &blob,
            &[("app", "billing"), ("kmsenv:var", "PARTNER_KEY")],
        )
        .expect("decrypt with the file context plus kmsenv:var");
    assert_eq!(plaintext, b"partner-secret");
    assert_eq!(sandbox.exec_env(&[&file])["PARTNER_KEY"], b"partner-secret");
}

#[test]
fn set_resealing_one_value_leaves_the_other_entries_text_unchanged() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "ALPHA", b"alpha");
    sandbox.set(&file, "BRAVO", b"bravo");
    sandbox.set(&file, "CHARLIE", b"charlie");
    sandbox.set_with(&file, &["--plain"], "DELTA", b"delta");
    let before = sandbox.read(&file);

    sandbox.set(&file, "BRAVO", b"bravo, rotated");

    let after = sandbox.read(&file);
    for name in ["ALPHA", "CHARLIE", "DELTA"] {
        assert_eq!(
            entry_line(&before, name),
            entry_line(&after, name),
            "{name} changed"
        );
    }
    assert_ne!(sealed_of(&before, "BRAVO"), sealed_of(&after, "BRAVO"));
    assert_eq!(
        data_key_of(&before),
        data_key_of(&after),
        "the data key must not change"
    );
    assert_eq!(sandbox.exec_env(&[&file])["BRAVO"], b"bravo, rotated");
}

#[test]
fn set_overwrites_an_existing_value() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"first");
    sandbox.set(&file, "TOKEN", b"second");

    let text = sandbox.read(&file);
    let entries = text
        .lines()
        .filter(|l| l.trim_start().starts_with("TOKEN "))
        .count();
    assert_eq!(entries, 1, "one entry only:\n{text}");
    let out = sandbox.kmsenv().file(&file).args(["get", "TOKEN"]).run().ok();
    assert_eq!(out.stdout, b"second");
}

#[test]
fn get_of_an_unknown_name_fails_naming_it() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "KNOWN", b"known");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["get", "NOT_THERE"])
        .run()
        .kmsenv_error(&["NOT_THERE"]);
    assert!(out.stdout.is_empty());
}

#[test]
fn unset_removes_the_named_entries_and_keeps_the_file_valid() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "ALPHA", b"alpha");
    sandbox.set(&file, "BRAVO", b"bravo");
    sandbox.set_with(&file, &["--plain"], "CHARLIE", b"charlie");
    sandbox.set_with(&file, &["--kms"], "DELTA", b"delta");

    sandbox
        .kmsenv()
        .file(&file)
        .args(["unset", "ALPHA", "CHARLIE", "DELTA"])
        .run()
        .ok();

    let text = sandbox.read(&file);
    for gone in ["ALPHA", "CHARLIE", "DELTA"] {
        assert!(!has_entry(&text, gone), "{gone} still in:\n{text}");
    }
    sandbox.kmsenv().file(&file).arg("check").run().ok();
    let env = sandbox.exec_env(&[&file]);
    assert_eq!(env["BRAVO"], b"bravo");
    assert!(!env.contains_key("ALPHA") && !env.contains_key("CHARLIE") && !env.contains_key("DELTA"));
}

#[test]
fn list_shows_names_kinds_and_keys_but_no_values() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SEALED_ONE", b"sealed-value-91c2");
    sandbox.set_with(&file, &["--plain"], "PLAIN_ONE", b"plain-value-4b7e");
    sandbox.set_with(&file, &["--kms"], "KMS_ONE", b"kms-value-0d3f");

    let out = sandbox.kmsenv().file(&file).arg("list").run().ok();

    let text = out.stdout_text();
    for name in ["SEALED_ONE", "PLAIN_ONE", "KMS_ONE"] {
        assert!(text.contains(name), "list should name {name}:\n{text}");
    }
    let lower = text.to_lowercase();
    for kind in ["sealed", "plain", "kms"] {
        assert!(lower.contains(kind), "list should show kind {kind}:\n{text}");
    }
    assert!(text.contains(&key), "list should show the key:\n{text}");
    for value in ["sealed-value-91c2", "plain-value-4b7e", "kms-value-0d3f"] {
        assert!(
            !contains_bytes(&out.all_output(), value.as_bytes()),
            "list printed {value}"
        );
    }
}

#[test]
fn check_prints_each_name_with_ok() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "ALPHA", b"alpha");
    sandbox.set_with(&file, &["--plain"], "BRAVO", b"bravo");
    sandbox.set_with(&file, &["--kms"], "CHARLIE", b"charlie");

    let out = sandbox.kmsenv().file(&file).arg("check").run().ok();

    let text = format!("{}{}", out.stdout_text(), out.stderr);
    for name in ["ALPHA", "BRAVO", "CHARLIE"] {
        assert!(
            text.lines()
                .any(|line| line.contains(name) && line.contains("ok")),
            "check should print `{name} … ok`:\n{text}"
        );
    }
}

#[test]
fn check_fix_mac_accepts_a_hand_merge_and_check_passes_afterwards() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");
    sandbox.set_with(&file, &["--plain"], "DB_HOST", b"db-1.internal");
    // A hand merge changes a plain value: the MAC no longer matches.
    let merged = replace_once(&sandbox.read(&file), "db-1.internal", "db-2.internal");
    sandbox.write(&file, &merged);
    sandbox
        .kmsenv()
        .file(&file)
        .arg("check")
        .run()
        .kmsenv_error(&["modified outside kmsenv"]);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["check", "--fix-mac"])
        .run()
        .ok();

    sandbox.kmsenv().file(&file).arg("check").run().ok();
    let env = sandbox.exec_env(&[&file]);
    assert_eq!(env["DB_HOST"], b"db-2.internal");
    assert_eq!(env["TOKEN"], b"token");
}

#[test]
fn user_comments_survive_every_write() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "KEEP", b"kept");
    let text = sandbox.read(&file);
    let keep_line = entry_line(&text, "KEEP").to_string();
    let text = format!("{HEADER_COMMENT}\n{text}");
    let text = replace_once(&text, &keep_line, &format!("{ENV_COMMENT}\n{keep_line}"));
    sandbox.write(&file, &text);
    let assert_comments = |after: &str| {
        let text = sandbox.read(&file);
        assert!(
            text.contains(HEADER_COMMENT),
            "header comment lost after {after}:\n{text}"
        );
        let comment_at = text
            .find(ENV_COMMENT)
            .unwrap_or_else(|| panic!("[env] comment lost after {after}:\n{text}"));
        let keep_at = text.find(entry_line(&text, "KEEP")).unwrap();
        assert!(comment_at < keep_at, "[env] comment moved after {after}:\n{text}");
    };
    sandbox.kmsenv().file(&file).arg("check").run().ok();

    sandbox.set(&file, "ALPHA", b"alpha");
    assert_comments("set");
    sandbox.set(&file, "ALPHA", b"alpha, resealed");
    assert_comments("set of an existing name");
    sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"info");
    assert_comments("set --plain");
    sandbox.set_with(&file, &["--kms"], "PARTNER", b"partner");
    assert_comments("set --kms");
    sandbox.set_with(&file, &["--as-file"], "TLS_KEY", b"pem");
    assert_comments("set --as-file");
    sandbox
        .kmsenv()
        .file(&file)
        .arg("import")
        .stdin(b"IMPORTED=yes\n")
        .run()
        .ok();
    assert_comments("import");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["unset", "ALPHA", "LOG_LEVEL"])
        .run()
        .ok();
    assert_comments("unset");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["check", "--fix-mac"])
        .run()
        .ok();
    assert_comments("check --fix-mac");

    sandbox.kmsenv().file(&file).arg("check").run().ok();
    let env = sandbox.exec_env(&[&file]);
    assert_eq!(env["KEEP"], b"kept");
    assert_eq!(env["IMPORTED"], b"yes");
}

const DOTENV: &str = r#"# exported from the old deploy script

export EXPORTED=from-export-prefix
SINGLE='single $HOME \n "stays" literal'
DOUBLE="double \"quoted\"\nsecond line"
UNQUOTED=plain value with = sign
URL=postgres://u:p@db:5432/billing?sslmode=require
# a comment between entries
LAST=last
"#;

fn dotenv_expected() -> BTreeMap<&'static str, &'static [u8]> {
    BTreeMap::from([
        ("EXPORTED", &b"from-export-prefix"[..]),
        ("SINGLE", &br#"single $HOME \n "stays" literal"#[..]),
        ("DOUBLE", &b"double \"quoted\"\nsecond line"[..]),
        ("UNQUOTED", &b"plain value with = sign"[..]),
        ("URL", &b"postgres://u:p@db:5432/billing?sslmode=require"[..]),
        ("LAST", &b"last"[..]),
    ])
}

#[test]
fn import_seals_every_entry_of_a_dotenv_file_from_stdin() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");

    sandbox
        .kmsenv()
        .file(&file)
        .arg("import")
        .stdin(DOTENV)
        .run()
        .ok();

    let text = sandbox.read(&file);
    let env = sandbox.exec_env(&[&file]);
    for (name, value) in dotenv_expected() {
        assert_eq!(env.get(name).map(Vec::as_slice), Some(value), "{name}");
        assert!(!sealed_of(&text, name).is_empty(), "{name} should be sealed");
    }
    assert!(
        !has_entry(&text, "export"),
        "the export prefix is not a name:\n{text}"
    );
    assert!(
        !text.contains("from-export-prefix") && !text.contains("sslmode"),
        "{text}"
    );
}

#[test]
fn import_reads_a_dotenv_file_given_as_path() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let dotenv = sandbox.path(".env");
    sandbox.write(&dotenv, DOTENV);

    sandbox.kmsenv().file(&file).arg("import").arg(&dotenv).run().ok();

    let env = sandbox.exec_env(&[&file]);
    for (name, value) in dotenv_expected() {
        assert_eq!(env.get(name).map(Vec::as_slice), Some(value), "{name}");
    }
}

#[test]
fn import_plain_stores_the_values_in_clear() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");

    sandbox
        .kmsenv()
        .file(&file)
        .args(["import", "--plain"])
        .stdin("LOG_LEVEL=debug\nexport REGION_NAME='eu-west-1'\n")
        .run()
        .ok();

    let text = sandbox.read(&file);
    assert_eq!(quoted_field_of_plain(&text, "LOG_LEVEL"), "debug");
    assert_eq!(quoted_field_of_plain(&text, "REGION_NAME"), "eu-west-1");
    sandbox.kmsenv().file(&file).arg("check").run().ok();
}

/// Values that break naive quoting.
fn hostile_values() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("SINGLE_QUOTE", b"it's a 'quoted' value"),
        ("DOUBLE_QUOTE", b"say \"hi\" \\ back\\slash"),
        ("SUBSHELL", b"$(touch pwned-subshell) ${HOME} $HOME"),
        ("BACKTICKS", b"`touch pwned-backticks`"),
        ("NEWLINES", b"line one\nline two\n\nline four\n"),
        ("EQUALS", b"a=b=c; export X=1 && echo no"),
        ("TABS_AND_SPACES", b"  leading\tand trailing  "),
        ("GLOB", b"* ? [a-z] ~ # ! &"),
        ("UNICODE", "caf\u{e9} \u{2603} \u{1f512}".as_bytes()),
    ]
}

#[test]
fn export_shell_output_evaluates_back_to_the_exact_values() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let mut values = hostile_values();
    values.push(("NOT_UTF8", b"\xff\xfe bytes \x80"));
    for (name, value) in &values {
        sandbox.set(&file, name, value);
    }

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["export", "--format", "shell"])
        .run()
        .ok();
    let printed = out.stdout_text();
    for (name, _) in &values {
        assert!(
            printed.contains(&format!("export {name}='")),
            "shell output should have `export {name}='…'`:\n{printed}"
        );
    }
    let script = sandbox.path("exported.sh");
    std::fs::write(&script, &out.stdout).unwrap();
    let evaluated = std::process::Command::new("/bin/sh")
        .env_clear()
        .current_dir(sandbox.dir.path())
        .arg("-c")
        .arg(". \"$0\" && exec /usr/bin/env -0")
        .arg(&script)
        .output()
        .expect("run sh");
    assert!(
        evaluated.status.success(),
        "{}",
        String::from_utf8_lossy(&evaluated.stderr)
    );

    let env = parse_env0(&evaluated.stdout);
    for (name, value) in &values {
        assert_eq!(env.get(*name).map(Vec::as_slice), Some(*value), "{name}");
    }
    assert!(!sandbox.path("pwned-subshell").exists(), "$(…) was executed");
    assert!(!sandbox.path("pwned-backticks").exists(), "`…` was executed");
}

#[test]
fn export_json_prints_one_object_of_names_to_values() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let values = hostile_values();
    for (name, value) in &values {
        sandbox.set(&file, name, value);
    }
    sandbox.set_with(&file, &["--plain"], "PLAIN", b"plain");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["export", "--format", "json"])
        .run()
        .ok();

    let map: BTreeMap<String, String> = serde_json::from_str(&out.stdout_text()).unwrap_or_else(|e| {
        panic!(
            "export json is not a flat JSON object of strings ({e}):\n{}",
            out.stdout_text()
        )
    });
    for (name, value) in &values {
        assert_eq!(map.get(*name).map(String::as_bytes), Some(*value), "{name}");
    }
    assert_eq!(map.get("PLAIN").map(String::as_str), Some("plain"));
    assert_eq!(map.len(), values.len() + 1);
}

#[test]
fn export_dotenv_imports_back_into_another_file_unchanged() {
    let sandbox = Sandbox::new();
    let (first, _) = sandbox.new_file("first.toml");
    let (second, _) = sandbox.new_file("second.toml");
    // What dotenv output carries (a value it cannot, e.g. `'` with `"`, or CR, is
    // refused by name: tests/hostile.rs).
    let values: Vec<(&str, &[u8])> = vec![
        ("SINGLE_QUOTE", b"it's"),
        ("DOUBLE_QUOTES", b"say \"both\" $HOME `x`"),
        ("BACKSLASH", b"C:\\path\\to\\n"),
        ("NEWLINES", b"one\ntwo\n\nthree"),
        ("EQUALS", b"a=b"),
        ("SPACES", b"  padded  "),
        ("HASH", b"value # not a comment"),
    ];
    for (name, value) in &values {
        sandbox.set(&first, name, value);
    }

    let exported = sandbox
        .kmsenv()
        .file(&first)
        .args(["export", "--format", "dotenv"])
        .run()
        .ok();
    sandbox
        .kmsenv()
        .file(&second)
        .arg("import")
        .stdin(&exported.stdout)
        .run()
        .ok();

    let env = sandbox.exec_env(&[&second]);
    for (name, value) in &values {
        assert_eq!(env.get(*name).map(Vec::as_slice), Some(*value), "{name}");
    }
}

/// `set NAME` on a terminal asks twice, without echo, and stores exactly what
/// was typed (the prompts are answered on a pseudo-terminal, each once it shows).
#[test]
fn set_on_a_terminal_asks_twice_without_echo() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("app.toml");
    let typed = "typed-at-the-terminal";
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pty_answer.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(["Value for TOKEN: ", typed, "Again, to confirm: ", typed, "--"])
        .arg(env!("CARGO_BIN_EXE_kmsenv"))
        .arg("-f")
        .arg(&file)
        .args(["set", "TOKEN"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KMS", moto().endpoint())
        .output()
        .expect("run python3");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(!shown.contains(typed), "the value was echoed: {shown}");
    let got = sandbox.kmsenv().file(&file).args(["get", "TOKEN"]).run().ok();
    assert_eq!(got.stdout, typed.as_bytes());
}
