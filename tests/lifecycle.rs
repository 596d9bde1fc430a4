//! The life of a file after `init`: `rotate` (also interrupted), `keys add/remove`,
//! two wrapping keys, `set --ciphertext` from the AWS CLI, `list --values-hash` as a
//! git textconv, ciphertexts that stay put through every write, and `check
//! --fix-mac` after a merge.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use support::random::Rng;
use support::*;

const WEST: &str = "us-west-2";

/// The values of [`populated`], as exec must deliver them.
const VALUES: &[(&str, &[u8])] = &[
    ("DATABASE_URL", b"postgres://billing:s3cret@db/billing"),
    ("API_TOKEN", b"tok-\xff\x01 with\nnewline and \"quotes\""),
    ("LOG_LEVEL", b"info"),
    ("PARTNER_KEY", b"partner-secret-0042"),
];
const SEALED_NAMES: &[&str] = &["DATABASE_URL", "API_TOKEN"];
const TOP_COMMENT: &str = "# owned by the billing team: ask #billing before rotating";
const ENV_COMMENT: &str = "# the values below are rotated quarterly";

/// A file with two sealed values, a plain one, a direct `kms` one and two user
/// comments: (path, key ARN).
fn populated(sandbox: &Sandbox) -> (PathBuf, String) {
    let (file, key) = sandbox.file_with(
        "kmsenv.toml",
        &[
            sealed("DATABASE_URL", VALUES[0].1),
            sealed("API_TOKEN", VALUES[1].1),
            plain("LOG_LEVEL", VALUES[2].1),
            direct("PARTNER_KEY", VALUES[3].1),
        ],
    );
    let text = sandbox.read(&file);
    let text = format!("{TOP_COMMENT}\n{}", insert_in_env(&text, ENV_COMMENT));
    sandbox.write(&file, &text);
    sandbox.kmsenv().file(&file).arg("check").run().ok();
    (file, key)
}

fn rotate(sandbox: &Sandbox, file: &Path) -> Output {
    sandbox.kmsenv().file(file).arg("rotate").run().ok()
}

fn check(sandbox: &Sandbox, file: &Path) -> Output {
    sandbox.kmsenv().file(file).arg("check").run()
}

/// Every `data_key` blob of the file, in order.
fn data_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.trim_start().starts_with("data_key"))
        .map(|line| quoted_field(line, "data_key"))
        .collect()
}

/// Every wrapping key ARN of the file, in order.
fn arns(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.trim_start().starts_with("arn"))
        .map(|line| quoted_field(line, "arn"))
        .collect()
}

fn region_of(arn: &str) -> &str {
    arn.split(':').nth(3).expect("an ARN has a region")
}

/// The plaintext data key inside a `data_key` blob, unwrapped through moto with the
/// data-key context of a file that has no context of its own.
fn unwrap_data_key(arn: &str, blob: &str) -> Vec<u8> {
    moto()
        .decrypt(region_of(arn), blob, &[("kmsenv:purpose", "data-key")])
        .unwrap_or_else(|e| panic!("moto could not unwrap the data key under {arn}: {e:?}"))
}

fn copy_file(sandbox: &Sandbox, from: &Path, name: &str) -> PathBuf {
    let to = sandbox.path(name);
    std::fs::copy(from, &to).expect("copy the kmsenv file");
    to
}

// ---------------------------------------------------------------------------
// rotate

#[test]
fn rotate_gives_every_sealed_value_a_new_ciphertext() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);
    let before = sandbox.read(&file);

    rotate(&sandbox, &file);

    let after = sandbox.read(&file);
    for name in SEALED_NAMES {
        assert_ne!(
            sealed_of(&before, name),
            sealed_of(&after, name),
            "{name} should be re-sealed under the new data key"
        );
    }
}

#[test]
fn rotate_keeps_every_value_byte_for_byte() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);

    rotate(&sandbox, &file);

    assert_values(&sandbox.exec_env(&[&file]), VALUES);
}

#[test]
fn rotate_replaces_the_data_key_inside_the_wrapping() {
    let sandbox = Sandbox::new();
    let (file, key) = populated(&sandbox);
    let before = data_keys(&sandbox.read(&file));

    rotate(&sandbox, &file);

    let after = data_keys(&sandbox.read(&file));
    assert_eq!((before.len(), after.len()), (1, 1));
    assert_ne!(before[0], after[0], "the data_key blob should change");
    let (old, new) = (
        unwrap_data_key(&key, &before[0]),
        unwrap_data_key(&key, &after[0]),
    );
    assert_eq!(new.len(), 32, "a data key is 256 bits");
    assert_ne!(old, new, "the wrapped data key itself should be a new one");
}

#[test]
fn rotate_leaves_direct_kms_values_byte_identical_without_kms_values() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);
    let before = sandbox.read(&file);

    rotate(&sandbox, &file);

    let after = sandbox.read(&file);
    assert_eq!(
        entry_line(&before, "PARTNER_KEY"),
        entry_line(&after, "PARTNER_KEY")
    );
    assert_eq!(entry_line(&before, "LOG_LEVEL"), entry_line(&after, "LOG_LEVEL"));
}

#[test]
fn rotate_keeps_user_comments() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);

    rotate(&sandbox, &file);

    let after = sandbox.read(&file);
    assert!(after.starts_with(TOP_COMMENT), "{after}");
    assert!(after.contains(ENV_COMMENT), "{after}");
}

#[test]
fn check_passes_after_rotate() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);

    rotate(&sandbox, &file);

    let out = check(&sandbox, &file).ok();
    for (name, _) in VALUES {
        assert!(
            out.stdout_text().contains(&format!("{name} ok")),
            "{}",
            out.stdout_text()
        );
    }
}

#[test]
fn rotate_keeps_the_file_flag_of_as_file_values() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let pem = b"-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n";
    sandbox.set_with(&file, &["--as-file"], "TLS_KEY", pem);
    let before = sandbox.read(&file);
    assert!(entry_line(&before, "TLS_KEY").contains("file = true"), "{before}");

    rotate(&sandbox, &file);

    let after = sandbox.read(&file);
    assert_ne!(sealed_of(&before, "TLS_KEY"), sealed_of(&after, "TLS_KEY"));
    assert!(entry_line(&after, "TLS_KEY").contains("file = true"), "{after}");
    let out = sandbox.kmsenv().file(&file).args(["get", "TLS_KEY"]).run().ok();
    assert_eq!(out.stdout, pem);
}

#[test]
fn a_sealed_value_from_before_rotate_fails_closed_after_it() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);
    let old_sealed = sealed_of(&sandbox.read(&file), "DATABASE_URL");
    rotate(&sandbox, &file);
    let text = sandbox.read(&file);
    let new_sealed = sealed_of(&text, "DATABASE_URL");
    sandbox.write(&file, &replace_once(&text, &new_sealed, &old_sealed));

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&[&file.display().to_string()]);
    sandbox.assert_command_did_not_run();
    // Not only the MAC: --fix-mac, which ignores the old MAC, cannot open it either.
    sandbox
        .kmsenv()
        .file(&file)
        .args(["check", "--fix-mac"])
        .run()
        .kmsenv_error(&["DATABASE_URL"]);
}

/// `rotate --kms-values` of a direct value made with `set --kms --key SECOND`, where
/// SECOND is a new key in `region`.
fn rotate_kms_values_moves_a_direct_value_to_the_first_key(region: &str) {
    let sandbox = Sandbox::new();
    let (file, first) = sandbox.new_file("kmsenv.toml");
    let second = create_key(region);
    sandbox.set(&file, "SEALED", b"sealed-value");
    sandbox.set_with(
        &file,
        &["--kms", "--key", &second],
        "PARTNER_KEY",
        b"partner-secret",
    );
    let before = sandbox.read(&file);
    assert_eq!(quoted_field(entry_line(&before, "PARTNER_KEY"), "key"), second);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["rotate", "--kms-values"])
        .run()
        .ok();

    let after = sandbox.read(&file);
    let line = entry_line(&after, "PARTNER_KEY");
    assert_eq!(
        quoted_field(line, "key"),
        first,
        "re-encrypted to the first key: {line}"
    );
    assert_ne!(kms_of(&before, "PARTNER_KEY"), kms_of(&after, "PARTNER_KEY"));
    let context = |line: &str| line[line.find("context").expect("a context")..].to_string();
    assert_eq!(context(line), context(entry_line(&before, "PARTNER_KEY")));
    assert!(line.contains("\"kmsenv:var\" = \"PARTNER_KEY\""), "{line}");
    assert_values(
        &sandbox.exec_env(&[&file]),
        &[("PARTNER_KEY", b"partner-secret"), ("SEALED", b"sealed-value")],
    );
}

#[test]
fn rotate_kms_values_reencrypts_a_direct_value_to_the_first_key() {
    rotate_kms_values_moves_a_direct_value_to_the_first_key(REGION);
}

#[test]
fn rotate_kms_values_reencrypts_a_direct_value_from_another_region() {
    rotate_kms_values_moves_a_direct_value_to_the_first_key(WEST);
}

#[test]
fn rotate_with_two_wrapping_keys_replaces_both_and_opens_through_either() {
    let sandbox = Sandbox::new();
    let (east, west) = (sandbox.key(), create_key(WEST));
    let file = sandbox.init("kmsenv.toml", &[&east, &west]);
    sandbox.set(&file, "DATABASE_URL", b"postgres://db");
    let before = data_keys(&sandbox.read(&file));

    rotate(&sandbox, &file);

    let text = sandbox.read(&file);
    let after = data_keys(&text);
    assert_eq!(arns(&text), [east.clone(), west.clone()]);
    assert_eq!(after.len(), 2);
    assert_ne!(before[0], after[0], "the first wrapping should be replaced");
    assert_ne!(before[1], after[1], "the second wrapping should be replaced");
    assert_eq!(
        unwrap_data_key(&east, &after[0]),
        unwrap_data_key(&west, &after[1])
    );
    for (name, removed) in [("only-west.toml", &east), ("only-east.toml", &west)] {
        let copy = copy_file(&sandbox, &file, name);
        sandbox
            .kmsenv()
            .file(&copy)
            .args(["keys", "remove", removed])
            .run()
            .ok();
        assert_eq!(arns(&sandbox.read(&copy)).len(), 1);
        assert_values(&sandbox.exec_env(&[&copy]), &[("DATABASE_URL", b"postgres://db")]);
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read the sandbox")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(".kmsenv.toml.kmsenv-") && name.ends_with(".tmp")
        })
        .collect()
}

#[test]
fn rotate_killed_at_any_moment_leaves_a_valid_file_with_the_same_values() {
    const ROUNDS: u64 = 30;
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);
    let started = Instant::now();
    rotate(&sandbox, &file);
    // Kill points spread over 0 .. 1.5 × one rotate's run time.
    let span = (started.elapsed().as_micros() as u64 * 3 / 2).max(1);
    // A reproducible sequence of kill delays.
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let (mut killed, mut completed, mut killed_after_commit, mut temp_left) = (0, 0, 0, 0);
    let mut previous = sandbox.read(&file);

    for round in 0..ROUNDS {
        let delay = if round == 0 { 0 } else { rng.next() % span };
        let (mut child, what) = sandbox.kmsenv().file(&file).arg("rotate").spawn_piped();
        drop(child.stdin.take());
        if delay > 0 {
            // The kill point itself, not a synchronisation.
            std::thread::sleep(Duration::from_micros(delay));
        }
        let _ = child.kill();
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"));
        let text = sandbox.read(&file);
        let keys = data_keys(&text);
        let rotated = !keys.is_empty() && keys != data_keys(&previous);
        match (status.signal(), status.code()) {
            (Some(9), _) => {
                killed += 1;
                if rotated {
                    killed_after_commit += 1;
                }
            }
            (_, Some(0)) => {
                completed += 1;
                assert!(rotated, "round {round}: rotate exited 0 without a new data key");
            }
            _ => panic!("round {round} (kill after {delay} µs): rotate failed: {status:?}"),
        }
        assert!(
            text == previous || rotated,
            "round {round}: the file is neither the old one nor a rotated one:\n{text}"
        );
        check(&sandbox, &file).ok();
        assert_values(&sandbox.exec_env(&[&file]), VALUES);
        let leftovers = temp_files(sandbox.dir.path());
        assert!(
            leftovers.len() <= 1,
            "round {round}: more than the killed process's temporary file: {leftovers:?}"
        );
        temp_left += leftovers.len();
        for leftover in leftovers {
            std::fs::remove_file(leftover).expect("remove the killed rotate's temporary file");
        }
        previous = text;
    }

    eprintln!(
        "rotate killed {ROUNDS} times over 0..{span} µs: {killed} kills landed mid-run \
         ({killed_after_commit} of them after the new file was in place, {temp_left} leaving a temporary file), \
         {completed} runs had completed"
    );
    assert!(killed >= 1, "no kill landed while rotate was running");
}

// ---------------------------------------------------------------------------
// keys

#[test]
fn keys_add_of_a_key_in_another_region_is_listed_with_its_region() {
    let sandbox = Sandbox::new();
    let (file, east) = sandbox.new_file("kmsenv.toml");
    let west = create_key(WEST);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["keys", "add", &west])
        .run()
        .ok();

    let out = sandbox.kmsenv().file(&file).args(["keys", "list"]).run().ok();
    let listing = out.stdout_text();
    let line_of = |arn: &str| {
        listing
            .lines()
            .find(|line| line.contains(arn))
            .unwrap_or_else(|| panic!("{arn} not listed:\n{listing}"))
            .to_string()
    };
    assert!(line_of(&east).contains(REGION), "{listing}");
    assert!(line_of(&west).contains(WEST), "{listing}");
    assert_eq!(arns(&sandbox.read(&file)), [east, west]);
}

#[test]
fn keys_remove_of_the_old_key_leaves_a_file_that_opens_with_the_new_one() {
    let sandbox = Sandbox::new();
    let (file, east) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "DATABASE_URL", b"postgres://db");
    let west = create_key(WEST);
    sandbox
        .kmsenv()
        .file(&file)
        .args(["keys", "add", &west])
        .run()
        .ok();

    sandbox
        .kmsenv()
        .file(&file)
        .args(["keys", "remove", &east])
        .run()
        .ok();

    assert_eq!(arns(&sandbox.read(&file)), [west]);
    assert_values(&sandbox.exec_env(&[&file]), &[("DATABASE_URL", b"postgres://db")]);
}

#[test]
fn keys_add_of_a_key_that_already_wraps_the_data_key_fails() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["keys", "add", &key])
        .run()
        .kmsenv_error(&[&key]);

    assert_eq!(sandbox.read(&file), before);
}

#[test]
fn keys_remove_refuses_to_remove_the_only_key() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["keys", "remove", &key])
        .run()
        .kmsenv_error(&["only key"]);

    assert_eq!(sandbox.read(&file), before);
}

#[test]
fn keys_remove_of_an_unknown_key_fails() {
    let sandbox = Sandbox::new();
    let (east, west) = (sandbox.key(), create_key(WEST));
    let file = sandbox.init("kmsenv.toml", &[&east, &west]);
    let stranger = sandbox.key();
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["keys", "remove", &stranger])
        .run()
        .kmsenv_error(&[&stranger]);

    assert_eq!(sandbox.read(&file), before);
}

/// A proxy in front of moto whose answers to every Decrypt in `region` are
/// `DisabledException`: that region's key cannot open anything.
fn region_down(region: &str) -> Proxy {
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{{\"op\": \"Decrypt\", \"region\": \"{region}\", \"times\": null, \"action\": \"error\", \"code\": \"DisabledException\"}}]"
    ));
    proxy
}

#[test]
fn keys_remove_is_refused_when_the_remaining_key_cannot_open_the_file() {
    let sandbox = Sandbox::new();
    let (first, second) = (sandbox.key(), create_key(WEST));
    let file = sandbox.init("kmsenv.toml", &[&first, &second]);
    sandbox.set(&file, "DATABASE_URL", b"postgres://db");
    let text = sandbox.read(&file);
    let proxy = region_down(WEST);

    sandbox
        .kmsenv()
        .endpoint(&proxy.endpoint())
        .file(&file)
        .args(["keys", "remove", &first])
        .run()
        .kmsenv_error(&[&file.display().to_string(), &second, "DisabledException"]);

    assert_eq!(sandbox.read(&file), text, "the file should be untouched");
    check(&sandbox, &file).ok();
}

#[test]
fn init_with_two_keys_makes_a_file_that_opens_through_either() {
    let sandbox = Sandbox::new();
    let (east, west) = (sandbox.key(), create_key(WEST));

    let file = sandbox.init("kmsenv.toml", &[&east, &west]);

    sandbox.set(&file, "DATABASE_URL", b"postgres://db");
    let text = sandbox.read(&file);
    assert_eq!(arns(&text), [east.clone(), west.clone()]);
    for down in [REGION, WEST] {
        let proxy = region_down(down);
        let out = sandbox
            .kmsenv()
            .endpoint(&proxy.endpoint())
            .file(&file)
            .args(["exec", "--", "env", "-0"])
            .run()
            .ok();
        assert_values(&out.env0(), &[("DATABASE_URL", b"postgres://db")]);
    }
}

// ---------------------------------------------------------------------------
// set --ciphertext

fn set_ciphertext(sandbox: &Sandbox, file: &Path, flags: &[&str], name: &str, stdin: &[u8]) -> Output {
    sandbox
        .kmsenv()
        .file(file)
        .args(["set", "--ciphertext"])
        .args(flags)
        .arg(name)
        .stdin(stdin)
        .run()
}

#[test]
fn set_ciphertext_stores_aws_cli_base64_output_as_a_direct_value() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let blob = aws_kms_encrypt(&sandbox, &key, b"from-the-aws-cli", None);

    // Exactly what `aws ... --output text |` gives: the blob and a newline.
    set_ciphertext(&sandbox, &file, &[], "API_TOKEN", format!("{blob}\n").as_bytes()).ok();

    assert_eq!(kms_of(&sandbox.read(&file), "API_TOKEN"), blob);
    assert_values(&sandbox.exec_env(&[&file]), &[("API_TOKEN", b"from-the-aws-cli")]);
}

#[test]
fn set_ciphertext_stores_a_raw_binary_blob_as_a_direct_value() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let blob = aws_kms_encrypt(&sandbox, &key, b"raw-binary-blob", None);
    // `| base64 --decode`
    let raw = STANDARD.decode(&blob).expect("the AWS CLI prints base64");

    set_ciphertext(&sandbox, &file, &[], "API_TOKEN", &raw).ok();

    assert_eq!(kms_of(&sandbox.read(&file), "API_TOKEN"), blob);
    assert_values(&sandbox.exec_env(&[&file]), &[("API_TOKEN", b"raw-binary-blob")]);
}

#[test]
fn set_ciphertext_with_context_stores_a_value_encrypted_with_that_context() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let blob = aws_kms_encrypt(&sandbox, &key, b"bound-to-team", Some("team=billing"));

    set_ciphertext(
        &sandbox,
        &file,
        &["--context", "team=billing"],
        "API_TOKEN",
        blob.as_bytes(),
    )
    .ok();

    let text = sandbox.read(&file);
    assert!(
        entry_line(&text, "API_TOKEN").contains("team = \"billing\""),
        "{text}"
    );
    assert_values(&sandbox.exec_env(&[&file]), &[("API_TOKEN", b"bound-to-team")]);
}

#[test]
fn set_ciphertext_refuses_a_blob_that_does_not_decrypt_and_leaves_the_file_unchanged() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let blob = aws_kms_encrypt(&sandbox, &key, b"bound-to-team", Some("team=billing"));
    let before = sandbox.read(&file);

    set_ciphertext(
        &sandbox,
        &file,
        &["--context", "team=payroll"],
        "API_TOKEN",
        blob.as_bytes(),
    )
    .kmsenv_error(&["API_TOKEN", "InvalidCiphertextException"]);

    assert_eq!(sandbox.read(&file), before);
}

#[test]
fn set_ciphertext_no_verify_stores_a_blob_that_does_not_decrypt() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    let blob = aws_kms_encrypt(&sandbox, &key, b"bound-to-team", Some("team=billing"));

    set_ciphertext(&sandbox, &file, &["--no-verify"], "API_TOKEN", blob.as_bytes()).ok();

    assert_eq!(kms_of(&sandbox.read(&file), "API_TOKEN"), blob);
    // Stored without a test Decrypt: it fails closed when used.
    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["API_TOKEN", "InvalidCiphertextException"]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn set_ciphertext_refuses_garbage() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let before = sandbox.read(&file);

    for garbage in [
        &b"garbage, not a ciphertext!"[..],
        b"QUJD=x",
        b"\x00\x01\x02binary junk\xff",
    ] {
        set_ciphertext(&sandbox, &file, &[], "API_TOKEN", garbage).kmsenv_error(&["API_TOKEN"]);
        assert_eq!(
            sandbox.read(&file),
            before,
            "garbage {garbage:?} changed the file"
        );
    }
}

// ---------------------------------------------------------------------------
// list --values-hash

fn values_hash(sandbox: &Sandbox, file: &Path) -> String {
    sandbox
        .kmsenv()
        .file(file)
        .args(["list", "--values-hash"])
        .run()
        .ok()
        .stdout_text()
}

#[test]
fn values_hash_is_stable_across_runs() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);

    let first = values_hash(&sandbox, &file);
    let second = values_hash(&sandbox, &file);

    assert_eq!(first, second);
    for (name, _) in VALUES {
        assert!(
            first.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{first}"
        );
    }
}

#[test]
fn values_hash_changes_only_for_the_entry_that_was_set_again() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);
    let before = values_hash(&sandbox, &file);

    sandbox.set(&file, "DATABASE_URL", b"postgres://billing:n3w@db/billing");

    let after = values_hash(&sandbox, &file);
    let (before, after): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(before.len(), after.len());
    let changed: Vec<(&str, &str)> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (*b, *a))
        .collect();
    assert_eq!(changed.len(), 1, "exactly one line should change: {changed:?}");
    assert!(changed[0].0.starts_with("DATABASE_URL "), "{changed:?}");
    assert!(changed[0].1.starts_with("DATABASE_URL "), "{changed:?}");
}

#[test]
fn values_hash_contains_no_values() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["list", "--values-hash"])
        .run()
        .ok();

    for (name, value) in VALUES {
        assert!(
            !contains_bytes(&out.all_output(), value),
            "the value of {name} appears in the output"
        );
    }
}

#[test]
fn values_hash_needs_no_aws() {
    let sandbox = Sandbox::new();
    let (file, _) = populated(&sandbox);
    let expected = values_hash(&sandbox, &file);
    let closed = format!("http://127.0.0.1:{}", free_port());

    let with_dead_endpoint = sandbox
        .kmsenv()
        .endpoint(&closed)
        .file(&file)
        .args(["--timeout", "5", "list", "--values-hash"])
        .run()
        .ok();
    let without_aws = sandbox
        .kmsenv_without_aws()
        .env("AWS_ENDPOINT_URL_KMS", &closed)
        .file(&file)
        .args(["list", "--values-hash"])
        .run()
        .ok();

    assert_eq!(with_dead_endpoint.stdout_text(), expected);
    assert_eq!(without_aws.stdout_text(), expected);
}

/// A git repository in the sandbox, with no global or system configuration.
struct Repo<'a> {
    sandbox: &'a Sandbox,
    dir: PathBuf,
}

impl<'a> Repo<'a> {
    fn new(sandbox: &'a Sandbox) -> Repo<'a> {
        let dir = sandbox.path("repo");
        std::fs::create_dir(&dir).expect("create the repository folder");
        let repo = Repo { sandbox, dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "kmsenv test"]);
        repo.git(&["config", "user.email", "test@kmsenv.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("git");
        command
            .args(["--no-pager", "-c", "color.ui=false"])
            .args(args)
            .current_dir(&self.dir)
            .env("HOME", self.sandbox.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.sandbox.path("no-global-gitconfig"))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE");
        command
    }

    /// Runs git; returns stdout; panics unless it succeeds.
    #[track_caller]
    fn git(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    fn file(&self) -> PathBuf {
        self.dir.join("kmsenv.toml")
    }
}

#[test]
fn git_diff_through_values_hash_textconv_names_only_the_changed_variable() {
    let sandbox = Sandbox::new();
    let repo = Repo::new(&sandbox);
    let key = sandbox.key();
    let file = repo.file();
    sandbox
        .kmsenv()
        .file(&file)
        .args(["init", "--key", &key])
        .run()
        .ok();
    let values: [(&str, &[u8]); 3] = [
        ("ALPHA", b"alpha-secret-1111"),
        ("BRAVO", b"bravo-secret-2222"),
        ("CHARLIE", b"charlie-secret-3333"),
    ];
    for (name, value) in values {
        sandbox.set(&file, name, value);
    }
    sandbox.write(&repo.dir.join(".gitattributes"), "kmsenv.toml diff=kmsenv\n");
    let textconv = format!("'{}' list --values-hash -f", env!("CARGO_BIN_EXE_kmsenv"));
    repo.git(&["config", "diff.kmsenv.textconv", &textconv]);
    repo.commit_all("secrets");
    let new_value = b"bravo-secret-NEW-9999";

    sandbox.set(&file, "BRAVO", new_value);

    let diff = repo.git(&["diff"]);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-')) && !l.starts_with("+++") && !l.starts_with("---")
        })
        .collect();
    assert_eq!(changed.len(), 2, "one line out, one line in:\n{diff}");
    assert!(changed.iter().any(|l| l.starts_with("-BRAVO ")), "{diff}");
    assert!(changed.iter().any(|l| l.starts_with("+BRAVO ")), "{diff}");
    assert!(
        !diff.contains("mac"),
        "the textconv view should not show the MAC:\n{diff}"
    );
    for (name, value) in values.iter().chain([&("BRAVO", &new_value[..])]) {
        assert!(
            !contains_bytes(diff.as_bytes(), value),
            "the value of {name} appears in git diff"
        );
    }
}

// ---------------------------------------------------------------------------
// Unchanged values keep their ciphertext through every write

const MIXED: &[&str] = &["SEALED_A", "SEALED_B", "PLAIN", "DIRECT", "AS_FILE"];

/// A file with two sealed values, a plain one, a direct `kms` one and an as-file one.
fn mixed(sandbox: &Sandbox) -> PathBuf {
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SEALED_A", b"sealed-a");
    sandbox.set(&file, "SEALED_B", b"sealed-b");
    sandbox.set_with(&file, &["--plain"], "PLAIN", b"plain-value");
    sandbox.set_with(&file, &["--kms"], "DIRECT", b"direct-value");
    sandbox.set_with(&file, &["--as-file"], "AS_FILE", b"as-file-value");
    file
}

/// Asserts that every entry of `MIXED` except `touched` has the same line.
#[track_caller]
fn assert_untouched_lines_kept(before: &str, after: &str, touched: &[&str]) {
    for name in MIXED.iter().filter(|n| !touched.contains(n)) {
        assert_eq!(
            entry_line(before, name),
            entry_line(after, name),
            "the entry {name} should keep its exact text"
        );
    }
}

#[test]
fn unchanged_values_keep_their_ciphertext_through_set() {
    let sandbox = Sandbox::new();
    let file = mixed(&sandbox);
    let before = sandbox.read(&file);

    sandbox.set(&file, "SEALED_A", b"sealed-a-changed");
    sandbox.set(&file, "NEW_ONE", b"new");

    let after = sandbox.read(&file);
    assert_ne!(sealed_of(&before, "SEALED_A"), sealed_of(&after, "SEALED_A"));
    assert_untouched_lines_kept(&before, &after, &["SEALED_A"]);
}

#[test]
fn unchanged_values_keep_their_ciphertext_through_unset() {
    let sandbox = Sandbox::new();
    let file = mixed(&sandbox);
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["unset", "SEALED_A"])
        .run()
        .ok();

    let after = sandbox.read(&file);
    assert!(!has_entry(&after, "SEALED_A"), "{after}");
    assert_untouched_lines_kept(&before, &after, &["SEALED_A"]);
}

#[test]
fn unchanged_values_keep_their_ciphertext_through_import() {
    let sandbox = Sandbox::new();
    let file = mixed(&sandbox);
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .arg("import")
        .stdin("SEALED_A=imported-a\nIMPORTED=new-value\n")
        .run()
        .ok();

    let after = sandbox.read(&file);
    assert!(has_entry(&after, "IMPORTED"), "{after}");
    assert_untouched_lines_kept(&before, &after, &["SEALED_A"]);
    assert_values(&sandbox.exec_env(&[&file]), &[("SEALED_A", b"imported-a")]);
}

#[test]
fn unchanged_values_keep_their_ciphertext_through_keys_add() {
    let sandbox = Sandbox::new();
    let file = mixed(&sandbox);
    let before = sandbox.read(&file);
    let west = create_key(WEST);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["keys", "add", &west])
        .run()
        .ok();

    let after = sandbox.read(&file);
    assert_eq!(arns(&after).len(), 2);
    assert_untouched_lines_kept(&before, &after, &[]);
}

#[test]
fn unchanged_values_keep_their_ciphertext_through_check_fix_mac() {
    let sandbox = Sandbox::new();
    let file = mixed(&sandbox);
    let before = sandbox.read(&file);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["check", "--fix-mac"])
        .run()
        .ok();

    assert_untouched_lines_kept(&before, &sandbox.read(&file), &[]);
}

// ---------------------------------------------------------------------------
// check --fix-mac after a merge

#[derive(Clone, Copy, Debug)]
enum Side {
    Ours,
    Theirs,
}

/// Resolves git's conflict hunks as a person would: the hunk of the `mac` line by
/// taking `mac_side`, every other hunk by keeping both sides. Returns the text and
/// the number of `mac` hunks.
fn resolve_conflicts(text: &str, mac_side: Side) -> (String, usize) {
    let mut out = String::new();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut state = 0; // 0 outside, 1 in ours, 2 in theirs
    let mut mac_hunks = 0;
    for line in text.lines() {
        match state {
            0 if line.starts_with("<<<<<<< ") => state = 1,
            1 if line == "=======" => state = 2,
            2 if line.starts_with(">>>>>>> ") => {
                let is_mac = |side: &Vec<&str>| side.iter().any(|l| l.trim_start().starts_with("mac"));
                let keep: Vec<&str> = if is_mac(&ours) || is_mac(&theirs) {
                    mac_hunks += 1;
                    match mac_side {
                        Side::Ours => ours.clone(),
                        Side::Theirs => theirs.clone(),
                    }
                } else {
                    ours.iter().chain(&theirs).copied().collect()
                };
                for l in keep {
                    out.push_str(l);
                    out.push('\n');
                }
                ours.clear();
                theirs.clear();
                state = 0;
            }
            1 => ours.push(line),
            2 => theirs.push(line),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert_eq!(state, 0, "unterminated conflict in:\n{text}");
    (out, mac_hunks)
}

fn fix_mac_after_a_merge_conflict_on_the_mac_line(side: Side) {
    let sandbox = Sandbox::new();
    let repo = Repo::new(&sandbox);
    let key = sandbox.key();
    let file = repo.file();
    sandbox
        .kmsenv()
        .file(&file)
        .args(["init", "--key", &key])
        .run()
        .ok();
    sandbox.set(&file, "BASE", b"base-value");
    repo.commit_all("base");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    sandbox.set(&file, "ONE", b"one-value");
    repo.commit_all("one");
    repo.git(&["checkout", "-q", "main"]);
    sandbox.set(&file, "TWO", b"two-value");
    repo.commit_all("two");
    let merge = repo
        .command(&["-c", "merge.conflictStyle=merge", "merge", "--no-edit", "feature"])
        .output()
        .expect("run git merge");
    assert!(!merge.status.success(), "the merge should conflict");
    let (resolved, mac_hunks) = resolve_conflicts(&sandbox.read(&file), side);
    assert_eq!(
        mac_hunks,
        1,
        "the mac line should conflict:\n{}",
        sandbox.read(&file)
    );
    sandbox.write(&file, &resolved);
    check(&sandbox, &file).kmsenv_error(&["modified outside kmsenv"]);

    sandbox
        .kmsenv()
        .file(&file)
        .args(["check", "--fix-mac"])
        .run()
        .ok();

    check(&sandbox, &file).ok();
    assert_values(
        &sandbox.exec_env(&[&file]),
        &[
            ("BASE", b"base-value"),
            ("ONE", b"one-value"),
            ("TWO", b"two-value"),
        ],
    );
}

#[test]
fn check_fix_mac_repairs_a_merge_that_took_our_mac() {
    fix_mac_after_a_merge_conflict_on_the_mac_line(Side::Ours);
}

#[test]
fn check_fix_mac_repairs_a_merge_that_took_their_mac() {
    fix_mac_after_a_merge_conflict_on_the_mac_line(Side::Theirs);
}
