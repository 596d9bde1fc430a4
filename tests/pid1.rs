//! `exec` as PID 1 (a container's ENTRYPOINT): the target replaces kmsenv, so the
//! target *is* PID 1 of the namespace, gets the signals sent to it, and its exit code
//! is what the namespace's parent sees. The PID namespace comes from
//! `unshare --pid --fork --mount-proc`; we run as root, so it must work here (a
//! failure to make one fails the test loudly).
//!
//! A process sent a signal from outside its PID namespace gets it only if it has a
//! handler (the kernel protects a namespace's init), so the PID-1 target traps TERM.
//! Outside a namespace, a target with default dispositions is killed by TERM.

mod support;

use std::io::BufRead;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use support::*;

/// How long a test waits for the target to say `ready`, or to exit after a signal.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// A file with a sealed and a plain value, so that exec really goes through KMS.
const SEALED_FILE: &[Entry] = &[sealed("SECRET", b"sealed-secret"), plain("PLAIN", b"plain-value")];

/// `kmsenv -f FILE exec -- CMD…` wrapped by `wrapper` (e.g. `unshare …`), with the
/// environment [`Kmsenv::new`] uses, stdout piped, and killed with the test.
fn spawn(sandbox: &Sandbox, wrapper: &[&str], file: &Path, cmd: &[&str]) -> Child {
    let kmsenv = env!("CARGO_BIN_EXE_kmsenv");
    let (program, before) = match wrapper.split_first() {
        Some((program, rest)) => (*program, [rest, &[kmsenv]].concat()),
        None => (kmsenv, Vec::new()),
    };
    let mut command = Command::new(program);
    test_env(&mut command, sandbox.dir.path())
        .args(before)
        .arg("-f")
        .arg(file)
        .args(["exec", "--"])
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// Waits for the first stdout line of `child` (blocking read with a deadline).
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(WAIT_LIMIT) {
        Ok(line) => line.trim_end().to_string(),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("no line on stdout within {WAIT_LIMIT:?}; stderr:\n{stderr}");
        }
    }
}

/// Waits for `child` to exit, killing it and failing after the limit.
fn wait_exit(child: Child) -> (ExitStatus, String) {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT_LIMIT) {
        Ok(out) => {
            let out = out.expect("wait");
            (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
        }
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            panic!("the process did not exit within {WAIT_LIMIT:?} of the signal");
        }
    }
}

/// The children of `pid` (every thread's `children` list).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read tasks")
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A `Sig…:` mask of /proc/PID/status.
fn signal_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(line[field.len()..].trim(), 16).expect("hex mask")
}

/// SigIgn of a process this test starts the way it starts kmsenv.
fn baseline_ignored() -> u64 {
    let out = Command::new("grep")
        .args(["^SigIgn:", "/proc/self/status"])
        .output()
        .expect("run grep");
    let text = String::from_utf8_lossy(&out.stdout);
    u64::from_str_radix(text.trim_start_matches("SigIgn:").trim(), 16).expect("hex mask")
}

/// NSpid of /proc/PID/status: the PID in each namespace, outermost first.
fn ns_pids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|rest| rest.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

const TRAPPING_TARGET: &str = "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done";

/// Starts the trapping target as PID 1 of a new PID namespace and returns (the
/// unshare process, the target's PID as seen from outside).
fn start_as_pid1(sandbox: &Sandbox, file: &Path) -> (Child, u32) {
    let mut unshare = spawn(
        sandbox,
        &["unshare", "--pid", "--fork", "--mount-proc"],
        file,
        &["sh", "-c", TRAPPING_TARGET],
    );
    let line = first_line(&mut unshare);
    if line != "ready" {
        let (status, stderr) = wait_exit(unshare);
        panic!(
            "the target did not start as PID 1 (unshare must work here: we run as root): \
             first line {line:?}, exit {status:?}, stderr:\n{stderr}"
        );
    }
    let children = children_of(unshare.id());
    assert_eq!(
        children.len(),
        1,
        "unshare --fork should have exactly one child, the namespace's PID 1: {children:?}"
    );
    (unshare, children[0])
}

#[test]
fn exec_as_pid1_becomes_the_target_which_gets_term_and_sets_the_exit_code() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let (unshare, target) = start_as_pid1(&sandbox, &file);

    let argv = cmdline(target);
    assert_eq!(
        argv,
        ["sh", "-c", TRAPPING_TARGET],
        "PID 1 of the namespace should be the target itself, not kmsenv"
    );
    let pids = ns_pids(target);
    assert_eq!(
        pids.last(),
        Some(&1),
        "the target should be PID 1 inside: NSpid {pids:?}"
    );
    // (Signal masks are checked on a target that does not fork: a shell blocks
    // signals for a moment around each command it starts, so sampling its
    // SigBlk here would race; see the_target_inherits_no_ignored_or_blocked_signal_from_kmsenv.)

    kill(Pid::from_raw(target as i32), Signal::SIGTERM).expect("kill -TERM the target");
    let (status, stderr) = wait_exit(unshare);
    assert_eq!(
        status.code(),
        Some(42),
        "the namespace should end with the target's own exit code ({status:?}); stderr:\n{stderr}"
    );
    assert!(stderr.is_empty(), "exec should be silent on success:\n{stderr}");
}

#[test]
fn exec_as_pid1_with_a_plain_only_file_also_becomes_the_target() {
    // No KMS at all: the no-AWS path must exec the same way.
    let sandbox = Sandbox::new();
    let file = sandbox.path("plain.toml");
    sandbox.write(&file, &keyless_file(&["PLAIN = \"plain-value\""]));
    let (unshare, target) = start_as_pid1(&sandbox, &file);

    assert_eq!(cmdline(target), ["sh", "-c", TRAPPING_TARGET]);
    kill(Pid::from_raw(target as i32), Signal::SIGTERM).expect("kill -TERM the target");
    let (status, stderr) = wait_exit(unshare);
    assert_eq!(status.code(), Some(42), "{status:?}; stderr:\n{stderr}");
}

/// Starts `kmsenv -f FILE exec -- sh -c 'echo ready; exec sleep 60'` (no namespace)
/// and waits until the target is `sleep`: (kmsenv's child handle, its PID).
fn start_sleeping_target(sandbox: &Sandbox, file: &Path) -> (Child, u32) {
    let mut child = spawn(sandbox, &[], file, &["sh", "-c", "echo ready; exec sleep 60"]);
    let pid = child.id();
    assert_eq!(first_line(&mut child), "ready");
    // Bounded poll: `exec sleep` follows the echo at once, in another process.
    let deadline = Instant::now() + WAIT_LIMIT;
    while cmdline(pid) != ["sleep", "60"] {
        assert!(
            Instant::now() < deadline,
            "the target never became `sleep 60`: {:?}",
            cmdline(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, pid)
}

#[test]
fn term_reaches_a_target_that_ignores_nothing() {
    // Outside a PID namespace: kmsenv becomes `sleep` (same PID), which keeps the
    // default disposition of TERM, so TERM kills it — unless kmsenv left TERM ignored
    // or blocked, which execve would carry over into the target.
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let (child, pid) = start_sleeping_target(&sandbox, &file);

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("kill -TERM");
    let (status, stderr) = wait_exit(child);
    assert_eq!(
        status.signal(),
        Some(Signal::SIGTERM as i32),
        "TERM should have killed the target ({status:?}); stderr:\n{stderr}"
    );
}

#[test]
fn the_target_inherits_no_ignored_or_blocked_signal_from_kmsenv() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let (child, pid) = start_sleeping_target(&sandbox, &file);
    let ignored = signal_mask(pid, "SigIgn:");
    let blocked = signal_mask(pid, "SigBlk:");
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = wait_exit(child);

    // What kmsenv itself started with (std resets SIGPIPE and the mask for the
    // processes it starts): the target may inherit that, and nothing more.
    let inherited = baseline_ignored();
    assert_eq!(
        ignored & !inherited,
        0,
        "kmsenv left signals ignored in the target: SigIgn {ignored:#x}, inherited {inherited:#x} \
         (0x1000 is SIGPIPE, which the Rust runtime ignores and execve keeps)"
    );
    assert_eq!(
        blocked, 0,
        "kmsenv left signals blocked in the target: {blocked:#x}"
    );
}

#[test]
fn a_pipeline_in_the_target_ends_on_sigpipe_as_usual() {
    // The visible effect of an inherited SIG_IGN for SIGPIPE: `yes | head -n 1`
    // makes `yes` print "Broken pipe" and exit 1 instead of dying quietly (141).
    let sandbox = Sandbox::new();
    let file = sandbox.path("plain.toml");
    sandbox.write(&file, &keyless_file(&["PLAIN = \"plain-value\""]));
    let out = sandbox
        .kmsenv()
        .file(&file)
        .args([
            "exec",
            "--",
            "bash",
            "-c",
            "yes | head -n 1 > /dev/null; echo \"${PIPESTATUS[0]}\"",
        ])
        .run()
        .ok();
    assert_eq!(
        out.stdout_text().trim(),
        "141",
        "`yes` should die of SIGPIPE (128 + 13) in the target; stderr:\n{}",
        out.stderr
    );
}
