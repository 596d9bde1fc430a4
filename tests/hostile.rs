//! A hostile file, endpoint or terminal, and deadlines (issue 10, DESIGN §8):
//! control characters from a file or from AWS reach the terminal escaped; a KMS
//! answer larger than 64 KiB is refused before it is in memory; `--timeout`
//! covers reading the file and kills a hanging `credential_process` with what it
//! started; `edit` sweeps its own stale scratch folders; `export --format
//! dotenv` is inert when sourced by a shell.
//!
//! Real parts only: moto_server as KMS, the fault proxy in front of it, real
//! FIFOs, shells and processes. No sleeps as synchronisation, no wall-time
//! assertions (only the bounded watchdogs of the support code).

mod support;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use support::random::random_hex;
use support::*;

/// An ARN as a hostile writer puts it in a file: a forged second line, and the
/// terminal sequence that hides what follows.
const HOSTILE_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/ffffffff-0000\nkmsenv: FORGED line\u{1b}[8m hidden";

/// What the hostile ARN must look like on a terminal.
const HOSTILE_ARN_ESCAPED: &str = "key/ffffffff-0000\\nkmsenv: FORGED line\\x1b[8m hidden";

/// A keyed file whose only wrapping key is [`HOSTILE_ARN`] (with a real-looking
/// data key, so the file parses and exec must ask KMS).
fn file_with_hostile_arn(sandbox: &Sandbox) -> PathBuf {
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SECRET", b"sealed-value");
    let text = sandbox.read(&file);
    let arn_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("arn"))
        .expect("an arn line");
    let hostile = replace_once(&text, arn_line, &format!("arn = {}", toml_string(HOSTILE_ARN)));
    sandbox.write(&file, &hostile);
    file
}

/// Asserts that stderr carries `escaped`, no raw control character, and no line
/// that a forged `\n` started.
#[track_caller]
fn assert_escaped(out: &Output, escaped: &str) {
    assert!(
        out.stderr.contains(escaped),
        "stderr should show {escaped:?}:\n{}",
        out.stderr
    );
    let raw: Vec<char> = out
        .stderr
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        raw.is_empty(),
        "raw control characters {raw:?} in:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("kmsenv: FORGED")),
        "a forged line reached stderr:\n{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// Control characters

#[test]
fn exec_error_shows_a_control_character_in_a_key_arn_escaped() {
    let sandbox = Sandbox::new();
    let file = file_with_hostile_arn(&sandbox);
    let out = sandbox.exec_marker(&[&file]).code_is(125);
    assert_escaped(&out, HOSTILE_ARN_ESCAPED);
    sandbox.assert_command_did_not_run();
}

#[test]
fn list_shows_a_control_character_in_a_key_arn_escaped() {
    let sandbox = Sandbox::new();
    let file = file_with_hostile_arn(&sandbox);
    let out = sandbox.kmsenv().file(&file).arg("list").run().ok();
    let stdout = out.stdout_text();
    assert!(
        stdout.contains(HOSTILE_ARN_ESCAPED),
        "list should show the ARN escaped:\n{stdout}"
    );
    assert!(
        !stdout.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in list:\n{stdout:?}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("kmsenv: FORGED")),
        "a forged line reached stdout:\n{stdout}"
    );
}

/// A reference as a hostile writer puts it: a `json_key` that forges a line and
/// hides what follows, and a `version_stage` with a bidi override (which the
/// parser refuses: a stage is a name, and it is printed).
#[test]
fn a_reference_with_control_characters_is_shown_escaped_or_refused() {
    let sandbox = Sandbox::new();
    let arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf";
    let key = "k\nkmsenv: FORGED line\u{1b}[8m hidden";
    let file = sandbox.path("kmsenv.toml");
    let entry = format!(
        "R = {{ secret = {}, json_key = {} }}",
        toml_string(arn),
        toml_string(key)
    );
    sandbox.write(&file, &keyless_file(&[&entry]));
    let out = sandbox.kmsenv().file(&file).arg("list").run().ok();
    let stdout = out.stdout_text();
    // Shown quoted, each control character as an escape (`\n`, `\u{1b}`).
    assert!(
        stdout.contains("k\\nkmsenv: FORGED line\\u{1b}[8m hidden"),
        "list should show the json_key escaped:\n{stdout}"
    );
    assert!(
        !stdout.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in list:\n{stdout:?}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("kmsenv: FORGED")),
        "{stdout}"
    );

    let stage = "AWSCURRENT\u{202e}txt.exe";
    let entry = format!(
        "R = {{ secret = {}, version_stage = {} }}",
        toml_string(arn),
        toml_string(stage)
    );
    sandbox.write(&file, &keyless_file(&[&entry]));
    let out = sandbox.kmsenv().file(&file).arg("list").run().code_is(125);
    assert!(out.stderr.contains("version_stage"), "{}", out.stderr);
    assert!(
        !out.stderr.contains('\u{202e}'),
        "a raw bidi override on stderr: {:?}",
        out.stderr
    );
}

/// A hostile terminal title sequence in the name of `SSL_CERT_FILE` (the
/// environment is not the file, but its text is printed the same way): the
/// refusal of a file without certificates shows it escaped, with `-v` too.
#[test]
fn an_ssl_cert_file_path_with_control_characters_is_shown_escaped() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SECRET", b"sealed-value");
    let bundle = sandbox.path("ca\u{1b}]0;owned\u{7}.pem");
    std::fs::write(&bundle, b"not a certificate").expect("write the bundle");
    for verbose in [false, true] {
        let mut run = sandbox
            .kmsenv()
            .endpoint("https://127.0.0.1:9")
            .env("SSL_CERT_FILE", &bundle);
        if verbose {
            run = run.arg("-v");
        }
        let out = run
            .file(&file)
            .args(["exec", "--"])
            .args(sandbox.touch_marker_command())
            .run()
            .code_is(125);
        assert_escaped(&out, "ca\\x1b]0;owned\\x07.pem");
        sandbox.assert_command_did_not_run();
    }
}

#[test]
fn keys_list_shows_a_control_character_in_a_key_arn_escaped() {
    let sandbox = Sandbox::new();
    let file = file_with_hostile_arn(&sandbox);
    let out = sandbox.kmsenv().file(&file).args(["keys", "list"]).run().ok();
    let stdout = out.stdout_text();
    assert!(
        stdout.contains(HOSTILE_ARN_ESCAPED),
        "keys list should escape:\n{stdout}"
    );
    assert!(!stdout.contains('\u{1b}'), "raw ESC in keys list:\n{stdout:?}");
}

#[test]
fn a_kms_error_message_with_control_characters_reaches_stderr_escaped() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SECRET", b"sealed-value");
    let proxy = Proxy::start();
    // The endpoint's own message: JSON escapes become a real newline and ESC.
    proxy.rules(
        r#"[{"op": "Decrypt", "action": "answer", "status": 400,
             "headers": {"Content-Type": "application/x-amz-json-1.1",
                         "x-amzn-ErrorType": "AccessDeniedException"},
             "body": "{\"__type\": \"AccessDeniedException\", \"message\": \"denied\\nkmsenv: FORGED line\\u001b[8m hidden\"}"}]"#,
    );
    let out = sandbox
        .kmsenv()
        .endpoint(&proxy.endpoint())
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&["AccessDeniedException"]);
    assert_escaped(&out, "denied\\nkmsenv: FORGED line\\x1b[8m hidden");
    sandbox.assert_command_did_not_run();
}

// ---------------------------------------------------------------------------
// Oversized KMS answers

/// 100 MiB: far over the 64 KiB cap, and far over what kmsenv ever holds.
const FLOOD_BYTES: u64 = 100 * 1024 * 1024;
/// kmsenv's peak RSS must stay under this while refusing the flood (about
/// 20 MiB for a debug build here; reading the flood took 120 MiB).
const PEAK_RSS_LIMIT_KIB: i64 = 48 * 1024;

/// `kmsenv -f FILE exec -- sh -c 'touch MARKER'` through `proxy`, run to its end;
/// its output and its peak RSS in KiB, from `wait4`'s rusage of exactly that
/// process (a watchdog kills it if it runs too long).
fn exec_measured(sandbox: &Sandbox, proxy: &Proxy, file: &Path) -> (Output, i64) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kmsenv"));
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", sandbox.path(""))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KMS", proxy.endpoint())
        .current_dir(sandbox.path(""))
        .arg("-f")
        .arg(file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start kmsenv");
    let pid = child.id() as nix::libc::pid_t;
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stdout = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut b);
        b
    });
    let stderr = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut b);
        b
    });
    let (done, watchdog_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watchdog_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut status: nix::libc::c_int = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; `pid` is our own child,
    // which std's Child never waits for after this (it is dropped without wait).
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    let _ = done.send(());
    watchdog.join().expect("watchdog");
    assert_eq!(waited, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    let out = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned(),
        what: "kmsenv exec (measured)".into(),
    };
    drop(child);
    (out, usage.ru_maxrss)
}

/// A keyed file whose data key the proxy answers with `FLOOD_BYTES`.
fn flooded(chunked: bool) {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SECRET", b"sealed-value");
    let proxy = Proxy::start();
    proxy.rules(&format!(
        r#"[{{"op": "Decrypt", "action": "flood", "bytes": {FLOOD_BYTES}, "chunked": {chunked}}}]"#
    ));
    let (out, peak_kib) = exec_measured(&sandbox, &proxy, &file);
    assert!(
        peak_kib < PEAK_RSS_LIMIT_KIB,
        "kmsenv's peak RSS was {peak_kib} KiB facing a {FLOOD_BYTES}-byte answer:\n{}",
        out.stderr
    );
    out.kmsenv_error(&["InvalidResponse", "65536 bytes"]);
    sandbox.assert_command_did_not_run();
}

#[test]
fn an_oversized_decrypt_answer_with_content_length_is_refused_before_it_is_read() {
    flooded(false);
}

#[test]
fn an_oversized_chunked_decrypt_answer_is_refused_before_it_is_read() {
    flooded(true);
}

// ---------------------------------------------------------------------------
// Deadlines

#[test]
fn a_fifo_as_the_file_ends_in_125_at_the_deadline() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path("kmsenv.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let out = sandbox
        .kmsenv()
        .args(["--timeout", "2"])
        .file(&fifo)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&["kmsenv.fifo", "deadline", "--timeout"]);
    assert!(
        out.stderr
            .lines()
            .next()
            .is_some_and(|l| l.contains(&*fifo.to_string_lossy())),
        "the first line should name the file:\n{}",
        out.stderr
    );
    sandbox.assert_command_did_not_run();
}

/// Whether process `pid` is gone: no `/proc/PID`, or a zombie (reaped later by
/// whoever adopted it; it runs nothing).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "PID (comm) STATE …": comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_hanging_credential_process_leaves_no_process_behind() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SECRET", b"sealed-value");
    let pids = sandbox.path("credential-process.pids");
    // Records its own PID and its child's, then waits forever for the child.
    let script = sandbox.write_executable(
        "bin/hanging-credentials",
        &format!(
            "#!/bin/sh\n\
             sleep 3600 &\n\
             printf '%s %s\\n' $$ $! > '{pids}.tmp'\n\
             mv '{pids}.tmp' '{pids}'\n\
             wait\n",
            pids = pids.display()
        ),
    );
    std::fs::create_dir_all(sandbox.path("aws")).expect("aws dir");
    sandbox.write(
        &sandbox.path("aws/config"),
        &format!("[profile hanging]\ncredential_process = {}\n", script.display()),
    );
    let (mut child, what) = sandbox
        .kmsenv_without_aws()
        .env("AWS_CONFIG_FILE", sandbox.path("aws/config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", sandbox.path("aws/credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", REGION)
        .endpoint(&moto().endpoint())
        .args(["--timeout", "10", "--profile", "hanging"])
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .spawn_piped();
    drop(child.stdin.take());
    // The script writes its pid file at once; poll for it, bounded.
    let until = Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        if let Ok(text) = std::fs::read_to_string(&pids) {
            break text;
        }
        assert!(
            Instant::now() < until,
            "the credential process never wrote {}",
            pids.display()
        );
        // A poll interval, not a synchronisation: the loop ends on the file alone.
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = wait_bounded(child, &what).kmsenv_error(&[]);
    let recorded: Vec<i32> = recorded
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let alive: Vec<i32> = recorded.iter().copied().filter(|&p| !gone(p)).collect();
    for &p in &alive {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(
        alive.is_empty(),
        "still running after kmsenv gave up: {alive:?} (shell, sleep: {recorded:?})\n{}",
        out.stderr
    );
    sandbox.assert_command_did_not_run();
}

// ---------------------------------------------------------------------------
// edit's stale scratch folders (in /dev/shm, where edit puts them here)

const SHM: &str = "/dev/shm";

/// A scratch-like folder in /dev/shm named `kmsenv-edit-<16 hex>` (or `name`
/// when given), holding a file, last modified `age` ago (negative: in the future).
fn scratch_folder(name: Option<&str>, age_s: i64) -> PathBuf {
    let dir = new_scratch_folder(name);
    set_age(&dir, age_s);
    dir
}

/// A scratch-like folder as [`scratch_folder`] makes it, not aged yet: a test that
/// locks or hands it over does that first and ages it last, so that another test's
/// `edit` never sees it old and unprotected.
fn new_scratch_folder(name: Option<&str>) -> PathBuf {
    let hex = random_hex(8);
    let name = name.map_or(format!("kmsenv-edit-{hex}"), |n| format!("{n}{hex}"));
    let dir = Path::new(SHM).join(name);
    std::fs::create_dir(&dir).expect("create scratch folder");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(dir.join("kmsenv.env"), "LEFT=\"plaintext\"\n").expect("write scratch file");
    dir
}

/// Sets `dir`'s mtime `age_s` ago (negative: in the future).
fn set_age(dir: &Path, age_s: i64) {
    let when = if age_s >= 0 {
        SystemTime::now() - Duration::from_secs(age_s as u64)
    } else {
        SystemTime::now() + Duration::from_secs((-age_s) as u64)
    };
    std::fs::File::open(dir)
        .and_then(|f| f.set_modified(when))
        .expect("set the folder's mtime");
}

/// `EDITOR=true kmsenv -f FILE edit` on a small plain file: the scratch folder
/// is made (and the sweep runs), nothing is changed.
fn run_edit(sandbox: &Sandbox) {
    let file = sandbox.path("kmsenv.toml");
    sandbox.write(&file, &keyless_file(&["PLAIN = \"x\""]));
    sandbox
        .kmsenv()
        .file(&file)
        .env("EDITOR", "true")
        .arg("edit")
        .run()
        .ok();
}

/// Removes a folder the test made, if still there.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn edit_removes_its_own_stale_scratch_folder() {
    let sandbox = Sandbox::new();
    let stale = Cleanup(scratch_folder(None, 3600));
    run_edit(&sandbox);
    assert!(
        !stale.0.exists(),
        "{} should have been removed",
        stale.0.display()
    );
}

#[test]
fn edit_keeps_a_scratch_folder_that_a_running_edit_holds() {
    let sandbox = Sandbox::new();
    let live = Cleanup(new_scratch_folder(None));
    let held = nix::fcntl::Flock::lock(
        std::fs::File::open(&live.0).expect("open folder"),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .expect("lock the folder as a running edit does");
    set_age(&live.0, 3600);
    run_edit(&sandbox);
    assert!(
        live.0.join("kmsenv.env").exists(),
        "a live edit's folder was removed"
    );
    drop(held);
}

#[test]
fn edit_keeps_a_scratch_folder_newer_than_itself() {
    let sandbox = Sandbox::new();
    let fresh = Cleanup(scratch_folder(None, -3600));
    run_edit(&sandbox);
    assert!(
        fresh.0.join("kmsenv.env").exists(),
        "a folder newer than the edit was removed"
    );
}

#[test]
fn edit_keeps_another_users_scratch_folder() {
    let sandbox = Sandbox::new();
    let foreign = Cleanup(new_scratch_folder(None));
    // Needs root, as the test suite runs: hand it to `nobody`.
    std::os::unix::fs::chown(&foreign.0, Some(65534), Some(65534)).expect("chown to nobody (run as root)");
    set_age(&foreign.0, 3600);
    run_edit(&sandbox);
    assert!(
        foreign.0.join("kmsenv.env").exists(),
        "another user's folder was removed"
    );
}

#[test]
fn edit_keeps_a_folder_not_named_as_its_own() {
    let sandbox = Sandbox::new();
    let other = Cleanup(scratch_folder(Some("kmsenv-edit-x"), 3600));
    run_edit(&sandbox);
    assert!(
        other.0.join("kmsenv.env").exists(),
        "a folder with another name was removed"
    );
}

// ---------------------------------------------------------------------------
// export --format dotenv, sourced by a shell

/// Values that a shell would run or expand if the quoting were wrong, one per
/// variable, each with the file touched if it ran.
const HOSTILE_VALUES: &[(&str, &str)] = &[
    ("SUBST", "$(touch RAN-subst)"),
    ("BACKTICKS", "`touch RAN-backticks`"),
    ("VAR", "$HOME and $PATH"),
    ("SINGLE", "it's a 'quote'"),
    ("DOUBLE", "say \"hi\" `x`"),
    ("BACKSLASH", "a\\b\\n c:\\path"),
    ("NEWLINES", "line 1\nline 2\n\nline 4"),
    ("TRAILING", "trailing spaces  "),
    ("HASH", " # not a comment"),
];

/// A plain file with [`HOSTILE_VALUES`] (TOML-escaped), exported as dotenv.
fn exported_dotenv(sandbox: &Sandbox, values: &[(&str, &str)]) -> Output {
    let file = sandbox.path("kmsenv.toml");
    let entries: Vec<String> = values
        .iter()
        .map(|(n, v)| format!("{n} = {}", toml_string(v)))
        .collect();
    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
    sandbox.write(&file, &keyless_file(&entries));
    sandbox
        .kmsenv()
        .file(&file)
        .args(["export", "--format", "dotenv"])
        .run()
}

/// `SHELL -c 'set -a; . ./out.env; printf "%s\0" "$A" …'` in the sandbox: the
/// values as the shell sees them.
fn sourced_by(sandbox: &Sandbox, shell: &str, names: &[&str]) -> Vec<Vec<u8>> {
    let fields: Vec<String> = names.iter().map(|n| format!("\"${n}\"")).collect();
    let script = format!("set -a; . ./out.env; printf '%s\\0' {}", fields.join(" "));
    let out = Command::new(shell)
        .args(["-c", &script])
        .current_dir(sandbox.path(""))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/home-of-the-test")
        .output()
        .expect("run the shell");
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fields: Vec<Vec<u8>> = out.stdout.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    fields.pop(); // after the last NUL
    fields
}

fn assert_sourced_exactly(shell: &str) {
    let sandbox = Sandbox::new();
    let out = exported_dotenv(&sandbox, HOSTILE_VALUES).ok();
    sandbox.write(&sandbox.path("out.env"), &out.stdout_text());
    let names: Vec<&str> = HOSTILE_VALUES.iter().map(|(n, _)| *n).collect();
    let got = sourced_by(&sandbox, shell, &names);
    for ((name, want), got) in HOSTILE_VALUES.iter().zip(&got) {
        assert_eq!(
            String::from_utf8_lossy(got),
            *want,
            "{shell} read {name} differently from:\n{}",
            out.stdout_text()
        );
    }
    assert_eq!(got.len(), HOSTILE_VALUES.len());
    let ran: Vec<OsString> = std::fs::read_dir(sandbox.path(""))
        .expect("list sandbox")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("RAN-"))
        .collect();
    assert!(ran.is_empty(), "{shell} ran commands from the export: {ran:?}");
}

#[test]
fn export_dotenv_sourced_by_sh_gives_back_hostile_values_and_runs_nothing() {
    assert_sourced_exactly("sh");
}

#[test]
fn export_dotenv_sourced_by_bash_gives_back_hostile_values_and_runs_nothing() {
    assert_sourced_exactly("bash");
}

#[test]
fn export_dotenv_refuses_a_value_no_quoting_carries_and_names_the_variable() {
    let sandbox = Sandbox::new();
    let out = exported_dotenv(
        &sandbox,
        &[("OK", "fine"), ("MIXED", "it's $(x)"), ("BRACES", "${HOME}")],
    )
    .kmsenv_error(&["MIXED", "--format shell"]);
    assert!(
        out.stdout.is_empty(),
        "nothing may be written: {}",
        out.stdout_text()
    );
    assert!(
        !out.stderr.contains("it's"),
        "the value reached a message:\n{}",
        out.stderr
    );
}
