//! Canaries: secret values that must never show up where they do not belong.
//!
//! Each test makes its own random canary (`CANARY-<hex>`; every secret value of the
//! test starts with it) and runs every command — successes and failures, with and
//! without `-v`, always with `RUST_BACKTRACE=1` — then asserts:
//! - no canary in stdout or stderr, except `get`'s and `export`'s stdout and the
//!   output of `exec`'s child (the child's business);
//! - no canary in any file modified since the test started under the test's folder,
//!   /tmp, /dev/shm and `$XDG_RUNTIME_DIR` (walked after every command);
//! - no canary in any process's argv (`/proc/*/cmdline`) while kmsenv holds one.

mod support;

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use support::random::random_hex;
use support::*;

/// How long a test waits (polling) for another process to reach a state.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Files larger than this are not read by the disk walk (none of ours come close).
const SCAN_SIZE_LIMIT: u64 = 64 << 20;

/// A fresh `CANARY-<32 hex digits>`.
fn new_canary() -> String {
    format!("CANARY-{}", random_hex(16))
}

/// The secret values of one test; each starts with the canary.
struct Secrets {
    canary: String,
}

impl Secrets {
    fn value(&self, what: &str) -> Vec<u8> {
        format!("{}-{what}", self.canary).into_bytes()
    }
}

/// What may print a value.
#[derive(Clone, Copy, PartialEq)]
enum Stdout {
    /// stdout must not hold a canary.
    Clean,
    /// stdout may hold one (`get`, `export`, `exec`'s child).
    MayHoldValues,
}

/// One test's watch: runs kmsenv, checks every output and the disk, and gathers
/// every problem so that the test reports them all.
struct Watch {
    sandbox: Sandbox,
    secrets: Secrets,
    verbose: bool,
    started: SystemTime,
    /// Folders walked after every command.
    dirs: Vec<PathBuf>,
    problems: Vec<String>,
    runs: usize,
}

impl Watch {
    fn new(verbose: bool) -> Watch {
        // mtimes have coarse granularity on some filesystems: start a little early.
        let started = SystemTime::now() - Duration::from_secs(2);
        let sandbox = Sandbox::new();
        let mut dirs = vec![
            sandbox.dir.path().to_path_buf(),
            PathBuf::from("/tmp"),
            PathBuf::from("/dev/shm"),
        ];
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
            dirs.push(PathBuf::from(runtime));
        }
        Watch {
            sandbox,
            secrets: Secrets { canary: new_canary() },
            verbose,
            started,
            dirs,
            problems: Vec::new(),
            runs: 0,
        }
    }

    fn canary(&self) -> &[u8] {
        self.secrets.canary.as_bytes()
    }

    /// kmsenv with `RUST_BACKTRACE=1`, and `-v` in the verbose run.
    fn kmsenv(&self) -> Kmsenv {
        let run = self
            .sandbox
            .kmsenv()
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1");
        if self.verbose { run.arg("-v") } else { run }
    }

    /// Runs one step, checks its outputs and the disk; `code` is the expected exit code.
    fn step(&mut self, what: &str, run: Kmsenv, code: i32, stdout: Stdout) -> Output {
        let out = run.run();
        self.runs += 1;
        let what = format!("{what} (`{}`)", out.what);
        if out.code() != Some(code) {
            self.problems.push(format!(
                "{what}: expected exit {code}, got {:?}; stderr: {}",
                out.code(),
                out.stderr
            ));
        }
        if contains_bytes(out.stderr.as_bytes(), self.canary()) {
            self.problems
                .push(format!("{what}: a secret value is in stderr:\n{}", out.stderr));
        }
        if stdout == Stdout::Clean && contains_bytes(&out.stdout, self.canary()) {
            self.problems.push(format!(
                "{what}: a secret value is in stdout:\n{}",
                out.stdout_text()
            ));
        }
        if out.stderr.contains("panicked") {
            self.problems.push(format!("{what}: panicked:\n{}", out.stderr));
        }
        self.scan_disk(&what);
        out
    }

    /// Walks the watched folders for files modified since the test started that hold
    /// the canary.
    fn scan_disk(&mut self, what: &str) {
        for dir in self.dirs.clone() {
            for path in files_holding(&dir, self.canary(), self.started) {
                self.problems
                    .push(format!("{what}: a secret value is on disk in {}", path.display()));
            }
        }
    }

    /// Fails the test with every problem found.
    fn finish(self) {
        eprintln!(
            "{} kmsenv runs checked (verbose: {}), {} problems",
            self.runs,
            self.verbose,
            self.problems.len()
        );
        assert!(
            self.problems.is_empty(),
            "{} leak problems:\n\n{}",
            self.problems.len(),
            self.problems.join("\n\n")
        );
    }
}

/// Regular files under `dir` (symlinks not followed, unreadable and special files
/// skipped) modified at or after `since` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8], since: SystemTime) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if !meta.is_file() || meta.len() > SCAN_SIZE_LIMIT {
                continue;
            }
            if meta.modified().is_ok_and(|m| m < since) {
                continue;
            }
            if let Ok(bytes) = std::fs::read(&path)
                && contains_bytes(&bytes, needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// The argv of every process whose command line holds `needle`.
fn processes_with_in_argv(needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && contains_bytes(&cmdline, needle)
        {
            found.push(format!(
                "pid {}: {}",
                name.to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// True while some thread of `pid` is blocked reading a pipe.
fn blocked_on_pipe_read(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .any(|task| std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.contains("pipe_read")))
}

/// The file every command test works on: made by `init` through the watch.
struct World {
    file: PathBuf,
    key: String,
    second_key: String,
}

/// `init`, then one value of each kind, each a canary: sealed, direct kms,
/// `file = true`, and a ciphertext made by another tool (`set --ciphertext`).
fn populate(w: &mut Watch) -> World {
    let key = w.sandbox.key();
    let second_key = w.sandbox.key();
    let file = w.sandbox.path("kmsenv.toml");
    let run = w
        .kmsenv()
        .file(&file)
        .args(["init", "--key", &key, "--context", "app=leaks"]);
    w.step("init", run, 0, Stdout::Clean);

    for (what, flags, name) in [
        ("set", &[][..], "SEALED"),
        ("set --kms", &["--kms"][..], "DIRECT"),
        ("set --as-file", &["--as-file"][..], "AS_FILE"),
    ] {
        let value = w.secrets.value(name);
        let run = w
            .kmsenv()
            .file(&file)
            .arg("set")
            .args(flags)
            .arg(name)
            .stdin(value);
        w.step(what, run, 0, Stdout::Clean);
    }
    let run = w
        .kmsenv()
        .file(&file)
        .args(["set", "--plain", "PLAIN=not-a-secret"]);
    w.step("set --plain", run, 0, Stdout::Clean);

    let blob = encrypt(REGION, &key, &w.secrets.value("CIPHERTEXT"), &[]);
    let run = w
        .kmsenv()
        .file(&file)
        .args(["set", "--ciphertext", "CIPHERTEXT"])
        .stdin(blob);
    w.step("set --ciphertext", run, 0, Stdout::Clean);
    World {
        file,
        key,
        second_key,
    }
}

/// Every command on a good file, then failures: a tampered file, KMS faults through
/// the proxy, a value with NUL, commands that cannot be executed.
fn every_command(verbose: bool) {
    let mut w = Watch::new(verbose);
    let World {
        file,
        key,
        second_key,
    } = populate(&mut w);
    let f = file.as_path();

    // Reading commands.
    for name in ["SEALED", "DIRECT", "AS_FILE", "CIPHERTEXT"] {
        let run = w.kmsenv().file(f).args(["get", name]);
        let out = w.step("get", run, 0, Stdout::MayHoldValues);
        if out.stdout != w.secrets.value(name) {
            w.problems
                .push(format!("get {name} did not print the value it was given"));
        }
    }
    for args in [
        &["list"][..],
        &["list", "--values-hash"],
        &["check"],
        &["keys", "list"],
    ] {
        let run = w.kmsenv().file(f).args(args);
        w.step(&args.join(" "), run, 0, Stdout::Clean);
    }
    for format in ["dotenv", "shell", "json"] {
        let run = w.kmsenv().file(f).args(["export", "--format", format]);
        let out = w.step("export", run, 0, Stdout::MayHoldValues);
        if !contains_bytes(&out.stdout, &w.secrets.value("SEALED")) {
            w.problems
                .push(format!("export --format {format} did not print the values"));
        }
    }

    // Writing commands.
    let run = w
        .kmsenv()
        .file(f)
        .args(["set", "SCRATCH"])
        .stdin(w.secrets.value("SCRATCH"));
    w.step("set (to unset next)", run, 0, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["unset", "SCRATCH"]);
    w.step("unset", run, 0, Stdout::Clean);
    let dotenv = format!(
        "IMPORTED={}\nIMPORTED_QUOTED=\"{}\"\n",
        w.secrets.canary, w.secrets.canary
    );
    let run = w.kmsenv().file(f).arg("import").stdin(dotenv);
    w.step("import (stdin)", run, 0, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["check", "--fix-mac"]);
    w.step("check --fix-mac", run, 0, Stdout::Clean);
    let run = w.kmsenv().file(f).arg("rotate");
    w.step("rotate", run, 0, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["rotate", "--kms-values"]);
    w.step("rotate --kms-values", run, 0, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["keys", "add", &second_key]);
    w.step("keys add", run, 0, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["keys", "list"]);
    w.step("keys list (two keys)", run, 0, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["keys", "remove", &second_key]);
    w.step("keys remove", run, 0, Stdout::Clean);

    // edit: a scripted editor changes the plain value; the scratch folder goes to a
    // private tmpfs folder given as XDG_RUNTIME_DIR (walked too) in the verbose run.
    let scratch_record = w.sandbox.path("scratch-path");
    let editor = w.sandbox.write_executable(
        "editor.sh",
        &format!(
            "#!/bin/sh\nset -e\nprintf %s \"$1\" > '{}'\nsed -i 's|^PLAIN=.*|PLAIN=\"edited\"|' \"$1\"\n",
            scratch_record.display()
        ),
    );
    let runtime = PathBuf::from(format!("/dev/shm/kmsenv-leaks-{}-{verbose}", std::process::id()));
    let mut run = w.kmsenv().file(f).env("EDITOR", &editor).arg("edit");
    if verbose {
        let _ = std::fs::remove_dir_all(&runtime);
        std::fs::create_dir(&runtime).expect("mkdir runtime dir");
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        w.dirs.push(runtime.clone());
        run = run.env("XDG_RUNTIME_DIR", &runtime);
    }
    w.step("edit", run, 0, Stdout::Clean);
    let scratch = std::fs::read_to_string(&scratch_record).unwrap_or_default();
    let expected_base = if verbose {
        runtime.as_path()
    } else {
        Path::new("/dev/shm")
    };
    if !Path::new(&scratch).starts_with(expected_base) {
        w.problems.push(format!(
            "the editor got {scratch:?}, not a file under {} (so the walk missed it)",
            expected_base.display()
        ));
    }
    let run = w.kmsenv().file(f).args(["get", "PLAIN"]);
    let out = w.step("get PLAIN after edit", run, 0, Stdout::Clean);
    if out.stdout != b"edited" {
        w.problems.push(format!(
            "the scripted editor's change did not land: PLAIN = {:?}",
            out.stdout_text()
        ));
    }

    // exec: success (the child prints its environment: its business), failures.
    let run = w.kmsenv().file(f).args(["exec", "--", "env", "-0"]);
    let out = w.step("exec (success)", run, 0, Stdout::MayHoldValues);
    if !contains_bytes(&out.stdout, &w.secrets.value("SEALED")) {
        w.problems.push("the exec'd child did not get the values".into());
    }
    let run = w.kmsenv().file(f).args(["exec", "--", "no-such-command-5e1f"]);
    w.step("exec (command not found)", run, 127, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["exec", "--"]).arg(w.sandbox.dir.path());
    w.step("exec (not executable)", run, 126, Stdout::Clean);
    let run = w.kmsenv().file(f).args(["exec", "--", "sh", "-c", "exit 3"]);
    w.step("exec (the child fails)", run, 3, Stdout::Clean);

    tampered_file_fails_without_leaking(&mut w, f);
    kms_faults_fail_without_leaking(&mut w, f);
    nul_value_fails_without_leaking(&mut w, f, &key);

    let _ = std::fs::remove_dir_all(&runtime);
    w.finish();
}

/// A plain value edited by hand (MAC mismatch), then two sealed values swapped: every
/// reading command fails, naming things but never a value.
fn tampered_file_fails_without_leaking(w: &mut Watch, f: &Path) {
    let good = w.sandbox.read(f);
    let plain = entry_line(&good, "PLAIN");
    w.sandbox
        .write(f, &replace_once(&good, plain, "PLAIN = \"edited-by-hand\""));
    for args in [
        &["exec", "--", "env", "-0"][..],
        &["get", "SEALED"],
        &["export", "--format", "shell"],
        &["check"],
    ] {
        let run = w.kmsenv().file(f).args(args);
        w.step(&format!("{} (MAC mismatch)", args[0]), run, 125, Stdout::Clean);
    }

    let (a, b) = (sealed_of(&good, "SEALED"), sealed_of(&good, "IMPORTED"));
    w.sandbox.write(f, &swap(&good, &a, &b));
    for args in [
        &["check", "--fix-mac"][..],
        &["get", "SEALED"],
        &["exec", "--", "true"],
    ] {
        let run = w.kmsenv().file(f).args(args);
        w.step(&format!("{} (swapped values)", args[0]), run, 125, Stdout::Clean);
    }
    w.sandbox.write(f, &good);
}

/// KMS refusing or failing through the fault proxy, including after some values
/// were already decrypted (the first Decrypt goes through, the rest fail).
fn kms_faults_fail_without_leaking(w: &mut Watch, f: &Path) {
    let proxy = Proxy::start();
    let rule_sets = [
        (
            "every Decrypt denied",
            r#"[{"op": "Decrypt", "action": "error", "code": "AccessDeniedException"}]"#,
        ),
        (
            "first Decrypt answered, then IncorrectKeyException for everything",
            r#"[{"op": "Decrypt", "times": 1, "action": "latency", "ms": 0},
                {"op": null, "action": "error", "code": "IncorrectKeyException"}]"#,
        ),
        (
            "first Decrypt answered, then 500 for everything",
            r#"[{"op": "Decrypt", "times": 1, "action": "latency", "ms": 0},
                {"op": null, "action": "status", "status": 500}]"#,
        ),
    ];
    for (what, rules) in rule_sets {
        for args in [
            &["exec", "--", "env", "-0"][..],
            &["get", "DIRECT"],
            &["export"],
            &["check"],
            &["rotate", "--kms-values"],
        ] {
            proxy.reset();
            proxy.rules(rules);
            let run = w
                .kmsenv()
                .endpoint(&proxy.endpoint())
                .args(["--timeout", "20"])
                .file(f)
                .args(args);
            w.step(&format!("{} ({what})", args[0]), run, 125, Stdout::Clean);
        }
    }
    // A hang cut by the deadline.
    proxy.reset();
    proxy.rules(r#"[{"op": "Decrypt", "times": 1, "action": "latency", "ms": 0}, {"op": "Decrypt", "action": "hang"}]"#);
    let run = w
        .kmsenv()
        .endpoint(&proxy.endpoint())
        .args(["--timeout", "2"])
        .file(f)
        .args(["exec", "--", "env", "-0"]);
    w.step("exec (KMS hangs after one answer)", run, 125, Stdout::Clean);
}

/// A direct value whose plaintext holds a canary and a NUL: refused by name.
fn nul_value_fails_without_leaking(w: &mut Watch, f: &Path, key: &str) {
    let mut value = w.secrets.value("NUL");
    value.extend_from_slice(b"\0after-the-nul");
    let blob = encrypt(REGION, key, &value, &[("kmsenv:var", "WITH_NUL")]);
    let extra = w.sandbox.path("nul.toml");
    w.sandbox.write(
        &extra,
        &keyless_file(&[&format!(
            "WITH_NUL = {{ kms = \"{blob}\", key = \"{key}\", context = {{ \"kmsenv:var\" = \"WITH_NUL\" }} }}"
        )]),
    );
    let run = w.kmsenv().file(f).file(&extra).args(["exec", "--", "env", "-0"]);
    let out = w.step("exec (a value with NUL)", run, 125, Stdout::Clean);
    if !out.stderr.contains("WITH_NUL") {
        w.problems
            .push(format!("the NUL error should name WITH_NUL:\n{}", out.stderr));
    }
    let run = w.kmsenv().file(&extra).arg("check");
    w.step("check (a value with NUL)", run, 125, Stdout::Clean);
}

#[test]
fn no_command_prints_or_leaves_a_secret() {
    every_command(false);
}

#[test]
fn no_command_prints_or_leaves_a_secret_with_verbose() {
    every_command(true);
}

// ---------------------------------------------------------------------------
// argv while kmsenv works

/// Reads lines from a child's stdout on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls (bounded) until `ready` holds; panics with `what` after the limit.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {WAIT_LIMIT:?}"
        );
        // Bounded poll of another process's state.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn no_process_argv_holds_a_secret_while_kmsenv_works() {
    let mut w = Watch::new(false);
    let World { file, .. } = populate(&mut w);
    let canary = w.secrets.canary.clone();

    // 1. `set` holding a secret read from stdin, waiting for the rest of it.
    let (mut child, what) = w.kmsenv().file(&file).args(["set", "WAITING"]).spawn_piped();
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(&w.secrets.value("WAITING"))
        .expect("write the value");
    stdin.flush().expect("flush");
    let pid = child.id();
    wait_until("`set` blocking on the rest of stdin", || {
        blocked_on_pipe_read(pid)
    });
    let during_set = processes_with_in_argv(canary.as_bytes());
    w.scan_disk("set, while reading stdin");
    drop(stdin);
    let out = wait_bounded(child, &what);
    assert_eq!(out.code(), Some(0), "set failed: {}", out.stderr);
    assert!(
        during_set.is_empty(),
        "a secret is in argv while `set` waits: {during_set:?}"
    );

    // 2. `exec`'s child holding the secrets in its environment.
    let (mut child, what) = w
        .kmsenv()
        .file(&file)
        .args(["exec", "--", "sh", "-c", "echo ready; read line; exit 0"])
        .spawn_piped();
    let lines = lines_of(&mut child);
    let first = lines
        .recv_timeout(WAIT_LIMIT)
        .expect("the exec'd child says ready");
    assert_eq!(first, "ready");
    let during_exec = processes_with_in_argv(canary.as_bytes());
    drop(child.stdin.take());
    let out = wait_bounded(child, &what);
    assert_eq!(out.code(), Some(0), "exec failed: {}", out.stderr);
    assert!(
        during_exec.is_empty(),
        "a secret is in argv after exec: {during_exec:?}"
    );

    // 3. `edit` with the plaintext open in an editor that waits for a go file.
    let ready = w.sandbox.path("editor-ready");
    let go = w.sandbox.path("editor-go");
    let editor = w.sandbox.write_executable(
        "waiting-editor.sh",
        &format!(
            "#!/bin/sh\n: > '{ready}'\n# bounded wait for the test's go file (30 s)\n\
             i=0; while [ ! -e '{go}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n\
             sed -i 's|^PLAIN=.*|PLAIN=\"edited\"|' \"$1\"\n",
            ready = ready.display(),
            go = go.display()
        ),
    );
    let (child, what) = w
        .kmsenv()
        .file(&file)
        .env("EDITOR", &editor)
        .arg("edit")
        .spawn_piped();
    wait_until("the editor starting", || ready.exists());
    let during_edit = processes_with_in_argv(canary.as_bytes());
    std::fs::write(&go, "").expect("write go file");
    let out = wait_bounded(child, &what);
    assert_eq!(out.code(), Some(0), "edit failed: {}", out.stderr);
    assert!(
        during_edit.is_empty(),
        "a secret is in argv during edit: {during_edit:?}"
    );
    w.scan_disk("after edit");

    // 4. `exec` waiting on a slow KMS (its deadline still ahead).
    let proxy = Proxy::start();
    proxy.config("{\"latency_ms\": 1500}");
    let (mut child, what) = w
        .kmsenv()
        .endpoint(&proxy.endpoint())
        .file(&file)
        .args(["exec", "--", "true"])
        .spawn_piped();
    drop(child.stdin.take());
    wait_until("kmsenv calling KMS", || proxy.total() > 0);
    let during_kms = processes_with_in_argv(canary.as_bytes());
    let out = wait_bounded(child, &what);
    assert_eq!(
        out.code(),
        Some(0),
        "exec through the slow proxy failed: {}",
        out.stderr
    );
    assert!(
        during_kms.is_empty(),
        "a secret is in argv while KMS answers: {during_kms:?}"
    );

    w.finish();
}

/// The detectors themselves: a planted canary on disk and in an argv is found.
#[test]
fn the_detectors_find_a_planted_canary() {
    let started = SystemTime::now() - Duration::from_secs(2);
    let canary = new_canary();
    for dir in ["/tmp", "/dev/shm"] {
        let planted = temp_dir_in(Path::new(dir));
        std::fs::write(planted.path().join("planted"), format!("xx{canary}yy")).expect("plant");
        let found = files_holding(Path::new(dir), canary.as_bytes(), started);
        assert_eq!(found, vec![planted.path().join("planted")], "in {dir}");
    }

    let mut child = std::process::Command::new("sh")
        .args(["-c", "read line", "sh", &canary])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sh");
    // spawn() may return before the child's execve shows in /proc.
    let cmdline = format!("/proc/{}/cmdline", child.id());
    wait_until("sh showing its argv", || {
        std::fs::read(&cmdline).is_ok_and(|b| contains_bytes(&b, b"read line"))
    });
    let found = processes_with_in_argv(canary.as_bytes());
    drop(child.stdin.take());
    let _ = child.wait();
    assert_eq!(found.len(), 1, "{found:?}");
}
