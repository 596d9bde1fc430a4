//! `kmsenv edit` with scripted editors: `/bin/sh` scripts in the test's folder,
//! passed as `EDITOR`, that get the scratch file's path as `$1`.
//!
//! What is checked: only changed entries are re-sealed and entries keep their kind;
//! the scratch file is private (0600 in a 0700 folder) on a tmpfs and gone on every
//! way out (success, editor failure, parse errors, SIGTERM, SIGINT); a file changed
//! while editing is not overwritten; no value is printed.

mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use support::*;

/// How long a test waits for the editor to start, or for kmsenv to exit after a signal.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

const SEALED_1: &[u8] = b"sealed-one-7f3a";
const SEALED_2: &[u8] = b"sealed-two-91bc";
const PLAIN: &[u8] = b"plain-value-55de";
const DIRECT: &[u8] = b"direct-kms-value-c0a8";
const NAMES: &[&str] = &["SEALED_1", "SEALED_2", "PLAIN", "DIRECT"];

/// A file with two sealed values, a plain one and a direct `kms` one.
const POPULATED: &[Entry] = &[
    sealed("SEALED_1", SEALED_1),
    sealed("SEALED_2", SEALED_2),
    plain("PLAIN", PLAIN),
    direct("DIRECT", DIRECT),
];

/// Writes an editor script (`#!/bin/sh` + `body`) into the sandbox.
fn editor(sandbox: &Sandbox, name: &str, body: &str) -> PathBuf {
    sandbox.write_executable(name, &format!("#!/bin/sh\nset -e\n{body}"))
}

/// `EDITOR=editor kmsenv -f FILE edit`.
fn edit(sandbox: &Sandbox, file: &Path, editor: &Path) -> Output {
    sandbox
        .kmsenv()
        .file(file)
        .env("EDITOR", editor)
        .arg("edit")
        .run()
}

/// A shell line that replaces the line of `NAME=` with `NAME="value"` (no escapes).
fn sed_set(name: &str, value: &str) -> String {
    format!("sed -i 's|^{name}=.*|{name}=\"{value}\"|' \"$1\"\n")
}

#[track_caller]
fn assert_lines_kept(before: &str, after: &str, names: &[&str]) {
    for name in names {
        assert_eq!(
            entry_line(before, name),
            entry_line(after, name),
            "the entry {name} should keep its exact text"
        );
    }
}

// ---------------------------------------------------------------------------
// What an edit changes

#[test]
fn edit_reseals_only_the_changed_entry() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let script = editor(&sandbox, "ed.sh", &sed_set("SEALED_1", "sealed-one-changed"));

    edit(&sandbox, &file, &script).ok();

    let after = sandbox.read(&file);
    assert_ne!(sealed_of(&before, "SEALED_1"), sealed_of(&after, "SEALED_1"));
    assert_lines_kept(&before, &after, &["SEALED_2", "PLAIN", "DIRECT"]);
    sandbox.kmsenv().file(&file).arg("check").run().ok();
    assert_values(
        &sandbox.exec_env(&[&file]),
        &[
            ("SEALED_1", b"sealed-one-changed"),
            ("SEALED_2", SEALED_2),
            ("PLAIN", PLAIN),
            ("DIRECT", DIRECT),
        ],
    );
}

#[test]
fn edit_keeps_a_plain_entry_plain() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let script = editor(&sandbox, "ed.sh", &sed_set("PLAIN", "plain-changed"));

    edit(&sandbox, &file, &script).ok();

    let after = sandbox.read(&file);
    assert_eq!(entry_line(&after, "PLAIN"), "PLAIN = \"plain-changed\"");
    assert_lines_kept(&before, &after, &["SEALED_1", "SEALED_2", "DIRECT"]);
    assert_values(&sandbox.exec_env(&[&file]), &[("PLAIN", b"plain-changed")]);
}

#[test]
fn edit_keeps_a_kms_entry_kms_and_encrypts_the_new_value() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let script = editor(&sandbox, "ed.sh", &sed_set("DIRECT", "direct-changed"));

    edit(&sandbox, &file, &script).ok();

    let after = sandbox.read(&file);
    let (old, new) = (entry_line(&before, "DIRECT"), entry_line(&after, "DIRECT"));
    assert_ne!(kms_of(&before, "DIRECT"), kms_of(&after, "DIRECT"), "{new}");
    assert_eq!(quoted_field(old, "key"), quoted_field(new, "key"));
    let context = |line: &str| line[line.find("context").expect("a context")..].to_string();
    assert_eq!(context(old), context(new));
    assert!(!new.contains("sealed"), "{new}");
    assert_lines_kept(&before, &after, &["SEALED_1", "SEALED_2", "PLAIN"]);
    assert_values(&sandbox.exec_env(&[&file]), &[("DIRECT", b"direct-changed")]);
}

#[test]
fn edit_seals_a_new_line_as_a_new_entry() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let script = editor(
        &sandbox,
        "ed.sh",
        "printf 'BRAND_NEW=\"brand-new-value\"\\n' >> \"$1\"\n",
    );

    edit(&sandbox, &file, &script).ok();

    let after = sandbox.read(&file);
    assert!(!sealed_of(&after, "BRAND_NEW").is_empty());
    assert!(!after.contains("brand-new-value"), "{after}");
    assert_lines_kept(&before, &after, NAMES);
    sandbox.kmsenv().file(&file).arg("check").run().ok();
    assert_values(&sandbox.exec_env(&[&file]), &[("BRAND_NEW", b"brand-new-value")]);
}

#[test]
fn edit_removes_the_entry_of_a_deleted_line() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let script = editor(&sandbox, "ed.sh", "sed -i '/^SEALED_2=/d' \"$1\"\n");

    edit(&sandbox, &file, &script).ok();

    let after = sandbox.read(&file);
    assert!(!has_entry(&after, "SEALED_2"), "{after}");
    assert_lines_kept(&before, &after, &["SEALED_1", "PLAIN", "DIRECT"]);
    sandbox.kmsenv().file(&file).arg("check").run().ok();
    assert!(!sandbox.exec_env(&[&file]).contains_key("SEALED_2"));
}

/// Values that dotenv text must escape, or that are not UTF-8.
const AWKWARD: &[(&str, &[u8])] = &[
    ("QUOTES", b"say \"hi\" and 'bye'"),
    ("BACKSLASH", b"C:\\path\\n\\x not an escape"),
    ("DOLLAR", b"$HOME ${PATH} $(id) `id`"),
    ("LINES", b"line one\nline two\r\nend\n"),
    ("SPACES", b"  leading and trailing \t "),
    ("HASH", b"value # not a comment=still value"),
    ("BYTES", b"\xff\xfe raw \x01\x7f bytes \xc3\x28"),
    ("UNICODE", "päßwörd ✓ 🔑".as_bytes()),
];

#[test]
fn edit_keeps_awkward_values_byte_exact_when_another_line_changes() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    for (name, value) in AWKWARD {
        sandbox.set(&file, name, value);
    }
    let before = sandbox.read(&file);
    let script = editor(&sandbox, "ed.sh", &sed_set("SEALED_1", "sealed-one-changed"));

    edit(&sandbox, &file, &script).ok();

    let after = sandbox.read(&file);
    let names: Vec<&str> = AWKWARD.iter().map(|(name, _)| *name).collect();
    assert_lines_kept(&before, &after, &names);
    assert_values(&sandbox.exec_env(&[&file]), AWKWARD);
}

#[test]
fn edit_stores_escaped_text_written_in_the_editor_as_its_bytes() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let script = editor(
        &sandbox,
        "ed.sh",
        "cat >> \"$1\" <<'EOF'\n\
         ESCAPED=\"a\\nb \\\"q\\\" \\\\ \\$HOME 'x' # kept\"\n\
         SINGLE='literal \\n $HOME'\n\
         MULTI=\"first\n\
         second\"\n\
         EOF\n",
    );

    edit(&sandbox, &file, &script).ok();

    assert_values(
        &sandbox.exec_env(&[&file]),
        &[
            ("ESCAPED", b"a\nb \"q\" \\ $HOME 'x' # kept"),
            ("SINGLE", b"literal \\n $HOME"),
            ("MULTI", b"first\nsecond"),
        ],
    );
}

#[test]
fn edit_with_no_changes_leaves_the_file_byte_identical() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = std::fs::read(&file).expect("read");
    let script = editor(&sandbox, "ed.sh", "exit 0\n");

    edit(&sandbox, &file, &script).ok();

    assert_eq!(std::fs::read(&file).expect("read"), before);
}

#[test]
fn edit_refuses_to_write_when_the_file_changed_while_editing() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let script = editor(
        &sandbox,
        "ed.sh",
        &format!(
            "printf %s 'other-value' | '{bin}' -q -f '{file}' set OTHER\n{edit}",
            bin = env!("CARGO_BIN_EXE_kmsenv"),
            file = file.display(),
            edit = sed_set("SEALED_1", "lost-edit"),
        ),
    );

    edit(&sandbox, &file, &script).kmsenv_error(&["changed while you were editing"]);

    assert_values(
        &sandbox.exec_env(&[&file]),
        &[("OTHER", b"other-value"), ("SEALED_1", SEALED_1)],
    );
}

// ---------------------------------------------------------------------------
// The scratch file

/// Shell lines that append, for the scratch file `$1`: its mode, its folder's mode,
/// its file system type and its path, to `side`.
fn record(side: &Path) -> String {
    format!(
        "{{ stat -c '%a' \"$1\"; stat -c '%a' \"$(dirname \"$1\")\"; stat -f -c '%T' \"$1\"; \
         printf '%s\\n' \"$1\"; }} >> '{}'\n",
        side.display()
    )
}

/// One editor call as [`record`] saw it.
#[derive(Debug)]
struct Seen {
    file_mode: String,
    dir_mode: String,
    fs_type: String,
    path: PathBuf,
}

#[track_caller]
fn seen(side: &Path) -> Vec<Seen> {
    let text = std::fs::read_to_string(side).unwrap_or_else(|e| panic!("the editor did not record: {e}"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines.is_empty() && lines.len().is_multiple_of(4),
        "bad record:\n{text}"
    );
    lines
        .chunks(4)
        .map(|c| Seen {
            file_mode: c[0].into(),
            dir_mode: c[1].into(),
            fs_type: c[2].into(),
            path: c[3].into(),
        })
        .collect()
}

/// Every editor call saw a private scratch file on a tmpfs, and it is gone now.
#[track_caller]
fn assert_scratch_private_and_gone(side: &Path) -> Vec<Seen> {
    let calls = seen(side);
    for call in &calls {
        assert_eq!(call.file_mode, "600", "{call:?}");
        assert_eq!(call.dir_mode, "700", "{call:?}");
        assert_eq!(call.fs_type, "tmpfs", "{call:?}");
        assert!(!call.path.exists(), "the scratch file is still there: {call:?}");
        let dir = call.path.parent().expect("a folder");
        assert!(!dir.exists(), "the scratch folder is still there: {call:?}");
    }
    calls
}

#[test]
fn edit_scratch_file_is_private_on_tmpfs_and_removed_after_success() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let side = sandbox.path("side.txt");
    let body = format!("{}{}", record(&side), sed_set("SEALED_1", "changed"));
    let script = editor(&sandbox, "ed.sh", &body);

    edit(&sandbox, &file, &script).ok();

    assert_eq!(assert_scratch_private_and_gone(&side).len(), 1);
    assert_values(&sandbox.exec_env(&[&file]), &[("SEALED_1", b"changed")]);
}

#[test]
fn edit_scratch_file_is_removed_when_the_editor_fails() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let side = sandbox.path("side.txt");
    let body = format!("{}{}exit 3\n", record(&side), sed_set("SEALED_1", "changed"));
    let script = editor(&sandbox, "ed.sh", &body);

    edit(&sandbox, &file, &script).kmsenv_error(&[]);

    assert_scratch_private_and_gone(&side);
    assert_eq!(sandbox.read(&file), before);
}

#[test]
fn edit_reopens_the_editor_with_the_error_after_a_parse_error() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let side = sandbox.path("side.txt");
    let count = sandbox.path("count.txt");
    let shown = sandbox.path("shown-error.txt");
    let body = format!(
        "{record}n=$(cat '{count}' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{count}'\n\
         if [ $n = 1 ]; then\n\
           printf 'NOT A VALID LINE\\n' >> \"$1\"\n\
         else\n\
           grep '^# ERROR:' \"$1\" > '{shown}' || true\n\
           sed -i '/^NOT A VALID LINE$/d' \"$1\"\n\
           {fix}\
         fi\n",
        record = record(&side),
        count = count.display(),
        shown = shown.display(),
        fix = sed_set("SEALED_1", "fixed"),
    );
    let script = editor(&sandbox, "ed.sh", &body);

    edit(&sandbox, &file, &script).ok();

    assert_eq!(sandbox.read(&count).trim(), "2", "the editor should run twice");
    let error = sandbox.read(&shown);
    assert_eq!(error.lines().count(), 1, "one `# ERROR:` line: {error:?}");
    assert_eq!(assert_scratch_private_and_gone(&side).len(), 2);
    assert_values(&sandbox.exec_env(&[&file]), &[("SEALED_1", b"fixed")]);
}

#[test]
fn edit_gives_up_when_the_text_never_parses() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let side = sandbox.path("side.txt");
    let body = format!(
        "{}{}printf 'NOT A VALID LINE\\n' >> \"$1\"\n",
        record(&side),
        sed_set("SEALED_1", "never-applied")
    );
    let script = editor(&sandbox, "ed.sh", &body);

    edit(&sandbox, &file, &script).kmsenv_error(&[]);

    assert!(
        assert_scratch_private_and_gone(&side).len() >= 2,
        "the editor should be re-opened"
    );
    assert_eq!(sandbox.read(&file), before);
}

// ---------------------------------------------------------------------------
// Signals while the editor runs

/// `kmsenv -f FILE edit` with `EDITOR=editor`, as [`Kmsenv::new`] would run it, with
/// its output in files (an orphaned editor must not hold a pipe the test reads).
fn edit_command(sandbox: &Sandbox, file: &Path, editor: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kmsenv"));
    test_env(&mut command, sandbox.dir.path())
        .env("EDITOR", editor)
        .arg("-f")
        .arg(file)
        .arg("edit")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(sandbox.path("edit.stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(sandbox.path("edit.stderr")).expect("stderr file"));
    command
}

/// An editor that records itself (`PID PATH` in `ready`, written atomically), then
/// becomes `sleep 30`.
fn sleeping_editor(sandbox: &Sandbox, ready: &Path) -> PathBuf {
    let body = format!(
        "{record}printf '%s %s\\n' \"$$\" \"$1\" > '{ready}.tmp'\nmv '{ready}.tmp' '{ready}'\nexec sleep 30\n",
        record = record(&sandbox.path("side.txt")),
        ready = ready.display(),
    );
    editor(sandbox, "ed.sh", &body)
}

/// Waits (bounded) until the editor has written `ready`; its (pid, scratch path).
fn wait_for_editor(kmsenv: &mut Child, ready: &Path) -> (i32, PathBuf) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Some((pid, path)) = text.trim_end().split_once(' ')
        {
            return (pid.parse().expect("editor pid"), PathBuf::from(path));
        }
        if let Ok(Some(status)) = kmsenv.try_wait() {
            panic!("kmsenv exited ({status}) before the editor started");
        }
        assert!(
            Instant::now() < deadline,
            "the editor did not start within {WAIT_LIMIT:?}"
        );
        // Bounded readiness poll for a file written by another process.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for kmsenv to exit, killing it and failing if it takes longer than the limit.
fn wait_exit(mut child: Child) -> ExitStatus {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(WAIT_LIMIT) {
        Ok(status) => status.expect("wait for kmsenv"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            panic!("kmsenv did not exit within {WAIT_LIMIT:?} of the signal");
        }
    }
}

/// A pidfd: a handle on a process that is not our child, immune to PID reuse.
struct PidFd(OwnedFd);

impl PidFd {
    fn open(pid: i32) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a non-negative result is a descriptor that we now own.
        (fd >= 0).then(|| PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Whether the process exits within `limit` (poll on the pidfd, no sleeping).
    fn exits_within(&self, limit: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as libc::c_int) };
        n == 1
    }

    fn kill(&self) {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number and no info.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// The sleeping editor of a test, killed when the test ends whatever happened.
struct EditorGuard(Option<PidFd>);

impl Drop for EditorGuard {
    fn drop(&mut self) {
        if let Some(pidfd) = &self.0 {
            pidfd.kill();
        }
    }
}

#[test]
fn edit_scratch_file_is_removed_when_kmsenv_gets_sigterm() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let ready = sandbox.path("ready.txt");
    let script = sleeping_editor(&sandbox, &ready);
    let mut child = edit_command(&sandbox, &file, &script)
        .spawn()
        .expect("start kmsenv");
    let (editor_pid, scratch) = wait_for_editor(&mut child, &ready);
    let _editor = EditorGuard(PidFd::open(editor_pid));
    assert!(scratch.exists());

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM kmsenv");
    let status = wait_exit(child);

    assert!(!status.success(), "kmsenv should fail on SIGTERM: {status:?}");
    assert_scratch_private_and_gone(&sandbox.path("side.txt"));
    assert_eq!(sandbox.read(&file), before);
}

/// kmsenv holds its signals off while it starts the editor (so that a signal is
/// handled only once the editor's pid is known): the editor itself must start
/// with none blocked, or ^C and kill would not reach it.
#[test]
fn the_editor_starts_with_no_signal_blocked() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let side = sandbox.path("mask.txt");
    let body = format!("grep '^SigBlk:' /proc/self/status > '{}'\n", side.display());
    let script = editor(&sandbox, "ed.sh", &body);

    edit(&sandbox, &file, &script).ok();

    assert_eq!(sandbox.read(&side).trim(), "SigBlk:\t0000000000000000");
}

#[test]
fn edit_sigterm_also_ends_the_editor() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let ready = sandbox.path("ready.txt");
    let script = sleeping_editor(&sandbox, &ready);
    let mut child = edit_command(&sandbox, &file, &script)
        .spawn()
        .expect("start kmsenv");
    let (editor_pid, _) = wait_for_editor(&mut child, &ready);
    let editor = EditorGuard(PidFd::open(editor_pid));

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM kmsenv");
    wait_exit(child);

    let pidfd = editor.0.as_ref().expect("the editor was running");
    assert!(
        pidfd.exits_within(Duration::from_secs(10)),
        "the editor (pid {editor_pid}) still runs after kmsenv was terminated"
    );
}

#[test]
fn edit_scratch_file_is_removed_when_the_process_group_gets_sigint() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let before = sandbox.read(&file);
    let ready = sandbox.path("ready.txt");
    let script = sleeping_editor(&sandbox, &ready);
    let mut child = edit_command(&sandbox, &file, &script)
        .process_group(0)
        .spawn()
        .expect("start kmsenv");
    let (editor_pid, _) = wait_for_editor(&mut child, &ready);
    let _editor = EditorGuard(PidFd::open(editor_pid));

    killpg(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT the group");
    let status = wait_exit(child);

    let stderr = sandbox.read(&sandbox.path("edit.stderr"));
    assert_eq!(
        status.code(),
        Some(125),
        "kmsenv should fail: {status:?}\n{stderr}"
    );
    assert_scratch_private_and_gone(&sandbox.path("side.txt"));
    assert_eq!(sandbox.read(&file), before);
}

// ---------------------------------------------------------------------------
// No value is printed

#[track_caller]
fn assert_no_value_in(out: &Output, values: &[&[u8]]) {
    for value in values {
        assert!(
            !contains_bytes(&out.all_output(), value),
            "a value ({}) appears in the output of `{}`:\n{}",
            String::from_utf8_lossy(value),
            out.what,
            String::from_utf8_lossy(&out.all_output())
        );
    }
}

#[test]
fn edit_prints_no_value_on_success() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let body = format!(
        "{}{}printf 'ADDED=\"added-value-4e21\"\\n' >> \"$1\"\n",
        sed_set("SEALED_1", "new-sealed-value-1d9f"),
        sed_set("PLAIN", "new-plain-value-77aa")
    );
    let script = editor(&sandbox, "ed.sh", &body);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .env("EDITOR", &script)
        .args(["-v", "edit"])
        .run()
        .ok();

    assert_no_value_in(
        &out,
        &[
            SEALED_1,
            SEALED_2,
            PLAIN,
            DIRECT,
            b"new-sealed-value-1d9f",
            b"new-plain-value-77aa",
            b"added-value-4e21",
        ],
    );
}

#[test]
fn edit_prints_no_value_when_the_text_does_not_parse() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", POPULATED);
    let body = format!(
        "{}printf 'BROKEN new-value-without-equals-3c3c\\nX=\"unterminated-value-8b8b\\n' >> \"$1\"\n",
        sed_set("SEALED_1", "new-sealed-value-1d9f")
    );
    let script = editor(&sandbox, "ed.sh", &body);

    let out = edit(&sandbox, &file, &script).kmsenv_error(&[]);

    assert_no_value_in(
        &out,
        &[
            SEALED_1,
            SEALED_2,
            PLAIN,
            DIRECT,
            b"new-sealed-value-1d9f",
            b"new-value-without-equals-3c3c",
            b"unterminated-value-8b8b",
        ],
    );
}
