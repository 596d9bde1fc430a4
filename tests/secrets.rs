//! Secret hygiene: a canary value must never show up where values do not belong —
//! in any output except `get` and `export`, in the file's text, or in argv.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use support::*;

const CANARY: &str = "CANARY-7f3a9c-SECRET";

/// Fails if the canary (raw or base64) is in anything the run printed.
#[track_caller]
fn assert_no_canary(out: &Output) {
    let all = out.all_output();
    assert!(
        !contains_bytes(&all, CANARY.as_bytes()),
        "`{}` printed the secret:\n{}",
        out.what,
        String::from_utf8_lossy(&all)
    );
    assert!(
        !contains_bytes(&all, b64(CANARY.as_bytes()).as_bytes()),
        "`{}` printed the secret in base64",
        out.what
    );
}

#[track_caller]
fn assert_file_has_no_canary(sandbox: &Sandbox, file: &Path) {
    let text = sandbox.read(file);
    assert!(
        !text.contains(CANARY),
        "the file holds the secret in clear:\n{text}"
    );
    assert!(
        !text.contains(&b64(CANARY.as_bytes())),
        "the file holds the secret in base64:\n{text}"
    );
}

/// A file holding the canary sealed, plus an ordinary plain value.
fn file_with_canary(sandbox: &Sandbox) -> (PathBuf, String) {
    let key = sandbox.key();
    let file = sandbox.path("kmsenv.toml");
    assert_no_canary(
        &sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["init", "--key", &key])
            .run()
            .ok(),
    );
    assert_no_canary(
        &sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["set", "API_TOKEN"])
            .stdin(CANARY)
            .run()
            .ok(),
    );
    sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"plain-7c2d");
    (file, key)
}

#[test]
fn get_and_export_do_print_the_secret() {
    // The positive control: the canary checks below can see the secret at all.
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);

    let got = sandbox.kmsenv().file(&file).args(["get", "API_TOKEN"]).run().ok();
    assert_eq!(got.stdout, CANARY.as_bytes());
    for format in ["dotenv", "shell", "json"] {
        let out = sandbox
            .kmsenv()
            .file(&file)
            .args(["export", "--format", format])
            .run()
            .ok();
        assert!(contains_bytes(&out.stdout, CANARY.as_bytes()), "export {format}");
    }
}

#[test]
fn successful_commands_never_print_the_secret_even_verbose() {
    let sandbox = Sandbox::new();
    let (file, key) = file_with_canary(&sandbox);

    let runs = [
        sandbox.kmsenv().arg("-v").file(&file).arg("list").run().ok(),
        sandbox.kmsenv().arg("-v").file(&file).arg("check").run().ok(),
        sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["check", "--fix-mac"])
            .run()
            .ok(),
        sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["exec", "--", "true"])
            .run()
            .ok(),
        sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["set", "API_TOKEN"])
            .stdin(format!("{CANARY}-rotated"))
            .run()
            .ok(),
        sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["set", "--kms", "KMS_TOKEN", "--key", &key])
            .stdin(CANARY)
            .run()
            .ok(),
        sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["set", "--as-file", "FILE_TOKEN"])
            .stdin(CANARY)
            .run()
            .ok(),
        sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .arg("import")
            .stdin(format!("IMPORTED={CANARY}\n"))
            .run()
            .ok(),
        sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(["unset", "API_TOKEN"])
            .run()
            .ok(),
    ];

    for out in &runs {
        assert_no_canary(out);
    }
    assert_file_has_no_canary(&sandbox, &file);
}

#[test]
fn failing_commands_never_print_the_secret() {
    let sandbox = Sandbox::new();
    let (file, key) = file_with_canary(&sandbox);

    // The command fails after exec.
    let failed_child = sandbox
        .kmsenv()
        .arg("-v")
        .file(&file)
        .args(["exec", "--", "sh", "-c", "exit 3"])
        .run()
        .code_is(3);
    assert_no_canary(&failed_child);
    // The command does not exist.
    let missing = sandbox
        .kmsenv()
        .arg("-v")
        .file(&file)
        .args(["exec", "--", "no-such-command-3f9a"])
        .run()
        .code_is(127);
    assert_no_canary(&missing);
    // init over an existing file.
    let init_again = sandbox
        .kmsenv()
        .arg("-v")
        .file(&file)
        .args(["init", "--key", &key])
        .run()
        .kmsenv_error(&[]);
    assert_no_canary(&init_again);
    // get of a name that is not there.
    let unknown = sandbox
        .kmsenv()
        .arg("-v")
        .file(&file)
        .args(["get", "NOT_THERE"])
        .run()
        .kmsenv_error(&["NOT_THERE"]);
    assert_no_canary(&unknown);

    // A tampered file: every command that decrypts fails, without the secret.
    let text = sandbox.read(&file);
    sandbox.write(&file, &replace_once(&text, "\"plain-7c2d\"", "\"plain-edited\""));
    for args in [
        &["exec", "--", "true"][..],
        &["check"][..],
        &["get", "LOG_LEVEL"][..],
        &["get", "API_TOKEN"][..],
        &["export", "--format", "shell"][..],
    ] {
        let out = sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(args)
            .run()
            .kmsenv_error(&["modified outside kmsenv"]);
        assert_no_canary(&out);
    }
    // list needs no data key (so it does not check the MAC); it must not leak either.
    assert_no_canary(&sandbox.kmsenv().arg("-v").file(&file).arg("list").run());
}

#[test]
fn a_failure_elsewhere_in_the_file_never_prints_the_secret_that_did_decrypt() {
    let sandbox = Sandbox::new();
    let (file, key) = file_with_canary(&sandbox);
    let blob = encrypt(REGION, &key, b"x", &[("kmsenv:var", "BROKEN"), ("app", "other")]);
    let text = sandbox.read(&file);
    sandbox.write(
        &file,
        &insert_in_env(
            &text,
            &format!("BROKEN = {{ kms = \"{blob}\", context = {{ \"kmsenv:var\" = \"BROKEN\" }} }}"),
        ),
    );

    for args in [&["check"][..], &["exec", "--", "true"][..], &["export"][..]] {
        let out = sandbox
            .kmsenv()
            .arg("-v")
            .file(&file)
            .args(args)
            .run()
            .kmsenv_error(&["BROKEN"]);
        assert_no_canary(&out);
    }
}

#[test]
fn a_value_with_a_nul_byte_is_refused_without_printing_it() {
    let sandbox = Sandbox::new();
    let (file, key) = file_with_canary(&sandbox);
    let blob = encrypt(REGION, &key, format!("{CANARY}\0tail").as_bytes(), &[]);
    let text = sandbox.read(&file);
    sandbox.write(
        &file,
        &insert_in_env(&text, &format!("WITH_NUL = {{ kms = \"{blob}\" }}")),
    );

    let out = sandbox
        .kmsenv()
        .arg("-v")
        .file(&file)
        .args(["exec", "--", "true"])
        .run()
        .kmsenv_error(&["WITH_NUL"]);

    assert_no_canary(&out);
}

#[test]
fn set_refuses_a_secret_given_as_name_equals_value_without_echoing_it() {
    // Only --plain takes NAME=VALUE from argv. A secret typed there by mistake must
    // not be stored, and must not be copied into CI logs by the error message.
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);
    let before = sandbox.read(&file);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["set", &format!("OTHER_TOKEN={CANARY}")])
        .stdin(b"from stdin")
        .run();

    assert!(!out.status.success(), "NAME=VALUE is only for --plain");
    assert_no_canary(&out);
    assert_eq!(sandbox.read(&file), before);
}

#[test]
fn verbose_exec_names_the_file_key_and_variables_but_no_values() {
    let sandbox = Sandbox::new();
    let (file, key) = file_with_canary(&sandbox);

    let out = sandbox
        .kmsenv()
        .arg("-v")
        .file(&file)
        .args(["exec", "--", "true"])
        .run()
        .ok();

    for needle in [&file.display().to_string(), &key, "API_TOKEN", "LOG_LEVEL"] {
        assert!(
            out.stderr.contains(needle),
            "-v should name {needle}:\n{}",
            out.stderr
        );
    }
    assert_no_canary(&out);
    assert!(
        !out.stderr.contains("plain-7c2d"),
        "-v printed a plain value:\n{}",
        out.stderr
    );
}

#[test]
fn exec_is_silent_on_success_by_default() {
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "true"])
        .run()
        .ok();

    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn the_secret_is_never_in_kmsenvs_argv_while_set_runs() {
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);

    let (mut child, what) = sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "SECOND_TOKEN"])
        .spawn_piped();
    // kmsenv is blocked reading stdin: its command line is what `ps` shows now.
    // spawn() may return while execve is still setting up the new argv (the vfork
    // parent resumes as soon as the old memory is released): wait until it is there.
    let proc_cmdline = format!("/proc/{}/cmdline", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let cmdline = loop {
        let cmdline = std::fs::read(&proc_cmdline).expect("read cmdline");
        if !cmdline.is_empty() || std::time::Instant::now() > deadline {
            break cmdline;
        }
        std::thread::yield_now();
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(CANARY.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = wait_bounded(child, &what).ok();

    assert!(
        contains_bytes(&cmdline, b"SECOND_TOKEN"),
        "read the wrong process: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(!contains_bytes(&cmdline, CANARY.as_bytes()));
    assert_no_canary(&out);
    let got = sandbox
        .kmsenv()
        .file(&file)
        .args(["get", "SECOND_TOKEN"])
        .run()
        .ok();
    assert_eq!(got.stdout, CANARY.as_bytes());
}

#[test]
fn the_command_gets_exactly_its_own_argv_with_no_secret_in_it() {
    // No shell or wrapper between kmsenv and the command: what runs is exactly the
    // argv after `--`, and the secret reaches it only through the environment.
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);
    let script = "cat /proc/$$/cmdline; printf '|%s' \"$API_TOKEN\"";

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "sh", "-c", script])
        .run()
        .ok();

    let expected = [
        b"sh\0-c\0".as_slice(),
        script.as_bytes(),
        b"\0|",
        CANARY.as_bytes(),
    ]
    .concat();
    assert_eq!(out.stdout, expected);
}

#[test]
fn the_file_never_holds_a_secret_in_clear() {
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);

    sandbox.set_with(&file, &["--kms"], "KMS_TOKEN", CANARY.as_bytes());
    assert_file_has_no_canary(&sandbox, &file);
    sandbox.set_with(&file, &["--as-file"], "FILE_TOKEN", CANARY.as_bytes());
    assert_file_has_no_canary(&sandbox, &file);
    sandbox
        .kmsenv()
        .file(&file)
        .arg("import")
        .stdin(format!("IMPORTED=\"{CANARY}\"\n"))
        .run()
        .ok();
    assert_file_has_no_canary(&sandbox, &file);
    let source = sandbox.path("secret.txt");
    std::fs::write(&source, CANARY).unwrap();
    sandbox
        .kmsenv()
        .file(&file)
        .args(["set", "FROM_FILE", "--from-file"])
        .arg(&source)
        .run()
        .ok();
    assert_file_has_no_canary(&sandbox, &file);

    let env = sandbox.exec_env(&[&file]);
    for name in ["API_TOKEN", "KMS_TOKEN", "IMPORTED", "FROM_FILE"] {
        assert_eq!(env[name], CANARY.as_bytes(), "{name}");
    }
}

#[test]
fn a_malformed_dotenv_line_is_refused_without_quoting_it() {
    // A value pasted without its NAME=: the text before its `=` is not a name,
    // and it is secret.
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);
    for input in [
        format!("postgres://app:{CANARY}@db/x?sslmode=require\n"),
        format!("A=1\n{CANARY} X=2\n"),
    ] {
        let out = sandbox
            .kmsenv()
            .file(&file)
            .arg("import")
            .stdin(input)
            .run()
            .kmsenv_error(&["stdin:", "invalid variable name"]);
        assert_no_canary(&out);
    }
}

#[test]
fn a_path_set_by_the_file_is_not_shown_when_the_command_is_missing() {
    let sandbox = Sandbox::new();
    let (file, _) = file_with_canary(&sandbox);
    sandbox.set(
        &file,
        "PATH",
        format!("/opt/{CANARY}/bin:/usr/bin:/bin").as_bytes(),
    );
    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "kmsenv-no-such-command"])
        .run()
        .code_is(127)
        .stderr_has("kmsenv-no-such-command: command not found in PATH (set by the file; not shown)");
    assert_no_canary(&out);
}
