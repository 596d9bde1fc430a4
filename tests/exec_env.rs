//! `kmsenv exec`: the environment the command sees, how the command is found and
//! run, and the exit codes before and after exec.

mod support;

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use support::*;

/// Two files: BASE (SHARED=base, ONLY_BASE) and PROD (SHARED=prod, ONLY_PROD).
fn base_and_prod(sandbox: &Sandbox) -> (std::path::PathBuf, std::path::PathBuf) {
    let (base, _) = sandbox.new_file("base.toml");
    let (prod, _) = sandbox.new_file("prod.toml");
    sandbox.set(&base, "SHARED", b"from-base");
    sandbox.set(&base, "ONLY_BASE", b"base-only");
    sandbox.set_with(&base, &["--plain"], "PLAIN_SHARED", b"plain-base");
    sandbox.set(&prod, "SHARED", b"from-prod");
    sandbox.set(&prod, "ONLY_PROD", b"prod-only");
    sandbox.set_with(&prod, &["--plain"], "PLAIN_SHARED", b"plain-prod");
    (base, prod)
}

#[test]
fn a_later_file_overrides_an_earlier_one() {
    let sandbox = Sandbox::new();
    let (base, prod) = base_and_prod(&sandbox);

    let env = sandbox.exec_env(&[&base, &prod]);

    assert_eq!(env["SHARED"], b"from-prod");
    assert_eq!(env["PLAIN_SHARED"], b"plain-prod");
    assert_eq!(env["ONLY_BASE"], b"base-only");
    assert_eq!(env["ONLY_PROD"], b"prod-only");

    let reversed = sandbox.exec_env(&[&prod, &base]);
    assert_eq!(reversed["SHARED"], b"from-base");
    assert_eq!(reversed["PLAIN_SHARED"], b"plain-base");
}

#[test]
fn kmsenv_file_lists_files_separated_by_colons() {
    let sandbox = Sandbox::new();
    let (base, prod) = base_and_prod(&sandbox);
    let list = format!("{}:{}", base.display(), prod.display());

    let env = sandbox
        .kmsenv()
        .env("KMSENV_FILE", &list)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["SHARED"], b"from-prod");
    assert_eq!(env["ONLY_BASE"], b"base-only");
    assert_eq!(env["ONLY_PROD"], b"prod-only");
}

#[test]
fn the_default_file_is_kmsenv_toml_in_the_working_directory() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "FROM_DEFAULT", b"yes");

    let env = sandbox
        .kmsenv()
        .current_dir(sandbox.dir.path())
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["FROM_DEFAULT"], b"yes");
}

#[test]
fn global_options_may_come_after_the_subcommand() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("elsewhere.toml");
    sandbox.set(&file, "TOKEN", b"t");

    let env = sandbox
        .kmsenv()
        .arg("exec")
        .file(&file)
        .args(["--timeout", "20", "--", "env", "-0"])
        .run()
        .ok()
        .env0();
    assert_eq!(env["TOKEN"], b"t");

    let got = sandbox.kmsenv().args(["get", "TOKEN"]).file(&file).run().ok();
    assert_eq!(got.stdout, b"t");
}

#[test]
fn file_values_override_inherited_variables() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SHARED", b"from-file");

    let env = sandbox
        .kmsenv()
        .env("SHARED", "inherited")
        .env("UNRELATED", "kept")
        .file(&file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["SHARED"], b"from-file");
    assert_eq!(env["UNRELATED"], b"kept");
    assert_eq!(env["HOME"], sandbox.dir.path().as_os_str().as_encoded_bytes());
}

#[test]
fn no_override_lets_inherited_variables_win() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SHARED", b"from-file");
    sandbox.set(&file, "FILE_ONLY", b"file-only");

    let env = sandbox
        .kmsenv()
        .env("SHARED", "inherited")
        .file(&file)
        .args(["exec", "--no-override", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["SHARED"], b"inherited");
    assert_eq!(env["FILE_ONLY"], b"file-only");
}

#[test]
fn pristine_starts_from_an_empty_environment() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");
    sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"info");

    let env = sandbox
        .kmsenv()
        .env("INHERITED", "should not be seen")
        .file(&file)
        .args(["exec", "--pristine", "--", "/usr/bin/env", "-0"])
        .run()
        .ok()
        .env0();

    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(names, ["LOG_LEVEL", "TOKEN"], "exactly the file's variables");
    assert_eq!(env["TOKEN"], b"token");
}

#[test]
fn the_command_is_found_through_the_path_of_the_new_environment() {
    let sandbox = Sandbox::new();
    sandbox.write_executable("bin/only-in-file-path", "#!/bin/sh\nprintf 'found:%s' \"$1\"\n");
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let path = format!("{}:/usr/bin:/bin", sandbox.path("bin").display());
    sandbox.set_with(&file, &["--plain"], "PATH", path.as_bytes());

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "only-in-file-path", "arg"])
        .run()
        .ok();
    assert_eq!(out.stdout, b"found:arg");

    let pristine = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--pristine", "--", "only-in-file-path", "p"])
        .run()
        .ok();
    assert_eq!(pristine.stdout, b"found:p");
}

#[test]
fn only_limits_the_variables_taken_from_the_files() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    for name in ["ALPHA", "BRAVO", "CHARLIE"] {
        sandbox.set(&file, name, name.to_lowercase().as_bytes());
    }

    let env = sandbox
        .kmsenv()
        .env("INHERITED", "kept")
        .file(&file)
        .args(["exec", "--only", "ALPHA,CHARLIE", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["ALPHA"], b"alpha");
    assert_eq!(env["CHARLIE"], b"charlie");
    assert!(!env.contains_key("BRAVO"), "BRAVO was not asked for");
    assert_eq!(
        env["INHERITED"], b"kept",
        "--only limits the files, not the inherited env"
    );
}

#[test]
fn only_accepts_repeated_flags() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    for name in ["ALPHA", "BRAVO", "CHARLIE"] {
        sandbox.set(&file, name, name.to_lowercase().as_bytes());
    }

    let env = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--only", "ALPHA", "--only", "BRAVO", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["ALPHA"], b"alpha");
    assert_eq!(env["BRAVO"], b"bravo");
    assert!(!env.contains_key("CHARLIE"));
}

#[test]
fn kmsenv_variables_are_removed_from_the_child_environment() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");

    let env = sandbox
        .kmsenv()
        .env("KMSENV_FILE", &file)
        .env("KMSENV_ANYTHING", "internal")
        .env("KMSENVX", "not ours: no underscore")
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(
        env["TOKEN"], b"token",
        "KMSENV_FILE was still used to find the file"
    );
    assert!(!env.contains_key("KMSENV_FILE"));
    assert!(!env.contains_key("KMSENV_ANYTHING"));
    assert_eq!(env["KMSENVX"], b"not ours: no underscore");
}

#[test]
fn no_variable_reaches_the_child_twice() {
    let sandbox = Sandbox::new();
    let (base, prod) = base_and_prod(&sandbox);

    let out = sandbox
        .kmsenv()
        .env("SHARED", "inherited")
        .env("ONLY_BASE", "inherited")
        .file(&base)
        .file(&prod)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok();

    let pairs = env0_pairs(&out.stdout);
    for name in ["SHARED", "ONLY_BASE", "ONLY_PROD", "PLAIN_SHARED", "PATH", "HOME"] {
        let count = pairs.iter().filter(|(n, _)| n == name).count();
        assert_eq!(count, 1, "{name} should appear exactly once");
    }
    let env = out.env0();
    assert_eq!(env["SHARED"], b"from-prod");
    assert_eq!(env["ONLY_BASE"], b"base-only");
}

#[test]
fn arguments_reach_the_command_unchanged() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");
    let args: Vec<std::ffi::OsString> = vec![
        "two words".into(),
        "".into(),
        "--".into(),
        "-f".into(),
        "--pristine".into(),
        "--only".into(),
        "$HOME `id` $(id)".into(),
        "'\"\\".into(),
        "line\nbreak".into(),
        os(b"\xff\xfe not utf-8"),
        "".into(),
    ];

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "for a in \"$@\"; do printf '%s\\0' \"$a\"; done",
            "sh",
        ])
        .args(&args)
        .run()
        .ok();

    let mut received: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
    assert_eq!(received.pop(), Some(&b""[..]));
    let expected: Vec<&[u8]> = args.iter().map(|a| a.as_encoded_bytes()).collect();
    assert_eq!(received, expected);
}

#[test]
fn the_exit_code_of_the_command_is_passed_through() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");

    for code in [42, 0, 1, 125, 126, 127] {
        sandbox
            .kmsenv()
            .file(&file)
            .args(["exec", "--", "sh", "-c", &format!("exit {code}")])
            .run()
            .code_is(code);
    }
}

#[test]
fn the_command_replaces_kmsenv_in_the_same_process() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");

    let (pid, out) = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "sh", "-c", "printf %s $$"])
        .run_with_pid();

    let out = out.ok();
    assert_eq!(
        out.stdout_text(),
        pid.to_string(),
        "the command should run as kmsenv's PID"
    );
}

#[test]
fn a_command_killed_by_a_signal_dies_of_that_signal() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "sh", "-c", "kill -TERM $$"])
        .run();

    assert_eq!(out.status.signal(), Some(15), "exit status {:?}", out.status);
}

#[test]
fn stdin_and_stdout_are_the_commands_own() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "cat"])
        .stdin(b"piped through\x00\xff")
        .run()
        .ok();

    assert_eq!(out.stdout, b"piped through\x00\xff");
}

#[test]
fn a_missing_command_exits_127() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "no-such-command-3f9a"])
        .run()
        .code_is(127);
    assert!(out.stderr.contains("no-such-command-3f9a"), "{}", out.stderr);
}

#[test]
fn a_command_that_is_not_executable_exits_126() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");
    let script = sandbox.path("not-executable.sh");
    sandbox.write(&script, "#!/bin/sh\ntouch \"$0.ran\"\n");

    sandbox
        .kmsenv()
        .file(&file)
        .args(["exec", "--"])
        .arg(&script)
        .run()
        .code_is(126);
    assert!(!sandbox.path("not-executable.sh.ran").exists());
}

#[test]
fn exec_requires_a_double_dash_before_the_command() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .arg("exec")
        .args(sandbox.touch_marker_command())
        .run();

    assert!(!out.status.success(), "exec without `--` should be refused");
    sandbox.assert_command_did_not_run();
}

#[test]
fn a_missing_file_fails_125_naming_it_without_running_the_command() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path("missing.toml");

    sandbox
        .exec_marker(&[&missing])
        .kmsenv_error(&[&missing.display().to_string()]);

    sandbox.assert_command_did_not_run();
}

fn plain_only_file(sandbox: &Sandbox) -> std::path::PathBuf {
    let file = sandbox.path("plain.toml");
    sandbox.write(
        &file,
        &keyless_file(&["LOG_LEVEL = \"debug\"", "DB_HOST = \"db.internal\""]),
    );
    file
}

#[test]
fn a_plain_only_file_runs_without_any_aws_configuration() {
    let sandbox = Sandbox::new();
    let file = plain_only_file(&sandbox);

    let env = sandbox
        .kmsenv_without_aws()
        .file(&file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["LOG_LEVEL"], b"debug");
    assert_eq!(env["DB_HOST"], b"db.internal");
}

#[test]
fn a_plain_only_file_runs_with_the_kms_endpoint_unreachable() {
    let sandbox = Sandbox::new();
    let file = plain_only_file(&sandbox);
    let closed = format!("http://127.0.0.1:{}", free_port());

    let env = sandbox
        .kmsenv_without_aws()
        .env("AWS_ENDPOINT_URL_KMS", &closed)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .file(&file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0();

    assert_eq!(env["LOG_LEVEL"], b"debug");
}

#[test]
fn an_unreachable_kms_fails_125_without_running_the_command() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");
    let closed = format!("http://127.0.0.1:{}", free_port());

    sandbox
        .kmsenv()
        .env("AWS_ENDPOINT_URL_KMS", &closed)
        .arg("--timeout")
        .arg("10")
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&[&file.display().to_string()]);

    sandbox.assert_command_did_not_run();
}

#[test]
fn a_hanging_kms_fails_125_within_the_timeout() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"token");
    // Accepts connections (in the kernel backlog) and never answers.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let endpoint = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());

    let started = Instant::now();
    sandbox
        .kmsenv()
        .env("AWS_ENDPOINT_URL_KMS", &endpoint)
        .args(["--timeout", "2"])
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&[&file.display().to_string()]);
    let took = started.elapsed();

    sandbox.assert_command_did_not_run();
    assert!(
        took < Duration::from_secs(10),
        "--timeout 2 should bound the wait; kmsenv took {took:?}"
    );
    drop(silent);
}
