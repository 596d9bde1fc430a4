//! Issue 16: values that live in Secrets Manager or SSM Parameter Store,
//! referenced from the file (`{ secret = "arn:…" }`, `{ ssm = "/name" }`) and read
//! at start-up — the real binary against moto, and, for what moto lacks, through
//! the fault proxy (tests/support/kms_fault_proxy.py: throttling, errors, hangs,
//! dropped, reordered, renamed and foreign items, SSM ARNs and selectors).
//!
//! Resolution tests use hand-written keyless files (references count as plain
//! values, so a file without keys may hold them); what depends on the MAC, the
//! trust pin and the writing commands uses files made by `init` and `set
//! --secret`/`--ssm`. Every failure asserts exit 125, one first line naming the
//! file, the variable, the reference and the AWS code, that the command did not
//! run, and that no secret value reached stderr. Calls are counted at the proxy.
//! SSM tests need the cargo feature `ssm` (`make test` enables `full`); the
//! default build is tested to refuse SSM references, pointing at `kmsenv-full`.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// A secret's canary: a value that must never appear in stderr.
fn canary(tag: &str) -> String {
    format!("canary-{tag}-{}", support::random::random_hex(8))
}

/// A new secret holding `text`, under a name no other test uses.
fn secret(text: &str) -> Secret {
    moto().create_secret(REGION, &unique_name("app/db-"), SecretValue::Text(text))
}

/// A reference as a test writes it: `NAME = { KIND = "TARGET", extra… }`, the
/// extra fields in TOML (`json_key = "password"`, `version_stage = "AWSPREVIOUS"`,
/// `version_id = "…"`, `file = true`, `type = "String"`).
struct Ref {
    name: String,
    kind: &'static str,
    target: String,
    extra: Vec<String>,
}

fn reference(name: &str, kind: &'static str, target: &str, extra: &[&str]) -> Ref {
    Ref {
        name: name.to_string(),
        kind,
        target: target.to_string(),
        extra: extra.iter().map(|e| e.to_string()).collect(),
    }
}

/// `NAME = { secret = "ARN", extra… }`.
fn secret_ref(name: &str, arn: &str, extra: &[&str]) -> Ref {
    reference(name, "secret", arn, extra)
}

impl Ref {
    /// The entry's TOML line, for a file written by hand.
    fn line(&self) -> String {
        let mut line = format!("{} = {{ {} = {}", self.name, self.kind, toml_string(&self.target));
        for field in &self.extra {
            line.push_str(", ");
            line.push_str(field);
        }
        line.push_str(" }");
        line
    }

    /// `set --secret|--ssm NAME TARGET [flags] --no-verify`: the command a user
    /// types to write the same entry.
    fn set_args(&self) -> Vec<String> {
        let mut args = vec![
            "set".to_string(),
            format!("--{}", self.kind),
            self.name.clone(),
            self.target.clone(),
        ];
        for field in &self.extra {
            let (key, value) = field
                .split_once(" = ")
                .unwrap_or_else(|| panic!("extra field {field:?}"));
            let value = value.trim_matches('"').to_string();
            match key {
                "file" => args.push("--as-file".into()),
                "json_key" | "version_stage" | "version_id" | "type" => {
                    args.push(format!("--{}", key.replace('_', "-")));
                    args.push(value);
                }
                other => panic!("no set flag for {other}"),
            }
        }
        args.push("--no-verify".into());
        args
    }
}

/// A file under a new key holding `refs`, each written by `set … --no-verify`
/// (pointed at moto, so no call reaches a test's proxy).
fn refs_file(sandbox: &Sandbox, relative: &str, refs: &[Ref]) -> PathBuf {
    let key = sandbox.key();
    let file = sandbox.init(relative, &[&key]);
    for r in refs {
        sandbox.kmsenv().file(&file).args(r.set_args()).run().ok();
    }
    file
}

/// A keyless file of `refs` written by hand.
fn keyless(sandbox: &Sandbox, relative: &str, refs: &[Ref]) -> PathBuf {
    let file = sandbox.path(relative);
    let lines: Vec<String> = refs.iter().map(Ref::line).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    sandbox.write(&file, &keyless_file(&lines));
    file
}

/// kmsenv with every AWS endpoint at `proxy`, `options` before the subcommand.
fn via(sandbox: &Sandbox, proxy: &Proxy, options: &[&str]) -> Kmsenv {
    sandbox.kmsenv().all_endpoints(&proxy.endpoint()).args(options)
}

/// `exec -- env -0` of `file` through `proxy`: the child's environment.
#[track_caller]
fn env_via(sandbox: &Sandbox, proxy: &Proxy, file: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    via(sandbox, proxy, &[])
        .file(file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0()
}

/// `exec -- touch MARKER` of `file` through `proxy`.
fn exec_marker_via(sandbox: &Sandbox, proxy: &Proxy, options: &[&str], file: &Path) -> Output {
    via(sandbox, proxy, options)
        .file(file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
}

/// Fail closed: exit 125, a first stderr line naming the file and each needle,
/// the command not run, none of `secrets` anywhere in the output.
#[track_caller]
fn fails_closed(sandbox: &Sandbox, out: Output, file: &Path, needles: &[&str], secrets: &[&str]) -> Output {
    let path = file.display().to_string();
    let mut all = vec![path.as_str()];
    all.extend_from_slice(needles);
    let out = out.first_line_names(&all);
    assert_no_secret(&out, secrets);
    sandbox.assert_command_did_not_run();
    out
}

#[track_caller]
fn assert_no_secret(out: &Output, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !contains_bytes(&out.all_output(), secret.as_bytes()),
            "a secret value ({secret}) was printed:\n{}",
            out.stderr
        );
    }
}

/// kmsenv under the trust pin `--trust-key KEY`.
fn pinned(sandbox: &Sandbox, key: &str) -> Kmsenv {
    sandbox.kmsenv().arg("--trust-key").arg(key)
}

/// `exec -- env -0` of `file` under the pin `key`: the child's environment.
#[track_caller]
fn pinned_env(sandbox: &Sandbox, key: &str, file: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    pinned(sandbox, key)
        .file(file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0()
}

/// `exec -- touch MARKER` of `file` under the pin `key`.
fn pinned_marker(sandbox: &Sandbox, key: &str, file: &Path) -> Output {
    pinned(sandbox, key)
        .file(file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
}

/// `exec -- touch MARKER` of `file` through a new proxy with `rules`, asserted to
/// fail closed as [`fails_closed`] says; the proxy (for its counts) and the run.
#[track_caller]
fn fails_through(
    sandbox: &Sandbox,
    file: &Path,
    rules: &str,
    options: &[&str],
    needles: &[&str],
    secrets: &[&str],
) -> (Proxy, Output) {
    let proxy = Proxy::start();
    proxy.rules(rules);
    let out = exec_marker_via(sandbox, &proxy, options, file);
    let out = fails_closed(sandbox, out, file, needles, secrets);
    (proxy, out)
}

/// Each variable of `named` holds its value in the child's environment.
#[track_caller]
fn assert_named<'a>(
    env: &std::collections::BTreeMap<String, Vec<u8>>,
    named: impl IntoIterator<Item = (String, &'a String)>,
) {
    for (name, value) in named {
        assert_eq!(
            env.get(&name).map(Vec::as_slice),
            Some(value.as_bytes()),
            "{name}"
        );
    }
}

/// `n` new secrets, each with its canary value (`tag` and its number in it).
fn many_secrets(n: usize, tag: &str) -> Vec<(String, Secret)> {
    (0..n)
        .map(|i| {
            let value = canary(&format!("{tag}{i}"));
            let s = secret(&value);
            (value, s)
        })
        .collect()
}

/// A JSON proxy rule list of one rule.
fn one_rule(rule: &str) -> String {
    format!("[{rule}]")
}

// ---------------------------------------------------------------------------
// Secrets Manager: what a reference gives the program

#[test]
fn secret_references_put_each_secret_into_its_own_variable() {
    let sandbox = Sandbox::new();
    let (a, b) = (canary("a"), canary("b"));
    let (sa, sb) = (secret(&a), secret(&b));
    let file = refs_file(
        &sandbox,
        "kmsenv.toml",
        &[
            secret_ref("FIRST", &sa.arn, &[]),
            secret_ref("SECOND", &sb.arn, &[]),
        ],
    );
    sandbox.set_with(&file, &["--plain"], "PLAIN", b"kept");
    let proxy = Proxy::start();

    let env = env_via(&sandbox, &proxy, &file);

    assert_values(
        &env,
        &[
            ("FIRST", a.as_bytes()),
            ("SECOND", b.as_bytes()),
            ("PLAIN", b"kept"),
        ],
    );
    assert_eq!(proxy.count_op("BatchGetSecretValue"), 1, "{}", proxy.counts());
    assert_eq!(proxy.count_op("GetSecretValue"), 0, "{}", proxy.counts());
}

#[test]
fn forty_five_secret_references_take_three_batch_calls() {
    let sandbox = Sandbox::new();
    let secrets = many_secrets(45, "value");
    let entries: Vec<Ref> = secrets
        .iter()
        .enumerate()
        .map(|(i, (_, s))| secret_ref(&format!("S{i:02}"), &s.arn, &[]))
        .collect();
    let file = refs_file(&sandbox, "kmsenv.toml", &entries);
    let proxy = Proxy::start();

    let env = env_via(&sandbox, &proxy, &file);

    assert_named(
        &env,
        secrets
            .iter()
            .enumerate()
            .map(|(i, (v, _))| (format!("S{i:02}"), v)),
    );
    assert_eq!(
        proxy.count_op("BatchGetSecretValue"),
        3,
        "45 ids in batches of at most 20: {}",
        proxy.counts()
    );
    assert_eq!(proxy.count_op("GetSecretValue"), 0, "{}", proxy.counts());
}

/// 20 distinct secrets and one of them named twice more (once with a
/// json_key-free twin under another name): deduplicated, 20 ids fit one call.
#[test]
fn a_secret_referenced_by_several_variables_is_read_once() {
    let sandbox = Sandbox::new();
    let secrets: Vec<Secret> = (0..20).map(|i| secret(&format!("v{i}"))).collect();
    let mut entries: Vec<Ref> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| secret_ref(&format!("S{i:02}"), &s.arn, &[]))
        .collect();
    entries.push(secret_ref("AGAIN", &secrets[7].arn, &[]));
    entries.push(secret_ref("AND_AGAIN", &secrets[7].arn, &[]));
    let file = refs_file(&sandbox, "kmsenv.toml", &entries);
    let proxy = Proxy::start();

    let env = env_via(&sandbox, &proxy, &file);

    assert_values(&env, &[("S07", b"v7"), ("AGAIN", b"v7"), ("AND_AGAIN", b"v7")]);
    assert_eq!(
        proxy.count_op("BatchGetSecretValue"),
        1,
        "22 references to 20 secrets: one call of 20 ids: {}",
        proxy.counts()
    );
}

#[test]
fn json_key_takes_one_top_level_string_of_a_json_secret() {
    let sandbox = Sandbox::new();
    let password = canary("pw");
    let s = secret(&format!(
        r#"{{"username":"app","password":"{password}","port":5432,"nested":{{"password":"no"}}}}"#
    ));
    let file = refs_file(
        &sandbox,
        "kmsenv.toml",
        &[
            secret_ref("DB_PASSWORD", &s.arn, &["json_key = \"password\""]),
            secret_ref("DB_USER", &s.arn, &["json_key = \"username\""]),
        ],
    );
    let proxy = Proxy::start();

    let env = env_via(&sandbox, &proxy, &file);

    assert_values(&env, &[("DB_PASSWORD", password.as_bytes()), ("DB_USER", b"app")]);
    assert_eq!(proxy.count_op("BatchGetSecretValue"), 1, "{}", proxy.counts());
}

/// A missing key, a number, an object and a secret that is not JSON: each a 125
/// naming the variable and the key, without the secret's text.
#[test]
fn json_key_fails_closed_when_missing_not_a_string_or_not_json() {
    let sandbox = Sandbox::new();
    let password = canary("pw");
    let json = secret(&format!(
        r#"{{"password":"{password}","port":5432,"nested":{{"a":"b"}}}}"#
    ));
    let text = secret(&password);
    let proxy = Proxy::start();
    for (i, (arn, key)) in [
        (&json.arn, "user"),
        (&json.arn, "port"),
        (&json.arn, "nested"),
        (&text.arn, "password"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = refs_file(
            &sandbox,
            &format!("case{i}.toml"),
            &[secret_ref(
                "DB_PASSWORD",
                arn,
                &[&format!("json_key = \"{key}\"")],
            )],
        );
        let out = exec_marker_via(&sandbox, &proxy, &[], &file);
        fails_closed(&sandbox, out, &file, &["DB_PASSWORD", key], &[&password]);
    }
}

#[test]
fn a_binary_secret_is_delivered_as_a_file_and_refused_as_a_variable() {
    let sandbox = Sandbox::new();
    let bytes: Vec<u8> = (0u8..=255).chain([0, 0, 7]).collect();
    let s = moto().create_secret(REGION, &unique_name("app/cert-"), SecretValue::Binary(&bytes));
    let as_file = refs_file(
        &sandbox,
        "file.toml",
        &[secret_ref("TLS_KEY", &s.arn, &["file = true"])],
    );
    let as_var = refs_file(&sandbox, "var.toml", &[secret_ref("TLS_KEY", &s.arn, &[])]);
    let proxy = Proxy::start();

    let out = via(&sandbox, &proxy, &[])
        .file(&as_file)
        .args(["exec", "--", "sh", "-c", "cat \"$TLS_KEY\""])
        .run()
        .ok();
    assert_eq!(out.stdout, bytes, "the file holds the secret's bytes");

    let out = exec_marker_via(&sandbox, &proxy, &[], &as_var);
    fails_closed(&sandbox, out, &as_var, &["TLS_KEY", &s.arn], &[]);
}

#[test]
fn version_stage_and_version_id_read_that_version() {
    let sandbox = Sandbox::new();
    let (old, new) = (canary("old"), canary("new"));
    let s = secret(&old);
    moto().put_secret_value(REGION, &s.arn, SecretValue::Text(&new), &[]);
    let staged = moto().put_secret_value(REGION, &s.arn, SecretValue::Text("pending"), &["AWSPENDING"]);
    let file = refs_file(
        &sandbox,
        "kmsenv.toml",
        &[
            secret_ref("CURRENT", &s.arn, &[]),
            secret_ref("PREVIOUS", &s.arn, &["version_stage = \"AWSPREVIOUS\""]),
            secret_ref("PENDING", &s.arn, &["version_stage = \"AWSPENDING\""]),
            secret_ref("FIRST", &s.arn, &[&format!("version_id = \"{}\"", s.version_id)]),
            secret_ref("BY_ID", &s.arn, &[&format!("version_id = \"{staged}\"")]),
        ],
    );
    let proxy = Proxy::start();

    let env = env_via(&sandbox, &proxy, &file);

    assert_values(
        &env,
        &[
            ("CURRENT", new.as_bytes()),
            ("PREVIOUS", old.as_bytes()),
            ("PENDING", b"pending"),
            ("FIRST", old.as_bytes()),
            ("BY_ID", b"pending"),
        ],
    );
    assert_eq!(
        proxy.count_op("BatchGetSecretValue"),
        1,
        "AWSCURRENT batched: {}",
        proxy.counts()
    );
    assert_eq!(
        proxy.count_op("GetSecretValue"),
        4,
        "one per pinned version: {}",
        proxy.counts()
    );
}

/// Pinned versions take a GetSecretValue each, a few at once: concurrent (not
/// one after the other) and bounded per service and region (at most 4), so a
/// file of many pinned versions neither crawls nor floods the account's quota.
#[test]
fn pinned_versions_are_read_a_few_at_a_time() {
    let sandbox = Sandbox::new();
    let secrets = many_secrets(12, "pinned");
    let entries: Vec<Ref> = secrets
        .iter()
        .enumerate()
        .map(|(i, (_, s))| {
            secret_ref(
                &format!("P{i:02}"),
                &s.arn,
                &[&format!("version_id = \"{}\"", s.version_id)],
            )
        })
        .collect();
    let file = refs_file(&sandbox, "kmsenv.toml", &entries);
    let proxy = Proxy::start();
    // Each answer takes a while, so calls made together are held together.
    proxy.rules(r#"[{"op": "GetSecretValue", "action": "latency", "ms": 300}]"#);

    let env = env_via(&sandbox, &proxy, &file);

    assert_named(
        &env,
        secrets
            .iter()
            .enumerate()
            .map(|(i, (v, _))| (format!("P{i:02}"), v)),
    );
    assert_eq!(proxy.count_op("GetSecretValue"), 12, "{}", proxy.counts());
    let peak = proxy.peak_in_flight("GetSecretValue");
    assert!(
        (2..=4).contains(&peak),
        "GetSecretValue calls in flight at once: {peak} (expected 2 to 4): {}",
        proxy.counts()
    );
}

#[test]
fn a_missing_version_stage_fails_closed_naming_the_variable() {
    let sandbox = Sandbox::new();
    let s = secret("x");
    let file = refs_file(
        &sandbox,
        "kmsenv.toml",
        &[secret_ref("OLD", &s.arn, &["version_stage = \"AWSPREVIOUS\""])],
    );
    let proxy = Proxy::start();
    let out = exec_marker_via(&sandbox, &proxy, &[], &file);
    fails_closed(&sandbox, out, &file, &["OLD", &s.arn, "NotFound"], &[]);
}

#[test]
fn a_rotated_secret_is_picked_up_by_the_next_start_without_touching_the_file() {
    let sandbox = Sandbox::new();
    let (before, after) = (canary("before"), canary("after"));
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let s = secret(&before);
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--secret", "DB_PASSWORD", &s.arn])
        .run()
        .ok();
    let written = std::fs::read(&file).expect("read the file");

    let proxy = Proxy::start();
    assert_eq!(env_via(&sandbox, &proxy, &file)["DB_PASSWORD"], before.as_bytes());
    moto().put_secret_value(REGION, &s.arn, SecretValue::Text(&after), &[]);
    assert_eq!(env_via(&sandbox, &proxy, &file)["DB_PASSWORD"], after.as_bytes());

    assert_eq!(
        std::fs::read(&file).expect("read the file"),
        written,
        "the file is untouched"
    );
    assert_eq!(
        proxy.count_op("BatchGetSecretValue"),
        2,
        "no cache: {}",
        proxy.counts()
    );
}

// ---------------------------------------------------------------------------
// Secrets Manager: partial, reordered and foreign answers

/// Three references, the middle one the victim of a fault: (file, the three
/// secrets, their canaries).
fn three_secrets(sandbox: &Sandbox) -> (PathBuf, Vec<Secret>, Vec<String>) {
    let values: Vec<String> = ["one", "two", "three"].iter().map(|t| canary(t)).collect();
    let secrets: Vec<Secret> = values.iter().map(|v| secret(v)).collect();
    let file = refs_file(
        sandbox,
        "kmsenv.toml",
        &[
            secret_ref("ONE", &secrets[0].arn, &[]),
            secret_ref("TWO", &secrets[1].arn, &[]),
            secret_ref("THREE", &secrets[2].arn, &[]),
        ],
    );
    (file, secrets, values)
}

fn strs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

#[test]
fn a_secret_that_does_not_exist_fails_closed_naming_variable_reference_and_code() {
    let sandbox = Sandbox::new();
    let (file, _, values) = three_secrets(&sandbox);
    let missing = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:app/gone-AbCdEf");
    sandbox
        .kmsenv()
        .file(&file)
        .args(secret_ref("GONE", &missing, &[]).set_args())
        .run()
        .ok();
    let proxy = Proxy::start();
    let out = exec_marker_via(&sandbox, &proxy, &[], &file);
    fails_closed(
        &sandbox,
        out,
        &file,
        &["GONE", &missing, "ResourceNotFoundException"],
        &strs(&values),
    );
}

#[test]
fn an_item_silently_missing_from_the_batch_answer_fails_closed() {
    let sandbox = Sandbox::new();
    let (file, secrets, values) = three_secrets(&sandbox);
    fails_through(
        &sandbox,
        &file,
        &one_rule(&format!(
            r#"{{"op": "BatchGetSecretValue", "action": "drop_item", "item": "{}"}}"#,
            secrets[1].name
        )),
        &[],
        &["TWO", &secrets[1].arn],
        &strs(&values),
    );
}

#[test]
fn a_decryption_failure_for_one_secret_fails_closed_naming_it() {
    let sandbox = Sandbox::new();
    let (file, secrets, values) = three_secrets(&sandbox);
    fails_through(
        &sandbox,
        &file,
        &one_rule(&format!(
            r#"{{"op": "BatchGetSecretValue", "action": "item_error", "item": "{}", "code": "DecryptionFailure"}}"#,
            secrets[1].name
        )),
        &[],
        &["TWO", &secrets[1].arn, "DecryptionFailure"],
        &strs(&values),
    );
}

#[test]
fn access_denied_and_decryption_failure_for_the_whole_call_fail_closed() {
    for code in ["AccessDeniedException", "DecryptionFailure"] {
        let sandbox = Sandbox::new();
        let (file, secrets, values) = three_secrets(&sandbox);
        let (_, out) = fails_through(
            &sandbox,
            &file,
            &one_rule(&format!(
                r#"{{"service": "secretsmanager", "action": "error", "code": "{code}"}}"#
            )),
            &[],
            &[code],
            &strs(&values),
        );
        // The line names one of the references it could not read.
        let first = out.stderr.lines().next().unwrap_or("");
        assert!(
            secrets.iter().any(|s| first.contains(&s.arn)),
            "the first line should name a reference: {first}"
        );
    }
}

#[test]
fn a_pinned_version_denied_fails_closed_naming_it() {
    let sandbox = Sandbox::new();
    let s = secret(&canary("v"));
    let file = refs_file(
        &sandbox,
        "kmsenv.toml",
        &[secret_ref(
            "PINNED",
            &s.arn,
            &[&format!("version_id = \"{}\"", s.version_id)],
        )],
    );
    fails_through(
        &sandbox,
        &file,
        r#"[{"op": "GetSecretValue", "action": "error", "code": "AccessDeniedException"}]"#,
        &[],
        &["PINNED", &s.arn, "AccessDeniedException"],
        &[],
    );
}

#[test]
fn items_answered_in_another_order_still_land_in_their_own_variables() {
    let sandbox = Sandbox::new();
    let (file, _, values) = three_secrets(&sandbox);
    let proxy = Proxy::start();
    proxy.rules(r#"[{"op": "BatchGetSecretValue", "action": "reorder"}]"#);

    let env = env_via(&sandbox, &proxy, &file);

    assert_values(
        &env,
        &[
            ("ONE", values[0].as_bytes()),
            ("TWO", values[1].as_bytes()),
            ("THREE", values[2].as_bytes()),
        ],
    );
    assert_eq!(
        proxy.count_op("BatchGetSecretValue"),
        1,
        "the rule was used: {}",
        proxy.counts()
    );
}

/// fnox once matched batch answers by suffix: `db` and `prod/db` are one
/// secret's name and the other's suffix. Answered in reverse order, each still
/// reaches its own variable.
#[test]
fn secrets_whose_names_are_suffixes_of_each_other_are_not_mixed_up() {
    let sandbox = Sandbox::new();
    let base = unique_name("db-");
    let (short, long) = (canary("short"), canary("long"));
    let s_short = moto().create_secret(REGION, &base, SecretValue::Text(&short));
    let s_long = moto().create_secret(REGION, &format!("prod/{base}"), SecretValue::Text(&long));
    let file = refs_file(
        &sandbox,
        "kmsenv.toml",
        &[
            secret_ref("SHORT", &s_short.arn, &[]),
            secret_ref("LONG", &s_long.arn, &[]),
        ],
    );
    let proxy = Proxy::start();
    for rules in ["[]", r#"[{"op": "BatchGetSecretValue", "action": "reorder"}]"#] {
        proxy.rules(rules);
        let env = env_via(&sandbox, &proxy, &file);
        assert_values(&env, &[("SHORT", short.as_bytes()), ("LONG", long.as_bytes())]);
    }
}

#[test]
fn a_secret_holding_a_nul_byte_fails_closed_naming_the_variable() {
    let sandbox = Sandbox::new();
    let value = canary("nul");
    let s = secret(&format!("{value}\u{0}tail"));
    let file = refs_file(&sandbox, "kmsenv.toml", &[secret_ref("WITH_NUL", &s.arn, &[])]);
    let proxy = Proxy::start();
    let out = exec_marker_via(&sandbox, &proxy, &[], &file);
    fails_closed(&sandbox, out, &file, &["WITH_NUL", "NUL"], &[&value]);
}

#[test]
fn a_secret_over_64_kib_fails_closed_naming_the_variable() {
    let sandbox = Sandbox::new();
    let value = format!("{}{}", canary("big"), "x".repeat(64 * 1024));
    let s = secret(&value);
    let file = refs_file(&sandbox, "kmsenv.toml", &[secret_ref("BIG", &s.arn, &[])]);
    let proxy = Proxy::start();
    let out = exec_marker_via(&sandbox, &proxy, &[], &file);
    fails_closed(&sandbox, out, &file, &["BIG", &s.arn], &[&value[..40]]);
}

/// Two items exchange their `Name`s (ARNs and values kept): kmsenv either matches
/// by ARN and gives each variable its own value, or refuses the answer — never
/// one secret's value in the other's variable.
#[test]
fn items_with_swapped_names_never_reach_the_wrong_variable() {
    let sandbox = Sandbox::new();
    let (file, secrets, values) = three_secrets(&sandbox);
    let proxy = Proxy::start();
    proxy.rules(&one_rule(&format!(
        r#"{{"op": "BatchGetSecretValue", "action": "swap_names", "items": ["{}", "{}"]}}"#,
        secrets[0].name, secrets[1].name
    )));

    let out = via(&sandbox, &proxy, &[])
        .file(&file)
        .args(["exec", "--", "env", "-0"])
        .run();

    if out.code() == Some(125) {
        assert_no_secret(&out, &strs(&values));
        assert!(out.stderr.starts_with("kmsenv: "), "{}", out.stderr);
    } else {
        let env = out.ok().env0();
        assert_values(
            &env,
            &[("ONE", values[0].as_bytes()), ("TWO", values[1].as_bytes())],
        );
    }
    let rules = &proxy.counts()["rules"];
    assert_eq!(rules[0]["used"], 1, "the rule was used: {rules}");
}

#[test]
fn an_answer_from_another_account_or_region_fails_closed() {
    for (what, field) in [
        ("account", "\"arn_account\": \"999999999999\""),
        ("region", "\"arn_region\": \"eu-west-1\""),
    ] {
        let sandbox = Sandbox::new();
        let (file, secrets, values) = three_secrets(&sandbox);
        let (_, out) = fails_through(
            &sandbox,
            &file,
            &one_rule(&format!(
                r#"{{"op": "BatchGetSecretValue", "action": "foreign_arn", "item": "{}", {field}}}"#,
                secrets[1].name
            )),
            &[],
            &["TWO", &secrets[1].arn],
            &strs(&values),
        );
        assert_eq!(out.code(), Some(125), "another {what}");
    }
}

#[test]
fn a_pinned_version_answered_from_another_account_fails_closed() {
    let sandbox = Sandbox::new();
    let value = canary("v");
    let s = secret(&value);
    let file = refs_file(
        &sandbox,
        "kmsenv.toml",
        &[secret_ref(
            "PINNED",
            &s.arn,
            &[&format!("version_id = \"{}\"", s.version_id)],
        )],
    );
    fails_through(
        &sandbox,
        &file,
        r#"[{"op": "GetSecretValue", "action": "foreign_arn", "arn_account": "999999999999"}]"#,
        &[],
        &["PINNED", &s.arn],
        &[&value],
    );
}

// ---------------------------------------------------------------------------
// Secrets Manager: throttling, deadlines, hangs

#[test]
fn throttled_then_answered_runs_the_command() {
    let sandbox = Sandbox::new();
    let (file, _, values) = three_secrets(&sandbox);
    let proxy = Proxy::start();
    proxy.rules(
        r#"[{"op": "BatchGetSecretValue", "times": 2, "action": "error", "code": "ThrottlingException"}]"#,
    );

    let env = env_via(&sandbox, &proxy, &file);

    assert_values(&env, &[("TWO", values[1].as_bytes())]);
    assert_eq!(
        proxy.count_op("BatchGetSecretValue"),
        3,
        "two throttled attempts, one answered: {}",
        proxy.counts()
    );
}

#[test]
fn throttled_past_the_deadline_fails_closed_naming_throttling() {
    let sandbox = Sandbox::new();
    let (file, _, values) = three_secrets(&sandbox);
    let (proxy, _) = fails_through(
        &sandbox,
        &file,
        r#"[{"op": "BatchGetSecretValue", "action": "error", "code": "ThrottlingException", "ms": 1000}]"#,
        &["--timeout", "4"],
        &["ThrottlingException"],
        &strs(&values),
    );
    assert!(proxy.count_op("BatchGetSecretValue") >= 2, "{}", proxy.counts());
}

/// Without a trust pin a reference is read while KMS opens the data key, not
/// after: the proxy holds the data key's Decrypt until the Secrets Manager call
/// arrives (at most 20 s). Read one after the other, the Decrypt would be
/// released only by that limit.
#[test]
fn references_are_read_while_kms_opens_the_data_key() {
    let sandbox = Sandbox::new();
    let value = canary("overlap");
    let s = secret(&value);
    let (file, _) = keyed_with_reference(&sandbox, &s);
    let proxy = Proxy::start();
    proxy.rules(r#"[{"op": "Decrypt", "action": "wait_for", "seen": "BatchGetSecretValue", "ms": 20000}]"#);

    let env = via(&sandbox, &proxy, &["--timeout", "60"])
        .file(&file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_values(&env, &[("DB_USER", b"app"), ("DB_PASSWORD", value.as_bytes())]);
    assert_eq!(
        proxy.waits(),
        (1, 0),
        "the Decrypt was released by the Secrets Manager call (seen, timed out): {}",
        proxy.counts()
    );
}

#[test]
fn a_hanging_secrets_manager_fails_closed_at_the_deadline() {
    let sandbox = Sandbox::new();
    let (file, _, values) = three_secrets(&sandbox);
    fails_through(
        &sandbox,
        &file,
        r#"[{"service": "secretsmanager", "action": "hang"}]"#,
        &["--timeout", "3"],
        &["ONE", "BatchGetSecretValue", "--timeout"],
        &strs(&values),
    );
}

// ---------------------------------------------------------------------------
// The file: MAC, templates, trust pin, writing and reading commands

/// A file under a new key: a sealed host and user, the password a reference.
fn keyed_with_reference(sandbox: &Sandbox, s: &Secret) -> (PathBuf, String) {
    let (file, key) = sandbox.new_file("kmsenv.toml");
    sandbox.set_with(&file, &["--plain"], "DB_HOST", b"db.internal");
    sandbox.set(&file, "DB_USER", b"app");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--secret", "DB_PASSWORD", &s.arn])
        .run()
        .ok();
    (file, key)
}

#[test]
fn set_secret_writes_the_full_arn_of_a_name_after_a_test_read() {
    let sandbox = Sandbox::new();
    let value = canary("pw");
    let s = secret(&value);
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let proxy = Proxy::start();

    let out = via(&sandbox, &proxy, &[])
        .file(&file)
        .args(["set", "--secret", "DB_PASSWORD", &s.name])
        .run()
        .ok();

    assert_no_secret(&out, &[&value]);
    let text = sandbox.read(&file);
    assert_eq!(quoted_field(entry_line(&text, "DB_PASSWORD"), "secret"), s.arn);
    assert!(!text.contains(&value), "the value is not in the file");
    assert!(
        proxy.count_op("GetSecretValue") + proxy.count_op("BatchGetSecretValue") >= 1,
        "a test read: {}",
        proxy.counts()
    );
    assert_eq!(sandbox.exec_env(&[&file])["DB_PASSWORD"], value.as_bytes());
}

#[test]
fn set_secret_of_a_missing_secret_fails_and_leaves_the_file_as_it_was() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let before = std::fs::read(&file).expect("read");
    let missing = unique_name("app/none-");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--secret", "DB_PASSWORD", &missing])
        .run()
        .kmsenv_error(&["DB_PASSWORD", &missing, "ResourceNotFoundException"]);
    assert_eq!(std::fs::read(&file).expect("read"), before);
}

#[test]
fn set_secret_writes_json_key_version_and_as_file() {
    let sandbox = Sandbox::new();
    let s = secret(r#"{"password":"pw"}"#);
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox
        .kmsenv()
        .file(&file)
        .args([
            "set",
            "--secret",
            "PW",
            &s.arn,
            "--json-key",
            "password",
            "--version-stage",
            "AWSCURRENT",
        ])
        .run()
        .ok();
    sandbox
        .kmsenv()
        .file(&file)
        .args([
            "set",
            "--secret",
            "PW_FILE",
            &s.arn,
            "--json-key",
            "password",
            "--as-file",
        ])
        .run()
        .ok();

    let text = sandbox.read(&file);
    let line = entry_line(&text, "PW");
    assert_eq!(quoted_field(line, "json_key"), "password", "{line}");
    assert_eq!(quoted_field(line, "version_stage"), "AWSCURRENT", "{line}");
    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "sh", "-c", "printf '%s|' \"$PW\"; cat \"$PW_FILE\""])
        .run()
        .ok();
    assert_eq!(out.stdout, b"pw|pw");
}

/// A keyed file that ran with its reference, then edited by someone without the
/// data key to point at another secret: the file, its key and that secret's value.
fn reference_pointed_elsewhere(sandbox: &Sandbox) -> (PathBuf, String, String) {
    let attacker = canary("attacker");
    let (mine, theirs) = (secret(&canary("mine")), secret(&attacker));
    let (file, key) = keyed_with_reference(sandbox, &mine);
    sandbox.assert_command_runs(&[&file]);
    let text = sandbox.read(&file);
    sandbox.write(&file, &replace_once(&text, &mine.arn, &theirs.arn));
    (file, key, attacker)
}

#[test]
/// Without a pin, references are read concurrently with the KMS work, so the
/// secret the attacker named may be read; its value is dropped when the MAC
/// fails (an attacker who can write the file could as well re-key it: the pin
/// is what stops that, and under it nothing is read first, below).
fn a_reference_edited_in_the_file_fails_the_mac() {
    let sandbox = Sandbox::new();
    let (file, _, attacker) = reference_pointed_elsewhere(&sandbox);
    let out = sandbox.exec_marker(&[&file]);
    fails_closed(&sandbox, out, &file, &["MAC"], &[&attacker]);
}

/// Under a trust pin a reference is read only once the file verified: whoever
/// edits the file cannot make the caller ask for the secret (or the account)
/// they chose. Counted at the proxy: no Secrets Manager call at all.
#[test]
fn under_a_trust_pin_an_edited_reference_is_never_read() {
    let sandbox = Sandbox::new();
    let (file, key, attacker) = reference_pointed_elsewhere(&sandbox);
    let proxy = Proxy::start();
    let out = exec_marker_via(&sandbox, &proxy, &["--trust-key", &key], &file);
    fails_closed(&sandbox, out, &file, &["MAC"], &[&attacker]);
    assert!(
        proxy.count_op("Decrypt") >= 1,
        "the data key was asked for: {}",
        proxy.counts()
    );
    for op in ["BatchGetSecretValue", "GetSecretValue"] {
        assert_eq!(
            proxy.count_op(op),
            0,
            "{op} before the MAC verified: {}",
            proxy.counts()
        );
    }
}

/// Each field of a reference decides what the program gets, so each is under
/// the MAC: added, changed, or the kind swapped, by someone without the data key.
#[test]
fn every_field_of_a_reference_is_under_the_mac() {
    let sandbox = Sandbox::new();
    let s = secret(r#"{"password":"p","other":"o"}"#);
    let (file, _) = keyed_with_reference(&sandbox, &s);
    let original = sandbox.read(&file);
    let line = entry_line(&original, "DB_PASSWORD").to_string();
    let edits = [
        line.replacen(" }", ", json_key = \"other\" }", 1),
        line.replacen(" }", ", version_stage = \"AWSPREVIOUS\" }", 1),
        line.replacen(" }", ", file = true }", 1),
        "DB_PASSWORD = { ssm = \"/prod/db\" }".to_string(),
        "DB_PASSWORD = { ssm = \"/prod/db:2\", type = \"String\" }".to_string(),
        line.replacen("DB_PASSWORD", "DB_PASSWORD_OLD", 1),
    ];
    for edited in edits {
        assert_ne!(edited, line);
        sandbox.write(&file, &replace_once(&original, &line, &edited));
        let out = sandbox.exec_marker(&[&file]);
        fails_closed(&sandbox, out, &file, &["MAC"], &[]);
    }
}

#[test]
fn a_json_key_added_in_the_file_fails_the_mac() {
    let sandbox = Sandbox::new();
    let s = secret(r#"{"password":"p","other":"o"}"#);
    let (file, _) = keyed_with_reference(&sandbox, &s);
    let text = sandbox.read(&file);
    let line = entry_line(&text, "DB_PASSWORD").to_string();
    let edited = line.replacen(" }", ", json_key = \"other\" }", 1);
    assert_ne!(line, edited);
    sandbox.write(&file, &replace_once(&text, &line, &edited));
    let out = sandbox.exec_marker(&[&file]);
    fails_closed(&sandbox, out, &file, &[], &[]);
}

#[test]
fn a_template_composes_a_database_url_from_sealed_values_and_a_managed_password() {
    let sandbox = Sandbox::new();
    let password = canary("managed");
    let s = secret(&format!(r#"{{"username":"admin","password":"{password}"}}"#));
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set_with(&file, &["--plain"], "DB_HOST", b"db.internal");
    sandbox.set(&file, "DB_USER", b"app");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--secret", "DB_PASSWORD", &s.arn, "--json-key", "password"])
        .run()
        .ok();
    sandbox.set_with(
        &file,
        &["--template"],
        "DATABASE_URL",
        b"postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/app",
    );

    let env = sandbox.exec_env(&[&file]);
    assert_eq!(
        env["DATABASE_URL"],
        format!("postgres://app:{password}@db.internal/app").as_bytes()
    );

    // After rotation, the next start composes the new password.
    let rotated = canary("rotated");
    moto().put_secret_value(
        REGION,
        &s.arn,
        SecretValue::Text(&format!(r#"{{"username":"admin","password":"{rotated}"}}"#)),
        &[],
    );
    let got = sandbox
        .kmsenv()
        .file(&file)
        .args(["get", "DATABASE_URL"])
        .run()
        .ok();
    assert_eq!(
        got.stdout,
        format!("postgres://app:{rotated}@db.internal/app").as_bytes()
    );
    assert!(!sandbox.read(&file).contains(&rotated));
}

#[test]
fn a_template_over_a_failing_reference_fails_closed_naming_the_reference() {
    let sandbox = Sandbox::new();
    let s = secret("pw");
    let (file, _) = keyed_with_reference(&sandbox, &s);
    sandbox.set_with(
        &file,
        &["--template"],
        "DATABASE_URL",
        b"${DB_USER}:${DB_PASSWORD}@${DB_HOST}",
    );
    fails_through(
        &sandbox,
        &file,
        r#"[{"service": "secretsmanager", "action": "error", "code": "AccessDeniedException"}]"#,
        &[],
        &["DB_PASSWORD", &s.arn, "AccessDeniedException"],
        &[],
    );
}

#[test]
fn a_secret_reference_runs_under_a_trust_pin() {
    let sandbox = Sandbox::new();
    let value = canary("v");
    let s = secret(&value);
    let (file, key) = keyed_with_reference(&sandbox, &s);
    assert_eq!(pinned_env(&sandbox, &key, &file)["DB_PASSWORD"], value.as_bytes());
}

/// Under a trust pin the file must verify through a trusted key: a keyless file
/// of references proves nothing about who wrote them.
#[test]
fn a_keyless_file_of_references_is_refused_under_a_trust_pin() {
    let sandbox = Sandbox::new();
    let s = secret("v");
    let file = keyless(&sandbox, "kmsenv.toml", &[secret_ref("DB_PASSWORD", &s.arn, &[])]);
    let out = pinned_marker(&sandbox, &sandbox.key(), &file);
    fails_closed(&sandbox, out, &file, &[], &[]);
}

#[test]
fn list_shows_references_without_reading_them_and_check_reads_them() {
    let sandbox = Sandbox::new();
    let value = canary("v");
    let s = secret(&format!(r#"{{"password":"{value}"}}"#));
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--secret", "DB_PASSWORD", &s.arn, "--json-key", "password"])
        .run()
        .ok();
    let proxy = Proxy::start();

    let list = via(&sandbox, &proxy, &[]).file(&file).arg("list").run().ok();
    let text = list.stdout_text();
    let line = text
        .lines()
        .find(|l| l.contains("DB_PASSWORD"))
        .unwrap_or_else(|| panic!("list names DB_PASSWORD: {text}"));
    assert!(line.contains(&s.arn), "list shows the reference: {line}");
    assert!(line.contains("password"), "list shows the json_key: {line}");
    assert_no_secret(&list, &[&value]);
    assert_eq!(
        proxy.count_op("BatchGetSecretValue") + proxy.count_op("GetSecretValue"),
        0,
        "list reads no secret: {}",
        proxy.counts()
    );

    let check = via(&sandbox, &proxy, &[]).file(&file).arg("check").run().ok();
    assert_no_secret(&check, &[&value]);
    assert_eq!(
        proxy.count_op("BatchGetSecretValue"),
        1,
        "check reads it: {}",
        proxy.counts()
    );
    let reported = format!("{}: 1 reference read ok", file.display());
    assert!(check.stdout_text().contains(&reported), "{}", check.stdout_text());

    proxy.rules(r#"[{"service": "secretsmanager", "action": "error", "code": "AccessDeniedException"}]"#);
    let failed = via(&sandbox, &proxy, &[]).file(&file).arg("check").run();
    assert_ne!(
        failed.code(),
        Some(0),
        "check fails when a reference cannot be read"
    );
    assert!(
        failed.stderr.contains("DB_PASSWORD") && failed.stderr.contains("AccessDeniedException"),
        "{}",
        failed.stderr
    );
}

// ---------------------------------------------------------------------------
// SSM Parameter Store (cargo feature `ssm`)

#[cfg(feature = "ssm")]
mod ssm {
    use super::*;

    /// A new parameter under a unique path: (name, version).
    fn parameter(value: &str, kind: &str) -> (String, u64) {
        let name = unique_name("/prod/app/p");
        let version = moto().put_parameter(REGION, &name, value, kind);
        (name, version)
    }

    fn ssm_ref(name: &str, target: &str, extra: &[&str]) -> Ref {
        reference(name, "ssm", target, extra)
    }

    #[test]
    fn ten_parameter_references_take_one_call() {
        let sandbox = Sandbox::new();
        let params: Vec<(String, String)> = (0..10)
            .map(|i| {
                let value = format!("value-{i}-{}", support::random::random_hex(4));
                (parameter(&value, "SecureString").0, value)
            })
            .collect();
        let entries: Vec<Ref> = params
            .iter()
            .enumerate()
            .map(|(i, (name, _))| ssm_ref(&format!("P{i}"), name, &[]))
            .collect();
        let file = refs_file(&sandbox, "kmsenv.toml", &entries);
        let proxy = Proxy::start();

        let env = env_via(&sandbox, &proxy, &file);

        assert_named(
            &env,
            params.iter().enumerate().map(|(i, (_, v))| (format!("P{i}"), v)),
        );
        assert_eq!(proxy.count_op("GetParameters"), 1, "{}", proxy.counts());
    }

    #[test]
    fn eleven_parameter_references_take_two_calls_and_duplicates_one_name() {
        let sandbox = Sandbox::new();
        let names: Vec<String> = (0..11)
            .map(|i| parameter(&format!("v{i}"), "SecureString").0)
            .collect();
        let mut entries: Vec<Ref> = names
            .iter()
            .enumerate()
            .map(|(i, name)| ssm_ref(&format!("P{i:02}"), name, &[]))
            .collect();
        entries.push(ssm_ref("TWICE", &names[3], &[]));
        let file = refs_file(&sandbox, "kmsenv.toml", &entries);
        let proxy = Proxy::start();

        let env = env_via(&sandbox, &proxy, &file);

        assert_values(&env, &[("P03", b"v3"), ("TWICE", b"v3"), ("P10", b"v10")]);
        assert_eq!(proxy.count_op("GetParameters"), 2, "{}", proxy.counts());
    }

    #[test]
    fn version_and_label_selectors_read_that_version() {
        let sandbox = Sandbox::new();
        let (name, first) = parameter("one", "SecureString");
        let second = moto().put_parameter(REGION, &name, "two", "SecureString");
        moto().put_parameter(REGION, &name, "three", "SecureString");
        moto().label_parameter(REGION, &name, second, &["stable"]);
        let file = refs_file(
            &sandbox,
            "kmsenv.toml",
            &[
                ssm_ref("LATEST", &name, &[]),
                ssm_ref("FIRST", &format!("{name}:{first}"), &[]),
                ssm_ref("STABLE", &format!("{name}:stable"), &[]),
                ssm_ref(
                    "BY_ARN",
                    &format!("{}:{first}", parameter_arn(REGION, &name)),
                    &[],
                ),
            ],
        );
        let proxy = Proxy::start();

        let env = env_via(&sandbox, &proxy, &file);

        assert_values(
            &env,
            &[
                ("LATEST", b"three"),
                ("FIRST", b"one"),
                ("STABLE", b"two"),
                ("BY_ARN", b"one"),
            ],
        );
        assert!(
            proxy.count_op("GetParameters") >= 1,
            "read through the proxy: {}",
            proxy.counts()
        );
    }

    #[test]
    fn a_parameter_arn_reference_resolves() {
        let sandbox = Sandbox::new();
        let value = canary("p");
        let (name, _) = parameter(&value, "SecureString");
        let arn = parameter_arn(REGION, &name);
        let file = refs_file(&sandbox, "kmsenv.toml", &[ssm_ref("BY_ARN", &arn, &[])]);
        let proxy = Proxy::start();
        assert_eq!(env_via(&sandbox, &proxy, &file)["BY_ARN"], value.as_bytes());
    }

    /// `file = true`: the program gets a path, the file holds the parameter's value.
    #[test]
    fn a_parameter_with_file_true_is_delivered_as_a_file() {
        let sandbox = Sandbox::new();
        let value = canary("pfile");
        let (name, _) = parameter(&value, "SecureString");
        let file = refs_file(
            &sandbox,
            "kmsenv.toml",
            &[ssm_ref("P_FILE", &name, &["file = true"])],
        );
        let proxy = Proxy::start();

        let out = via(&sandbox, &proxy, &[])
            .file(&file)
            .args([
                "exec",
                "--",
                "sh",
                "-c",
                "case \"$P_FILE\" in /*) cat \"$P_FILE\";; *) exit 9;; esac",
            ])
            .run()
            .ok();

        assert_eq!(
            out.stdout,
            value.as_bytes(),
            "the file holds the parameter's value"
        );
    }

    #[test]
    fn a_string_parameter_needs_type_string_and_a_string_list_is_refused() {
        let sandbox = Sandbox::new();
        let (string, _) = parameter("plain-text", "String");
        let (list, _) = parameter("a,b,c", "StringList");
        let proxy = Proxy::start();

        let refused = refs_file(&sandbox, "string.toml", &[ssm_ref("S", &string, &[])]);
        let out = exec_marker_via(&sandbox, &proxy, &[], &refused);
        fails_closed(&sandbox, out, &refused, &["S", &string, "String"], &[]);

        let accepted = refs_file(
            &sandbox,
            "typed.toml",
            &[ssm_ref("S", &string, &["type = \"String\""])],
        );
        assert_eq!(env_via(&sandbox, &proxy, &accepted)["S"], b"plain-text");

        for (i, extra) in [&[][..], &["type = \"String\""][..]].into_iter().enumerate() {
            let file = refs_file(&sandbox, &format!("list{i}.toml"), &[ssm_ref("L", &list, extra)]);
            let out = exec_marker_via(&sandbox, &proxy, &[], &file);
            fails_closed(&sandbox, out, &file, &["L", &list, "StringList"], &["a,b,c"]);
        }
    }

    #[test]
    fn a_missing_parameter_or_version_fails_closed_naming_variable_reference_and_code() {
        let sandbox = Sandbox::new();
        let value = canary("p");
        let (name, _) = parameter(&value, "SecureString");
        let proxy = Proxy::start();
        for (i, target) in [
            unique_name("/prod/app/none"),
            format!("{name}:9"),
            format!("{name}:nolabel"),
        ]
        .iter()
        .enumerate()
        {
            let file = refs_file(
                &sandbox,
                &format!("case{i}.toml"),
                &[ssm_ref("OK", &name, &[]), ssm_ref("MISSING", target, &[])],
            );
            let out = exec_marker_via(&sandbox, &proxy, &[], &file);
            fails_closed(
                &sandbox,
                out,
                &file,
                &["MISSING", target, "InvalidParameters"],
                &[&value],
            );
        }
    }

    #[test]
    fn a_parameter_silently_missing_or_renamed_in_the_answer_fails_closed() {
        let sandbox = Sandbox::new();
        let (a, b) = (canary("a"), canary("b"));
        let (na, _) = parameter(&a, "SecureString");
        let (nb, _) = parameter(&b, "SecureString");
        let file = refs_file(
            &sandbox,
            "kmsenv.toml",
            &[ssm_ref("A", &na, &[]), ssm_ref("B", &nb, &[])],
        );
        let (proxy, _) = fails_through(
            &sandbox,
            &file,
            &one_rule(&format!(
                r#"{{"op": "GetParameters", "action": "drop_item", "item": "{nb}"}}"#
            )),
            &[],
            &["B", &nb],
            &[&a, &b],
        );

        proxy.rules(r#"[{"op": "GetParameters", "action": "reorder"}]"#);
        assert_values(
            &env_via(&sandbox, &proxy, &file),
            &[("A", a.as_bytes()), ("B", b.as_bytes())],
        );

        // Names swapped: matched by name, so each value would go to the other variable
        // unless kmsenv checks the answer's ARN too; either the right values or 125.
        proxy.rules(r#"[{"op": "GetParameters", "action": "swap_names"}]"#);
        let out = via(&sandbox, &proxy, &[])
            .file(&file)
            .args(["exec", "--", "env", "-0"])
            .run();
        if out.code() == Some(125) {
            assert_no_secret(&out, &[&a, &b]);
        } else {
            assert_values(&out.ok().env0(), &[("A", a.as_bytes()), ("B", b.as_bytes())]);
        }
    }

    #[test]
    fn a_parameter_arn_answered_from_another_account_fails_closed() {
        let sandbox = Sandbox::new();
        let value = canary("p");
        let (name, _) = parameter(&value, "SecureString");
        let arn = parameter_arn(REGION, &name);
        let file = refs_file(&sandbox, "kmsenv.toml", &[ssm_ref("P", &arn, &[])]);
        fails_through(
            &sandbox,
            &file,
            r#"[{"op": "GetParameters", "action": "foreign_arn", "arn_account": "999999999999"}]"#,
            &[],
            &["P", &arn],
            &[&value],
        );
    }

    #[test]
    fn ssm_throttling_kms_errors_and_hangs() {
        let sandbox = Sandbox::new();
        let value = canary("p");
        let (name, _) = parameter(&value, "SecureString");
        let file = refs_file(&sandbox, "kmsenv.toml", &[ssm_ref("P", &name, &[])]);
        let proxy = Proxy::start();
        proxy.rules(
            r#"[{"op": "GetParameters", "times": 2, "action": "error", "code": "ThrottlingException"}]"#,
        );
        assert_eq!(env_via(&sandbox, &proxy, &file)["P"], value.as_bytes());
        assert_eq!(proxy.count_op("GetParameters"), 3, "{}", proxy.counts());

        for code in ["InvalidKeyId", "AccessDeniedException"] {
            proxy.rules(&one_rule(&format!(
                r#"{{"op": "GetParameters", "action": "error", "code": "{code}"}}"#
            )));
            let out = exec_marker_via(&sandbox, &proxy, &[], &file);
            fails_closed(&sandbox, out, &file, &["P", &name, code], &[&value]);
        }

        proxy.rules(
            r#"[{"op": "GetParameters", "action": "error", "code": "ThrottlingException", "ms": 1000}]"#,
        );
        let out = exec_marker_via(&sandbox, &proxy, &["--timeout", "4"], &file);
        fails_closed(
            &sandbox,
            out,
            &file,
            &["P", &name, "ThrottlingException"],
            &[&value],
        );

        proxy.rules(r#"[{"service": "AmazonSSM", "action": "hang"}]"#);
        let out = exec_marker_via(&sandbox, &proxy, &["--timeout", "3"], &file);
        fails_closed(
            &sandbox,
            out,
            &file,
            &["P", &name, "GetParameters", "--timeout"],
            &[&value],
        );
    }

    #[test]
    fn a_name_only_parameter_is_refused_under_a_trust_pin_and_an_arn_runs() {
        let sandbox = Sandbox::new();
        let value = canary("p");
        let (name, _) = parameter(&value, "SecureString");
        let (file, key) = sandbox.new_file("kmsenv.toml");
        sandbox
            .kmsenv()
            .file(&file)
            .args(["set", "--ssm", "BY_NAME", &name])
            .run()
            .ok();
        let out = pinned_marker(&sandbox, &key, &file);
        fails_closed(&sandbox, out, &file, &["BY_NAME", &name], &[&value]);

        // Moto takes no parameter ARN: the proxy answers for it as SSM does.
        let proxy = Proxy::start();
        let (arn_file, arn_key) = sandbox.new_file("arn.toml");
        let arn = parameter_arn(REGION, &name);
        via(&sandbox, &proxy, &[])
            .file(&arn_file)
            .args(["set", "--ssm", "BY_ARN", &arn])
            .run()
            .ok();
        let env = pinned(&sandbox, &arn_key)
            .all_endpoints(&proxy.endpoint())
            .file(&arn_file)
            .args(["exec", "--", "env", "-0"])
            .run()
            .ok()
            .env0();
        assert_eq!(env["BY_ARN"], value.as_bytes());
    }

    #[test]
    fn set_ssm_writes_the_reference_after_a_test_read_and_list_shows_it() {
        let sandbox = Sandbox::new();
        let value = canary("p");
        let (name, _) = parameter(&value, "SecureString");
        let (string, _) = parameter("text", "String");
        let (file, _) = sandbox.new_file("kmsenv.toml");
        let proxy = Proxy::start();

        via(&sandbox, &proxy, &[])
            .file(&file)
            .args(["set", "--ssm", "P", &name])
            .run()
            .ok();
        assert_eq!(
            proxy.count_op("GetParameters"),
            1,
            "a test read: {}",
            proxy.counts()
        );
        via(&sandbox, &proxy, &[])
            .file(&file)
            .args(["set", "--ssm", "S", &string])
            .run()
            .kmsenv_error(&["S", &string, "String"]);
        via(&sandbox, &proxy, &[])
            .file(&file)
            .args(["set", "--ssm", "S", &string, "--type", "String"])
            .run()
            .ok();
        let missing = unique_name("/prod/none");
        via(&sandbox, &proxy, &[])
            .file(&file)
            .args(["set", "--ssm", "M", &missing])
            .run()
            .kmsenv_error(&["M", &missing]);

        let text = sandbox.read(&file);
        assert_eq!(quoted_field(entry_line(&text, "P"), "ssm"), name);
        assert_eq!(quoted_field(entry_line(&text, "S"), "type"), "String");
        assert!(!has_entry(&text, "M"));
        let list = sandbox.kmsenv().file(&file).arg("list").run().ok();
        assert!(list.stdout_text().contains(&name), "{}", list.stdout_text());
        assert_no_secret(&list, &[&value]);
        assert_values(
            &sandbox.exec_env(&[&file]),
            &[("P", value.as_bytes()), ("S", b"text")],
        );
    }

    #[test]
    fn secret_and_parameter_references_resolve_together_with_sealed_values() {
        let sandbox = Sandbox::new();
        let (sv, pv) = (canary("s"), canary("p"));
        let s = secret(&sv);
        let (name, _) = parameter(&pv, "SecureString");
        let (file, _) = sandbox.file_with("kmsenv.toml", &[sealed("SEALED", b"sealed-value")]);
        sandbox
            .kmsenv()
            .file(&file)
            .args(["set", "--secret", "S", &s.arn])
            .run()
            .ok();
        sandbox
            .kmsenv()
            .file(&file)
            .args(["set", "--ssm", "P", &name])
            .run()
            .ok();
        assert_values(
            &sandbox.exec_env(&[&file]),
            &[
                ("SEALED", b"sealed-value"),
                ("S", sv.as_bytes()),
                ("P", pv.as_bytes()),
            ],
        );
    }
}

// ---------------------------------------------------------------------------
// The default build: SSM references fail closed, pointing at kmsenv-full

#[cfg(not(feature = "ssm"))]
#[test]
fn the_default_build_refuses_an_ssm_reference_pointing_at_kmsenv_full() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    // Written by hand into a keyed file would fail the MAC, and `set --ssm` makes a
    // test read, which this build cannot: write it unverified.
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "--ssm", "P", "/prod/app/db_password", "--no-verify"])
        .run()
        .ok();
    let proxy = Proxy::start();
    let out = exec_marker_via(&sandbox, &proxy, &[], &file);
    // The first line says what failed; the hint after it names the binary that can.
    let out = fails_closed(&sandbox, out, &file, &["P", "/prod/app/db_password"], &[]);
    out.stderr_has("kmsenv-full");
    assert_eq!(proxy.count_op("GetParameters"), 0, "{}", proxy.counts());
}
