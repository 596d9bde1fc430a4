//! `exec --init` and `exec --user` outside Docker: kmsenv as PID 1 of a PID
//! namespace made by `unshare --pid --fork --mount-proc` (we run as root, so a
//! failure to make one fails the test), and as a child subreaper under an ordinary
//! parent. The app is the static test program of tests/support/app.c.

mod support;

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use support::docker::static_app;
use support::*;

const TLS_KEY: &str = "tls-file-value";

fn file(sandbox: &Sandbox) -> PathBuf {
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SECRET", b"sealed-secret");
    sandbox.set_with(&file, &["--as-file"], "TLS_KEY", TLS_KEY.as_bytes());
    file
}

/// `[unshare --pid --fork --mount-proc] kmsenv -f FILE exec FLAGS… -- CMD…`, piped,
/// killed with the test.
fn spawn(sandbox: &Sandbox, namespace: bool, file: &Path, flags: &[&str], cmd: &[&str]) -> Child {
    let kmsenv = env!("CARGO_BIN_EXE_kmsenv");
    let mut command = if namespace {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc", kmsenv]);
        c
    } else {
        Command::new(kmsenv)
    };
    command
        .arg("-f")
        .arg(file)
        .arg("exec")
        .args(flags)
        .arg("--")
        .args(cmd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KMS", moto().endpoint())
        .current_dir(sandbox.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    command.spawn().expect("start kmsenv")
}

fn run(sandbox: &Sandbox, namespace: bool, file: &Path, flags: &[&str], cmd: &[&str]) -> Output {
    wait_bounded(spawn(sandbox, namespace, file, flags, cmd), "kmsenv exec")
}

/// Reads stdout lines until `ready`, then hands the rest of stdout back to the test
/// through the returned channel's sender thread (so the pipe never fills).
fn wait_ready(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the app never said ready");
    assert_eq!(first, "ready");
    rx
}

fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
        .to_string()
}

/// The one child of `pid` (unshare --fork's child is the namespace's PID 1).
fn only_child(pid: u32) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).expect("children");
    let kids: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    assert_eq!(kids.len(), 1, "{pid} should have one child: {kids:?}");
    kids[0]
}

#[test]
fn init_as_pid1_of_a_namespace_reaps_orphans() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let app = static_app().to_str().expect("utf-8 path");
    let out = run(
        &sandbox,
        true,
        &file,
        &["--init"],
        &[app, "orphans", "3", "reaped"],
    );
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "orphans never reaped:\n{text}{}", out.stderr);
    assert_eq!(field(&text, "zombies"), "0");
    // Not "PID 2": kmsenv's own threads (a file read under the deadline) take
    // ids in the namespace too.
    assert_eq!(field(&text, "ppid"), "1", "kmsenv is PID 1, the app its child");
    assert_ne!(field(&text, "pid"), "1", "the app is not PID 1");
}

#[test]
fn without_init_a_pid1_app_that_does_not_reap_keeps_zombies() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let app = static_app().to_str().expect("utf-8 path");
    let out = run(&sandbox, true, &file, &[], &[app, "orphans", "3", "zombies"]);
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "{text}{}", out.stderr);
    assert_eq!(field(&text, "zombies"), "3");
}

#[test]
fn init_outside_a_namespace_is_a_subreaper_and_reaps_orphans() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let app = static_app().to_str().expect("utf-8 path");
    let out = run(
        &sandbox,
        false,
        &file,
        &["--init"],
        &[app, "orphans", "3", "reaped"],
    );
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "orphans never reaped:\n{text}{}", out.stderr);
    assert_eq!(field(&text, "reaped"), "3");
}

#[test]
fn init_as_pid1_forwards_term_and_exits_with_the_apps_code() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let app = static_app().to_str().expect("utf-8 path");
    let mut unshare = spawn(&sandbox, true, &file, &["--init"], &[app, "wait-term", "42"]);
    let lines = wait_ready(&mut unshare);
    let kmsenv = only_child(unshare.id());
    kill(Pid::from_raw(kmsenv as i32), Signal::SIGTERM).expect("kill -TERM kmsenv");
    let out = wait_bounded(unshare, "unshare kmsenv exec --init");
    assert_eq!(out.code(), Some(42), "{}", out.stderr);
    assert_eq!(lines.recv_timeout(Duration::from_secs(60)).as_deref(), Ok("term"));
}

#[test]
fn init_as_pid1_loses_no_exit_code_in_a_signal_storm() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let app = static_app().to_str().expect("utf-8 path");
    let mut unshare = spawn(&sandbox, true, &file, &["--init"], &[app, "storm"]);
    let lines = wait_ready(&mut unshare);
    let kmsenv = only_child(unshare.id());
    let storm = Command::new(app)
        .args(["kill-storm", &kmsenv.to_string(), "10", "500"])
        .output()
        .expect("run kill-storm");
    assert!(storm.status.success(), "{storm:?}");
    kill(Pid::from_raw(kmsenv as i32), Signal::SIGTERM).expect("kill -TERM kmsenv");
    let out = wait_bounded(unshare, "unshare kmsenv exec --init");
    // Every line: the reading thread may still be behind when kmsenv's exit is
    // seen; the pipe closes when the namespace's last process is gone.
    let text: Vec<String> = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(60)).ok()).collect();
    let text = text.join("\n");
    assert_eq!(out.code(), Some(42), "{text}\n{}", out.stderr);
    assert_eq!(field(&text, "bad"), "0");
    assert!(field(&text, "usr1").parse::<u32>().expect("count") > 0);
}

#[test]
fn init_exits_128_plus_n_when_the_app_dies_of_signal_n() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let out = run(
        &sandbox,
        false,
        &file,
        &["--init"],
        &["sh", "-c", "kill -KILL $$"],
    );
    assert_eq!(out.code(), Some(137), "{}", out.stderr);
    let out = run(&sandbox, true, &file, &["--init"], &["sh", "-c", "kill -USR2 $$"]);
    assert_eq!(out.code(), Some(128 + 12), "{}", out.stderr);
}

#[test]
fn the_child_of_init_gets_what_exec_gives_environment_memfds_mask_and_dispositions() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let status = ["grep", "-E", "^Sig(Blk|Ign|Cgt)", "/proc/self/status"];
    let plain = run(&sandbox, false, &file, &[], &status).ok();
    let init = run(&sandbox, false, &file, &["--init"], &status).ok();
    assert_eq!(init.stdout_text(), plain.stdout_text());
    let env = ["env", "-0"];
    let plain = run(&sandbox, false, &file, &[], &env).ok().env0();
    let init = run(&sandbox, false, &file, &["--init"], &env).ok().env0();
    assert_eq!(init, plain, "the same environment (memfd numbers included)");
    let app = static_app().to_str().expect("utf-8 path");
    let out = run(&sandbox, false, &file, &["--init"], &[app, "report", "TLS_KEY"]).ok();
    assert_eq!(field(&out.stdout_text(), "TLS_KEY:file"), TLS_KEY);
}

#[test]
fn the_init_parent_holds_no_memfd_and_one_thread() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    let app = static_app().to_str().expect("utf-8 path");
    let mut kmsenv = spawn(&sandbox, false, &file, &["--init"], &[app, "wait-term", "0"]);
    let lines = wait_ready(&mut kmsenv);
    let pid = kmsenv.id();
    // "ready" only says the command runs; the parent may not have dropped its copies
    // yet. It forwards signals only after it has, so a forwarded SIGUSR1 that reached
    // the app marks the moment the parent is in its loop.
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).expect("kill -USR1 kmsenv");
    assert_eq!(lines.recv_timeout(Duration::from_secs(60)).as_deref(), Ok("usr1"));
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .count();
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let out = wait_bounded(kmsenv, "kmsenv exec --init");
    assert_eq!(out.code(), Some(0));
    assert!(
        !fds.iter().any(|l| l.contains("memfd:")),
        "the parent kept a memfd: {fds:?}"
    );
    assert_eq!(threads, 1, "kmsenv forked while multi-threaded");
}

#[test]
fn user_switches_after_decryption_and_the_file_value_stays_readable() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    // uid 65534 runs the app: a copy in the sandbox, which it can reach (the build's
    // target folder may be in a 0700 folder).
    let app = reachable_copy(static_app(), sandbox.dir.path());
    let app = app.to_str().expect("utf-8 path");
    for flags in [
        &["--user", "65534:65534"][..],
        &["--init", "--user", "65534:65534"][..],
    ] {
        let out = run(&sandbox, false, &file, flags, &[app, "report", "TLS_KEY"]);
        let text = out.stdout_text();
        assert_eq!(out.code(), Some(0), "{flags:?}: {text}{}", out.stderr);
        assert_eq!(field(&text, "uid"), "65534");
        assert_eq!(field(&text, "gid"), "65534");
        assert_eq!(field(&text, "TLS_KEY:file"), TLS_KEY);
    }
}

#[test]
fn user_is_refused_with_125_when_kmsenv_is_not_root() {
    let sandbox = Sandbox::new();
    let file = file(&sandbox);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    // uid 1000 runs kmsenv: a copy it can reach, as above.
    let kmsenv = reachable_copy(Path::new(env!("CARGO_BIN_EXE_kmsenv")), sandbox.dir.path());
    for flags in [&["--user", "65534"][..], &["--init", "--user", "65534"][..]] {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
            .arg(&kmsenv)
            .arg("-f")
            .arg(&file)
            .arg("exec")
            .args(flags)
            .args(["--", "true"])
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_KMS", moto().endpoint())
            .env("HOME", "/")
            .current_dir("/")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = wait_bounded(command.spawn().expect("setpriv"), "setpriv kmsenv");
        assert_eq!(out.code(), Some(125), "{flags:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("setgroups failed: Operation not permitted"),
            "{}",
            out.stderr
        );
    }
}
