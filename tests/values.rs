//! Values are bytes: whatever goes in through `set` reaches the command exactly,
//! except NUL, which no environment string can hold; `file = true` values arrive
//! as a readable path instead.

mod support;

use std::path::PathBuf;

use support::*;

/// Values that break naive quoting or encoding.
fn awkward_values() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("NEWLINES", b"first\nsecond\r\nthird\n"),
        ("ENDS_WITH_NEWLINE", b"value\n"),
        ("QUOTES", b"it's \"quoted\" 'twice'"),
        ("EQUALS", b"a=b==c="),
        ("LEADING_EQUALS", b"=starts with equals"),
        ("SHELL", b"$(touch pwned) `touch pwned` ${HOME} $HOME; rm -rf / &"),
        ("BACKSLASHES", b"\\n is not a newline \\ \\\\"),
        ("SPACES", b"  padded\tvalue  "),
        ("CONTROL", b"\x01\x1b[31mred\x1b[0m\x7f"),
        ("UNICODE", "\u{e9}t\u{e9} \u{2603} \u{1f512}".as_bytes()),
        ("NOT_UTF8", b"\xff\xfe\x80 invalid \xc3\x28"),
    ]
}

#[test]
fn sealed_values_reach_the_command_byte_for_byte() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let values = awkward_values();
    for (name, value) in &values {
        sandbox.set(&file, name, value);
    }

    let env = sandbox.exec_env(&[&file]);

    for (name, value) in &values {
        assert_eq!(env.get(*name).map(Vec::as_slice), Some(*value), "{name}");
    }
    assert!(!sandbox.path("pwned").exists());
}

#[test]
fn get_prints_awkward_values_byte_for_byte() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let values = awkward_values();
    for (name, value) in &values {
        sandbox.set(&file, name, value);
    }

    for (name, value) in &values {
        let out = sandbox.kmsenv().file(&file).args(["get", name]).run().ok();
        assert_eq!(out.stdout, *value, "{name}");
    }
}

#[test]
fn direct_kms_values_reach_the_command_byte_for_byte() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let values = awkward_values();
    for (name, value) in &values {
        sandbox.set_with(&file, &["--kms"], name, value);
    }

    let env = sandbox.exec_env(&[&file]);

    for (name, value) in &values {
        assert_eq!(env.get(*name).map(Vec::as_slice), Some(*value), "{name}");
    }
}

#[test]
fn plain_values_reach_the_command_byte_for_byte() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    // Plain values live in a TOML string, so they are UTF-8.
    let values: Vec<(&str, &[u8])> = awkward_values()
        .into_iter()
        .filter(|(_, v)| std::str::from_utf8(v).is_ok())
        .collect();
    for (name, value) in &values {
        sandbox.set_with(&file, &["--plain"], name, value);
    }

    let env = sandbox.exec_env(&[&file]);

    for (name, value) in &values {
        assert_eq!(env.get(*name).map(Vec::as_slice), Some(*value), "{name}");
    }
}

#[test]
fn a_value_pasted_by_hand_reaches_the_command_through_a_shell_unchanged() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let value = b"it's $(not run) `nor this` \"ok\"\nline 2";
    sandbox.set(&file, "TRICKY", value);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "sh", "-c", "printf %s \"$TRICKY\""])
        .run()
        .ok();

    assert_eq!(out.stdout, value);
}

#[test]
fn sealed_values_larger_than_the_kms_4_kib_limit_reach_the_command() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let big: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    sandbox.set(&file, "BIG", &big);

    let env = sandbox.exec_env(&[&file]);

    assert_eq!(env["BIG"].len(), big.len());
    assert_eq!(env["BIG"], big);
}

#[test]
fn exec_fails_naming_a_kms_value_that_contains_nul() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "FINE", b"fine");
    sandbox.assert_command_runs(&[&file]);
    let blob = encrypt(REGION, &key, b"before\0after", &[]);
    let text = sandbox.read(&file);
    sandbox.write(
        &file,
        &insert_in_env(&text, &format!("HAS_NUL = {{ kms = \"{blob}\" }}")),
    );

    sandbox
        .exec_marker(&[&file])
        .kmsenv_error(&["HAS_NUL", &file.display().to_string()]);

    sandbox.assert_command_did_not_run();
}

#[test]
fn a_sealed_value_with_nul_is_refused_by_set_or_by_exec_naming_the_variable() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "FINE", b"fine");
    sandbox.assert_command_runs(&[&file]);

    let set = sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "HAS_NUL"])
        .stdin(b"before\0after")
        .run();

    if set.status.success() {
        // Accepted into the file: get may print it, but exec must refuse it.
        sandbox
            .exec_marker(&[&file])
            .kmsenv_error(&["HAS_NUL", &file.display().to_string()]);
        sandbox.assert_command_did_not_run();
    } else {
        set.kmsenv_error(&["HAS_NUL"]);
    }
}

fn fd_path_of(value: &[u8]) -> String {
    let path = String::from_utf8(value.to_vec()).expect("the path is UTF-8");
    let fd = path
        .strip_prefix("/proc/self/fd/")
        .unwrap_or_else(|| panic!("a file value should be /proc/self/fd/N, got {path:?}"));
    assert!(
        !fd.is_empty() && fd.bytes().all(|b| b.is_ascii_digit()),
        "not an fd path: {path:?}"
    );
    path
}

#[test]
fn an_as_file_value_is_delivered_as_a_readable_fd_path() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQ\xff\xfe==\n-----END PRIVATE KEY-----\n";
    sandbox.set_with(&file, &["--as-file"], "TLS_KEY", pem);

    let text = sandbox.read(&file);
    assert!(entry_line(&text, "TLS_KEY").contains("file = true"), "{text}");
    let env = sandbox.exec_env(&[&file]);
    fd_path_of(&env["TLS_KEY"]);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "sh", "-c", "cat \"$TLS_KEY\""])
        .run()
        .ok();
    assert_eq!(out.stdout, pem);
}

#[test]
fn an_as_file_value_from_a_file_may_hold_nul_bytes() {
    // A DER key is binary: the environment holds only the path, so NUL is fine.
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let der: Vec<u8> = vec![0x30, 0x82, 0x00, 0x00, 0x02, 0x01, 0x00, 0xff, 0x00];
    let source: PathBuf = sandbox.path("key.der");
    std::fs::write(&source, &der).unwrap();
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "TLS_KEY_DER", "--as-file", "--from-file"])
        .arg(&source)
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
            "printf '%s|' \"$TLS_KEY_DER\"; cat \"$TLS_KEY_DER\"",
        ])
        .run()
        .ok();

    let split = out
        .stdout
        .iter()
        .position(|b| *b == b'|')
        .expect("the file contents follow the path");
    fd_path_of(&out.stdout[..split]);
    assert_eq!(&out.stdout[split + 1..], der.as_slice());
}

#[test]
fn two_as_file_values_get_distinct_paths() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set_with(&file, &["--as-file"], "CERT", b"certificate");
    sandbox.set_with(&file, &["--as-file"], "KEY", b"private key");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "cat \"$CERT\"; printf '|'; cat \"$KEY\"",
        ])
        .run()
        .ok();

    assert_eq!(out.stdout, b"certificate|private key");
}
