//! The writing commands, run against the in-memory key service: what each
//! leaves in the file, and what it refuses. The integration tests do the same
//! against moto and the fault proxy; these show the logic alone, fast.

use std::path::{Path, PathBuf};

use crate::cli::{CheckArgs, InitArgs, KeysCommand, RotateArgs, SetArgs, UnsetArgs};
use crate::document::{Document, Value};
use crate::error::{Class, TestResult};
use crate::kms::fake::FakeKms;
use crate::resolve::Selection;
use crate::run::Run;
use crate::secret::Secret;
use crate::writer::Writer;

/// A step's result: any error fails the test.
type Outcome<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A folder with a file `k.toml` made by `init --key k1 --context app=t`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Outcome<Fixture> {
        let f = Fixture {
            dir: tempfile::tempdir()?,
        };
        super::init::run(
            &f.run()?,
            InitArgs {
                keys: vec!["k1".into()],
                context: vec!["app=t".into()],
            },
        )?;
        Ok(f)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("k.toml")
    }

    fn run(&self) -> crate::error::Result<Run<FakeKms>> {
        self.run_with(FakeKms::default())
    }

    fn run_with(&self, kms: FakeKms) -> crate::error::Result<Run<FakeKms>> {
        Run::offline(vec![self.path()], kms, None)
    }

    fn text(&self) -> std::io::Result<String> {
        std::fs::read_to_string(self.path())
    }

    /// Every value of the file, opened (MAC verified) through `kms`.
    fn values_with(&self, kms: FakeKms) -> Outcome<Vec<(String, Vec<u8>)>> {
        let run = self.run_with(kms)?;
        let docs = run.load_all()?;
        Ok(run
            .open(&docs, Selection::ALL)?
            .into_iter()
            .flat_map(|f| f.values)
            .map(|v| (v.name, v.secret.expose().to_vec()))
            .collect())
    }

    fn values(&self) -> Outcome<Vec<(String, Vec<u8>)>> {
        self.values_with(FakeKms::default())
    }

    /// `set NAME` of `value` (sealed), through a file as `--from-file`.
    fn set(&self, name: &str, value: &[u8]) -> TestResult {
        let from = self.dir.path().join(format!("{name}.value"));
        std::fs::write(&from, value)?;
        super::set::run(&self.run()?, set_args(name, Some(&from)))?;
        Ok(())
    }
}

fn set_args(name: &str, from_file: Option<&Path>) -> SetArgs {
    SetArgs {
        name: name.into(),
        plain: false,
        kms: false,
        template: false,
        key: None,
        from_file: from_file.map(Path::to_path_buf),
        as_file: false,
        ciphertext: false,
        context: vec![],
        no_verify: false,
        secret: false,
        ssm: false,
        target: None,
        json_key: None,
        version_stage: None,
        version_id: None,
        param_type: None,
    }
}

fn pairs(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect()
}

#[test]
fn init_writes_a_format_2_file_with_a_mac_that_opens() -> TestResult {
    let f = Fixture::new()?;
    let doc = Document::parse(&f.path(), f.text()?)?;
    assert_eq!(doc.version, 2);
    assert!(doc.mac.is_some());
    assert_eq!(
        doc.keys.iter().map(|k| k.arn.as_str()).collect::<Vec<_>>(),
        ["k1"]
    );
    assert!(
        f.text()?.starts_with("# kmsenv — encrypted environment."),
        "{}",
        f.text()?
    );
    assert_eq!(f.values()?, vec![]);
    Ok(())
}

#[test]
fn set_seals_a_value_and_set_plain_stores_one_both_under_the_mac() -> TestResult {
    let f = Fixture::new()?;
    f.set("TOKEN", b"s3cret")?;
    let mut plain = set_args("HOST=db.internal", None);
    plain.plain = true;
    super::set::run(&f.run()?, plain)?;
    assert!(!f.text()?.contains("s3cret"));
    assert_eq!(
        f.values()?,
        pairs(&[("TOKEN", b"s3cret"), ("HOST", b"db.internal")])
    );
    Ok(())
}

#[test]
fn set_kms_without_key_encrypts_to_the_verified_first_key() -> TestResult {
    let f = Fixture::new()?;
    let from = f.dir.path().join("v");
    std::fs::write(&from, b"direct")?;
    let mut args = set_args("API", Some(&from));
    args.kms = true;
    super::set::run(&f.run()?, args)?;
    let doc = Document::parse(&f.path(), f.text()?)?;
    let Some(Value::Kms { key, context, .. }) = doc.entry("API").map(|e| &e.value) else {
        return Err("API is not a kms value".into());
    };
    assert_eq!(key.as_deref(), Some("k1"));
    assert_eq!(context.get("kmsenv:var").map(String::as_str), Some("API"));
    assert_eq!(f.values()?, pairs(&[("API", b"direct")]));
    Ok(())
}

#[test]
fn unset_removes_entries_and_the_file_still_verifies() -> TestResult {
    let f = Fixture::new()?;
    f.set("A", b"1")?;
    f.set("B", b"2")?;
    super::unset::run(
        &f.run()?,
        UnsetArgs {
            names: vec!["A".into()],
        },
    )?;
    assert_eq!(f.values()?, pairs(&[("B", b"2")]));
    let err = super::unset::run(
        &f.run()?,
        UnsetArgs {
            names: vec!["A".into()],
        },
    )
    .err()
    .ok_or("no error")?;
    assert!(err.to_string().contains("A is not in the file"), "{err}");
    Ok(())
}

#[test]
fn rotate_changes_the_data_key_and_every_sealed_text_but_no_value() -> TestResult {
    let f = Fixture::new()?;
    f.set("A", b"alpha")?;
    let before = Document::parse(&f.path(), f.text()?)?;
    super::rotate::run(&f.run()?, RotateArgs { kms_values: false })?;
    let after = Document::parse(&f.path(), f.text()?)?;
    assert_ne!(before.keys[0].data_key_text, after.keys[0].data_key_text);
    assert_ne!(
        before.entry("A").map(|e| &e.value),
        after.entry("A").map(|e| &e.value)
    );
    assert_eq!(f.values()?, pairs(&[("A", b"alpha")]));
    Ok(())
}

#[test]
fn keys_add_then_remove_moves_the_file_to_the_other_key() -> TestResult {
    let f = Fixture::new()?;
    f.set("A", b"alpha")?;
    super::keys::run(&f.run()?, KeysCommand::Add { key: "k2".into() })?;
    let only_k2 = || FakeKms {
        denied: vec!["k1".into()],
        ..Default::default()
    };
    assert_eq!(f.values_with(only_k2())?, pairs(&[("A", b"alpha")]));
    super::keys::run(&f.run()?, KeysCommand::Remove { key: "k1".into() })?;
    let doc = Document::parse(&f.path(), f.text()?)?;
    assert_eq!(
        doc.keys.iter().map(|k| k.arn.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
    assert_eq!(f.values_with(only_k2())?, pairs(&[("A", b"alpha")]));
    let err = super::keys::run(&f.run()?, KeysCommand::Remove { key: "k2".into() })
        .err()
        .ok_or("no error")?;
    assert!(err.to_string().contains("the file's only key"), "{err}");
    Ok(())
}

#[test]
fn check_fix_mac_blesses_a_hand_edit_but_not_an_added_wrapping_key() -> TestResult {
    let f = Fixture::new()?;
    let mut plain = set_args("HOST=db", None);
    plain.plain = true;
    super::set::run(&f.run()?, plain)?;
    std::fs::write(f.path(), f.text()?.replace("HOST = \"db\"", "HOST = \"db2\""))?;
    assert_eq!(
        f.values()
            .err()
            .map(|e| e.to_string().contains("modified outside kmsenv")),
        Some(true)
    );
    super::check::run(&f.run()?, CheckArgs { fix_mac: true })?;
    assert_eq!(f.values()?, pairs(&[("HOST", b"db2")]));

    // A second wrapping of another data key, appended by hand: refused, unchanged.
    let ctx = Document::parse(&f.path(), f.text()?)?.data_key_context();
    let theirs = crate::kms::fake::block_on(crate::kms::KeyService::generate_data_key(
        &FakeKms::default(),
        "k2",
        &ctx,
    ))??;
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD.encode(&theirs.blob);
    let injected = f.text()?.replace(
        "\n[env]",
        &format!("\n[[kmsenv.keys]]\narn = \"k2\"\ndata_key = \"{blob}\"\n\n[env]"),
    );
    std::fs::write(f.path(), &injected)?;
    let err = super::check::run(&f.run()?, CheckArgs { fix_mac: true })
        .err()
        .ok_or("no error")?;
    assert_eq!(err.class, Class::Integrity, "{err}");
    assert!(
        err.to_string().contains("k2: wraps another data key than k1"),
        "{err}"
    );
    assert_eq!(f.text()?, injected);
    Ok(())
}

#[test]
fn edit_merge_reseals_changes_keeps_the_rest_and_removes_deleted_names() -> TestResult {
    let f = Fixture::new()?;
    f.set("KEEP", b"same")?;
    f.set("CHANGE", b"old")?;
    f.set("DROP", b"gone")?;
    let keep_text = Document::parse(&f.path(), f.text()?)?
        .entry("KEEP")
        .map(|e| e.value.clone());
    let run = f.run()?;
    let mut w = Writer::open(&run, &f.path())?;
    let s = |v: &[u8]| Secret::new(v.to_vec());
    let before = vec![
        ("KEEP".to_string(), s(b"same")),
        ("CHANGE".to_string(), s(b"old")),
        ("DROP".to_string(), s(b"gone")),
    ];
    let after = vec![
        ("KEEP".to_string(), s(b"same")),
        ("CHANGE".to_string(), s(b"new")),
        ("ADDED".to_string(), s(b"fresh")),
    ];
    let changed = super::edit::apply(&mut w, &before, &after)?;
    assert_eq!(changed, ["CHANGE", "ADDED", "-DROP"]);
    w.save()?;
    assert_eq!(
        f.values()?,
        pairs(&[("KEEP", b"same"), ("CHANGE", b"new"), ("ADDED", b"fresh")])
    );
    let doc = Document::parse(&f.path(), f.text()?)?;
    assert_eq!(
        doc.entry("KEEP").map(|e| e.value.clone()),
        keep_text,
        "an unchanged value keeps its ciphertext"
    );
    Ok(())
}

#[test]
fn init_text_reads_like_a_hand_written_file() -> TestResult {
    let f = Fixture::new()?;
    super::keys::run(&f.run()?, KeysCommand::Add { key: "k2".into() })?;
    let text = f.text()?;
    let shape: Vec<&str> = text.lines().map(|l| l.split(" = ").next().unwrap_or(l)).collect();
    assert_eq!(
        shape,
        [
            "# kmsenv — encrypted environment. Safe to commit; edit with `kmsenv set` / `kmsenv edit`.",
            "[kmsenv]",
            "version",
            "context",
            "mac",
            "",
            "[[kmsenv.keys]]",
            "arn",
            "data_key",
            "",
            "[[kmsenv.keys]]",
            "arn",
            "data_key",
            "",
            "[env]",
        ],
        "{text}"
    );
    Ok(())
}

/// `set --template NAME` of `text`, through a file as `--from-file`.
fn set_template(f: &Fixture, name: &str, text: &str) -> TestResult {
    let from = f.dir.path().join(format!("{name}.template"));
    std::fs::write(&from, text)?;
    let mut args = set_args(name, Some(&from));
    args.template = true;
    super::set::run(&f.run()?, args)?;
    Ok(())
}

#[test]
fn a_template_resolves_after_decryption_and_is_never_re_expanded() -> TestResult {
    let f = Fixture::new()?;
    f.set("PW", b"p$${X}w${PW}d")?;
    super::set::run(&f.run()?, {
        let mut a = set_args("HOST=db", None);
        a.plain = true;
        a
    })?;
    set_template(&f, "URL", "pg://u:${PW}@${HOST}/$$")?;
    let values = f.values()?;
    let url = values.iter().find(|(n, _)| n == "URL").map(|(_, v)| v.as_slice());
    assert_eq!(url, Some(&b"pg://u:p$${X}w${PW}d@db/$"[..]));
    let doc = Document::parse(&f.path(), f.text()?)?;
    assert_eq!(doc.entry("URL").map(|e| e.value.kind()), Some("template"));
    Ok(())
}

#[test]
fn editing_a_template_by_hand_fails_the_mac() -> TestResult {
    let f = Fixture::new()?;
    f.set("PW", b"secret")?;
    set_template(&f, "URL", "https://u:${PW}@good.example/")?;
    std::fs::write(f.path(), f.text()?.replace("good.example", "evil.example"))?;
    let err = f.values().unwrap_err();
    assert!(err.to_string().contains("modified outside kmsenv"), "{err}");
    Ok(())
}

#[test]
fn a_template_naming_an_unknown_variable_or_a_cycle_fails_naming_it() -> TestResult {
    let f = Fixture::new()?;
    set_template(&f, "A", "x${MISSING}")?;
    let err = f.values().unwrap_err().to_string();
    assert!(
        err.contains("A: the template uses ${MISSING}, which no file defines"),
        "{err}"
    );
    set_template(&f, "A", "${B}")?;
    set_template(&f, "B", "${A}")?;
    let err = f.values().unwrap_err().to_string();
    assert!(err.contains("templates form a cycle: A → B → A"), "{err}");
    Ok(())
}

#[test]
fn set_template_refuses_bad_syntax_and_itself_before_writing() -> TestResult {
    let f = Fixture::new()?;
    let before = f.text()?;
    for bad in ["$HOME", "${A", "${SELF}"] {
        let from = f.dir.path().join("t");
        std::fs::write(&from, bad)?;
        let mut args = set_args("SELF", Some(&from));
        args.template = true;
        assert!(super::set::run(&f.run()?, args).is_err(), "{bad}");
    }
    assert_eq!(f.text()?, before);
    Ok(())
}

#[test]
fn edit_never_encrypts_a_changed_direct_value_to_a_key_the_file_does_not_vouch_for() -> TestResult {
    let f = Fixture::new()?;
    // A direct value under a key that is not a wrapping key (outside the MAC: a
    // writer of the file could have put it there).
    let from = f.dir.path().join("v");
    std::fs::write(&from, b"old")?;
    let mut args = set_args("API", Some(&from));
    args.kms = true;
    args.key = Some("attacker".into());
    super::set::run(&f.run()?, args)?;
    let before = f.text()?;
    let run = f.run()?;
    let mut w = Writer::open(&run, &f.path())?;
    let s = |v: &[u8]| Secret::new(v.to_vec());
    let err = super::edit::apply(
        &mut w,
        &[("API".to_string(), s(b"old"))],
        &[("API".to_string(), s(b"new"))],
    )
    .err()
    .ok_or("no error")?;
    assert!(
        err.to_string()
            .contains("its key attacker is not one of the file's wrapping keys"),
        "{err}"
    );
    assert_eq!(f.text()?, before);
    Ok(())
}

const DB_ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbCdEf";

/// A fake with the secret `prod/db` = {"password":"pw-CANARY","user":"app"}.
fn with_db_secret() -> FakeKms {
    let kms = FakeKms::default();
    kms.refs
        .secrets
        .borrow_mut()
        .insert(DB_ARN.into(), r#"{"password":"pw-CANARY","user":"app"}"#.into());
    kms
}

fn set_secret(name: &str, id: &str, json_key: Option<&str>) -> SetArgs {
    SetArgs {
        secret: true,
        target: Some(id.into()),
        json_key: json_key.map(Into::into),
        ..set_args(name, None)
    }
}

#[test]
fn set_secret_by_name_writes_the_full_arn_under_the_mac() -> TestResult {
    let f = Fixture::new()?;
    super::set::run(
        &f.run_with(with_db_secret())?,
        set_secret("DB_PASSWORD", "prod/db", Some("password")),
    )?;
    let text = f.text()?;
    assert!(
        text.contains(&format!(
            "DB_PASSWORD = {{ secret = \"{DB_ARN}\", json_key = \"password\" }}"
        )),
        "{text}"
    );
    assert!(!text.contains("pw-CANARY"));
    assert_eq!(
        f.values_with(with_db_secret())?,
        pairs(&[("DB_PASSWORD", b"pw-CANARY")])
    );
    // The reference is under the MAC: pointing it at another key breaks it.
    std::fs::write(f.path(), text.replace("\"password\"", "\"user\""))?;
    let err = f.values_with(with_db_secret()).unwrap_err().to_string();
    assert!(err.contains("modified outside kmsenv"), "{err}");
    Ok(())
}

#[test]
fn set_secret_refuses_a_missing_json_key_and_leaves_the_file_alone() -> TestResult {
    let f = Fixture::new()?;
    let before = f.text()?;
    let err = super::set::run(
        &f.run_with(with_db_secret())?,
        set_secret("DB", "prod/db", Some("pass")),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("DB: secret prod/db: the secret has no top-level key \"pass\""),
        "{err}"
    );
    assert!(!err.to_string().contains("CANARY"));
    assert_eq!(f.text()?, before);
    Ok(())
}

#[test]
fn set_secret_without_verify_needs_the_full_arn() -> TestResult {
    let f = Fixture::new()?;
    let args = SetArgs {
        no_verify: true,
        ..set_secret("DB", "prod/db", None)
    };
    assert_eq!(super::set::run(&f.run()?, args).unwrap_err().class, Class::Usage);
    let args = SetArgs {
        no_verify: true,
        ..set_secret("DB", DB_ARN, None)
    };
    super::set::run(&f.run()?, args)?;
    assert!(f.text()?.contains(DB_ARN));
    Ok(())
}

#[test]
fn a_template_uses_a_secret_reference() -> TestResult {
    let f = Fixture::new()?;
    super::set::run(
        &f.run_with(with_db_secret())?,
        set_secret("DB_PASSWORD", DB_ARN, Some("password")),
    )?;
    let from = f.dir.path().join("t");
    std::fs::write(&from, "postgres://app:${DB_PASSWORD}@db/app")?;
    super::set::run(
        &f.run()?,
        SetArgs {
            template: true,
            ..set_args("DATABASE_URL", Some(&from))
        },
    )?;
    let values = f.values_with(with_db_secret())?;
    assert!(values.contains(&("DATABASE_URL".into(), b"postgres://app:pw-CANARY@db/app".to_vec())));
    Ok(())
}

#[test]
fn set_ssm_writes_the_reference_or_says_the_build_lacks_it() -> TestResult {
    let f = Fixture::new()?;
    let kms = FakeKms::default();
    kms.refs.params.borrow_mut().insert(
        "/prod/db:2".into(),
        ("SecureString".into(), 2, "ssm-CANARY".into()),
    );
    let args = SetArgs {
        ssm: true,
        target: Some("/prod/db:2".into()),
        ..set_args("P", None)
    };
    let got = super::set::run(&f.run_with(kms)?, args);
    if crate::ssm::ENABLED {
        got?;
        assert!(
            f.text()?.contains("P = { ssm = \"/prod/db:2\" }"),
            "{}",
            f.text()?
        );
    } else {
        let err = got.unwrap_err();
        assert!(
            err.to_string().contains("without Parameter Store support"),
            "{err}"
        );
    }
    Ok(())
}
