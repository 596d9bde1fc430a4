//! Writes never lose data: a writer killed at any moment leaves the old file or the
//! new one; concurrent writers are serialised; mode and owner survive a rewrite; a
//! read-only folder or a full disk fail closed with the old file intact and no
//! temporary file left behind.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use support::random::Rng;
use support::*;

/// Busy-waits until `at`. This is the fault injection's timing (when the SIGKILL
/// lands), not synchronisation; a spin is far more precise than a sleep at this scale.
fn spin_until(at: Instant) {
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// When to SIGKILL the next writer. A quarter of the kills land 0–4 ms after spawn,
/// a quarter anywhere in a whole run after stdin was closed, and half within ±30 % of
/// the *edge*: where, after stdin is closed, the change lands in the file. The edge
/// starts from a calibration and moves to the boundary between kills that left the
/// old file and kills that found the new one, so that many kills fall around the
/// temporary file, the fsync and the rename, however loaded the machine is.
struct KillClock {
    rng: Rng,
    edge: Duration,
}

impl KillClock {
    /// (measured from spawn rather than from stdin closed, delay).
    fn next(&mut self) -> (bool, Duration) {
        let edge = self.edge;
        match self.rng.next() % 4 {
            0 => (true, self.rng.below(Duration::from_millis(4))),
            1 => (false, self.rng.below(edge + edge / 3)),
            _ => (false, edge * 7 / 10 + self.rng.below(edge * 6 / 10)),
        }
    }

    /// The change landed before `delay`, or not at all: the edge is at most, or at
    /// least, `delay`.
    fn learn(&mut self, from_spawn: bool, delay: Duration, landed: bool) {
        if !from_spawn && ((landed && delay < self.edge) || (!landed && delay > self.edge)) {
            self.edge = delay;
        }
    }
}

/// Temporary files kmsenv left next to `file` (`.NAME.kmsenv-*.tmp`).
fn leftover_temp_files(file: &Path) -> Vec<PathBuf> {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!(".{name}.kmsenv-");
    std::fs::read_dir(file.parent().unwrap())
        .expect("read folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) || n.ends_with(".tmp")
        })
        .collect()
}

/// `kmsenv -f FILE get NAME`, asserted to succeed.
#[track_caller]
fn get(sandbox: &Sandbox, file: &Path, name: &str) -> Vec<u8> {
    sandbox.kmsenv().file(file).args(["get", name]).run().ok().stdout
}

/// `kmsenv -f FILE check`, asserted to succeed.
#[track_caller]
fn check(sandbox: &Sandbox, file: &Path) {
    sandbox.kmsenv().file(file).arg("check").run().ok();
}

/// How one killed writer ended.
#[derive(Default, Debug)]
struct Tally {
    /// Killed before its change reached the file (the old value is there).
    killed_before: usize,
    /// Killed after its change reached the file but before it exited.
    killed_after: usize,
    /// Finished before the signal came.
    finished: usize,
}

/// Spawns `kmsenv -f FILE ARGS…` (writing `stdin`, then closing it) and SIGKILLs it
/// `delay` after spawn (`from_spawn`) or after stdin was closed. True if the signal
/// killed it, false if it had already finished successfully.
fn spawn_and_kill(
    sandbox: &Sandbox,
    file: &Path,
    args: &[&str],
    stdin: &[u8],
    delay: Duration,
    from_spawn: bool,
) -> bool {
    let spawned = Instant::now();
    let (mut child, what) = sandbox.kmsenv().file(file).args(args).spawn_piped();
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A closed read end (kmsenv already killed) is not an error here.
        let _ = pipe.write_all(stdin);
    }
    let closed = Instant::now();
    spin_until(if from_spawn { spawned } else { closed } + delay);
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let out = wait_bounded(child, &what);
    match (out.status.signal(), out.status.code()) {
        (Some(9), _) => true,
        (None, Some(0)) => false,
        _ => panic!(
            "`{what}` ended neither killed nor successful: {:?}\n{}",
            out.status, out.stderr
        ),
    }
}

/// The longest of a few undisturbed runs: the window the kills are spread over.
fn calibrate(sandbox: &Sandbox, file: &Path, args: &[&str], stdin: &[u8]) -> Duration {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            sandbox.kmsenv().file(file).args(args).stdin(stdin).run().ok();
            start.elapsed()
        })
        .max()
        .unwrap()
}

#[test]
fn kill_9_of_set_at_any_moment_leaves_the_old_or_the_new_value() {
    const RUNS: usize = 200;
    const SEED: u64 = 0x6b6d_7365_6e76_0001;
    let started = Instant::now();
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "OTHER", b"other-value");
    sandbox.set_with(&file, &["--plain"], "PLAIN", b"plain-value");
    sandbox.set(&file, "TARGET", b"value-initial");
    let window = calibrate(&sandbox, &file, &["set", "TARGET"], b"value-initial");

    let mut clock = KillClock {
        rng: Rng::new(SEED),
        edge: window * 3 / 4,
    };
    let mut tally = Tally::default();
    let mut current = b"value-initial".to_vec();
    for run in 0..RUNS {
        let new = format!("value-{run}").into_bytes();
        let (from_spawn, delay) = clock.next();
        let killed = spawn_and_kill(&sandbox, &file, &["set", "TARGET"], &new, delay, from_spawn);

        check(&sandbox, &file);
        let now = get(&sandbox, &file, "TARGET");
        assert!(
            now == current || now == new,
            "run {run} (seed {SEED:#x}, delay {delay:?}): TARGET is {:?}, neither the old {:?} nor the new {:?}",
            String::from_utf8_lossy(&now),
            String::from_utf8_lossy(&current),
            String::from_utf8_lossy(&new)
        );
        clock.learn(from_spawn, delay, now == new);
        match (killed, now == new) {
            (true, false) => tally.killed_before += 1,
            (true, true) => tally.killed_after += 1,
            (false, true) => tally.finished += 1,
            (false, false) => panic!("run {run}: set finished successfully but the old value is still there"),
        }
        current = now;
    }
    assert_eq!(get(&sandbox, &file, "OTHER"), b"other-value");
    assert_eq!(get(&sandbox, &file, "PLAIN"), b"plain-value");
    let leftovers = leftover_temp_files(&file);
    eprintln!(
        "kill -9 of set, {RUNS} runs (calibrated run {window:?}, final edge {:?}) in {:?}: \
         {} killed mid-run ({} before the change landed, {} after), {} finished first; \
         {} temporary files left by killed writers",
        clock.edge,
        started.elapsed(),
        tally.killed_before + tally.killed_after,
        tally.killed_before,
        tally.killed_after,
        tally.finished,
        leftovers.len()
    );
    assert!(
        tally.killed_before + tally.killed_after >= RUNS / 4,
        "too few kills landed mid-run to prove anything: {tally:?}"
    );
}

#[test]
fn kill_9_of_rotate_at_any_moment_leaves_a_working_file_with_the_same_values() {
    const RUNS: usize = 50;
    const SEED: u64 = 0x6b6d_7365_6e76_0002;
    let started = Instant::now();
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "ALPHA", b"alpha-secret");
    sandbox.set(&file, "BRAVO", b"bravo-secret");
    sandbox.set_with(&file, &["--kms"], "DIRECT", b"direct-secret");
    let window = calibrate(&sandbox, &file, &["rotate"], b"");

    let mut clock = KillClock {
        rng: Rng::new(SEED),
        edge: window * 3 / 4,
    };
    let mut killed_runs = 0;
    let mut rotations = 0;
    let mut last = sandbox.read(&file);
    for run in 0..RUNS {
        let (from_spawn, delay) = clock.next();
        let killed = spawn_and_kill(&sandbox, &file, &["rotate"], b"", delay, from_spawn);
        killed_runs += usize::from(killed);
        check(&sandbox, &file);
        for (name, value) in [
            ("ALPHA", &b"alpha-secret"[..]),
            ("BRAVO", b"bravo-secret"),
            ("DIRECT", b"direct-secret"),
        ] {
            assert_eq!(
                get(&sandbox, &file, name),
                value,
                "run {run} (seed {SEED:#x}, delay {delay:?}): {name} changed"
            );
        }
        let text = sandbox.read(&file);
        let landed = text != last;
        clock.learn(from_spawn, delay, landed);
        rotations += usize::from(landed);
        last = text;
    }
    eprintln!(
        "kill -9 of rotate, {RUNS} runs (calibrated run {window:?}, final edge {:?}) in {:?}: \
         {killed_runs} killed mid-run, {rotations} rotations landed; {} temporary files left",
        clock.edge,
        started.elapsed(),
        leftover_temp_files(&file).len()
    );
    assert!(
        killed_runs >= RUNS / 4,
        "too few kills landed mid-run: {killed_runs}"
    );
    assert!(
        rotations > 0,
        "no rotation ever landed: the kills never reached the write"
    );
}

#[test]
fn twenty_concurrent_sets_of_different_names_all_land() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let names: Vec<String> = (0..20).map(|i| format!("CONCURRENT_{i:02}")).collect();

    let children: Vec<(Child, String)> = names
        .iter()
        .map(|name| {
            // A long deadline: the sets take the lock in turn, each a KMS call and fsyncs.
            let (mut child, what) = sandbox
                .kmsenv()
                .file(&file)
                .args(["--timeout", "120", "set", name])
                .spawn_piped();
            let mut pipe = child.stdin.take().expect("piped stdin");
            std::io::Write::write_all(&mut pipe, format!("value-of-{name}").as_bytes()).expect("write");
            (child, what)
        })
        .collect();
    for (child, what) in children {
        let out = wait_bounded(child, &what);
        assert_eq!(out.code(), Some(0), "`{what}` failed:\n{}", out.stderr);
    }

    check(&sandbox, &file);
    let json = sandbox
        .kmsenv()
        .file(&file)
        .args(["export", "--format", "json"])
        .run()
        .ok()
        .stdout_text();
    let values: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&json).expect("export json");
    let missing: Vec<&String> = names.iter().filter(|n| !values.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "lost updates: {missing:?} missing from\n{}",
        sandbox.read(&file)
    );
    for name in &names {
        assert_eq!(values[name], format!("value-of-{name}"), "{name}");
    }
    assert!(
        leftover_temp_files(&file).is_empty(),
        "{:?}",
        leftover_temp_files(&file)
    );
}

#[test]
fn mode_and_owner_survive_every_write() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let second_key = sandbox.key();
    sandbox.set(&file, "KEEP", b"keep-me");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let is_root = std::fs::metadata(sandbox.dir.path()).expect("stat").uid() == 0
        && std::os::unix::fs::chown(&file, Some(1234), Some(1234)).is_ok();
    if !is_root {
        eprintln!("note: not root: only the mode is checked, the owner cannot be changed");
    }

    let steps: Vec<(&str, Vec<&str>, &[u8])> = vec![
        ("set", vec!["set", "ADDED"], b"added"),
        ("set --plain", vec!["set", "--plain", "PLAIN=x"], b""),
        ("set --kms", vec!["set", "--kms", "DIRECT"], b"direct"),
        ("unset", vec!["unset", "ADDED"], b""),
        ("import", vec!["import"], b"IMPORTED=yes\n"),
        ("rotate", vec!["rotate"], b""),
        ("check --fix-mac", vec!["check", "--fix-mac"], b""),
        ("keys add", vec!["keys", "add", &second_key], b""),
        ("keys remove", vec!["keys", "remove", &second_key], b""),
    ];
    for (what, args, stdin) in steps {
        if what == "check --fix-mac" {
            // A hand edit (as after a merge), so that --fix-mac has a new MAC to write;
            // written in place, so the mode and owner stay.
            let text = sandbox.read(&file);
            sandbox.write(&file, &replace_once(&text, "PLAIN = \"x\"", "PLAIN = \"merged\""));
        }
        let before = sandbox.read(&file);
        let mut run = sandbox.kmsenv().file(&file).args(&args);
        if !stdin.is_empty() {
            run = run.stdin(stdin);
        }
        run.run().ok();
        let meta = std::fs::metadata(&file).expect("stat");
        assert_ne!(sandbox.read(&file), before, "{what} did not write the file");
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o640,
            "{what} changed the mode"
        );
        if is_root {
            assert_eq!((meta.uid(), meta.gid()), (1234, 1234), "{what} changed the owner");
        }
    }
    assert_eq!(get(&sandbox, &file, "KEEP"), b"keep-me");
}

#[test]
fn a_write_through_a_symlink_updates_the_target_and_keeps_the_link() {
    // Secrets files are often symlinked (a shared config checkout, dotfiles). An
    // atomic rename over the link itself would replace the link by a regular file and
    // leave the real file without the change.
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("real")).expect("mkdir");
    let key = sandbox.key();
    let real = sandbox.init("real/kmsenv.toml", &[&key]);
    let link = sandbox.path("kmsenv.toml");
    std::os::unix::fs::symlink("real/kmsenv.toml", &link).expect("symlink");

    sandbox.set(&link, "THROUGH_LINK", b"linked-value");

    let meta = std::fs::symlink_metadata(&link).expect("lstat");
    assert!(
        meta.file_type().is_symlink(),
        "`set` replaced the symlink {} by a regular file",
        link.display()
    );
    assert_eq!(get(&sandbox, &real, "THROUGH_LINK"), b"linked-value");
}

// ---------------------------------------------------------------------------
// Read-only folder and full disk, on a tmpfs in a private mount namespace

/// What a script run under `unshare --mount` left in `out`.
struct Confined {
    /// kmsenv's exit code, stdout and stderr.
    rc: i32,
    stderr: String,
    /// The file after the failed write.
    after: String,
    /// The folder's entries after the failed write.
    entries: Vec<String>,
}

/// Runs `script` as `sh -c SCRIPT sh DIR FILE KMSENV OUT` in a private mount
/// namespace, with kmsenv's usual test environment. `None` (with a printed note) if
/// this machine does not let us make a mount namespace.
fn confined(sandbox: &Sandbox, file: &Path, script: &str) -> Option<Confined> {
    let dir = sandbox.path("mnt");
    let out = sandbox.path("out");
    std::fs::create_dir(&dir).expect("mkdir mnt");
    std::fs::create_dir(&out).expect("mkdir out");
    let mut command = Command::new("unshare");
    test_env(&mut command, sandbox.dir.path())
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&dir)
        .arg(file)
        .arg(env!("CARGO_BIN_EXE_kmsenv"))
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let result = match command.spawn() {
        Ok(child) => wait_bounded(child, "unshare --mount sh -c …"),
        Err(e) => {
            eprintln!("note: skipped: cannot run unshare: {e}");
            return None;
        }
    };
    let read = |name: &str| std::fs::read_to_string(out.join(name));
    let Ok(rc) = read("rc") else {
        eprintln!(
            "note: skipped: no private mount namespace with a tmpfs here (unshare exited {:?}): {}{}",
            result.code(),
            result.stderr,
            read("setup-failed").unwrap_or_default()
        );
        return None;
    };
    Some(Confined {
        rc: rc.trim().parse().expect("rc is a number"),
        stderr: read("stderr").expect("stderr file"),
        after: read("after.toml").expect("after.toml"),
        entries: read("ls").expect("ls file").lines().map(str::to_string).collect(),
    })
}

/// A keyed file with a sealed and a plain value, ready to be copied onto the tmpfs.
fn victim(sandbox: &Sandbox) -> PathBuf {
    let (file, _) = sandbox.new_file("source.toml");
    sandbox.set(&file, "KEEP", b"keep-me");
    sandbox.set_with(&file, &["--plain"], "PLAIN", b"plain-value");
    file
}

/// The failed write: 125, one `kmsenv: ` line naming the file, the file unchanged and
/// still valid, no temporary file left.
#[track_caller]
fn assert_failed_closed(sandbox: &Sandbox, source: &Path, result: &Confined, expected_entries: &[&str]) {
    let target = sandbox.path("mnt/kmsenv.toml").display().to_string();
    assert_eq!(result.rc, 125, "kmsenv set should fail 125:\n{}", result.stderr);
    let first = result.stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("kmsenv: ") && first.contains(&target),
        "the first stderr line should be `kmsenv: …` naming {target}:\n{}",
        result.stderr
    );
    assert_eq!(result.after, sandbox.read(source), "the file changed");
    let mut entries = result.entries.clone();
    entries.sort();
    assert_eq!(entries, expected_entries, "temporary files were left behind");
    // The unchanged copy still opens, MAC and all.
    let copy = sandbox.path("after.toml");
    sandbox.write(&copy, &result.after);
    check(sandbox, &copy);
    assert_eq!(get(sandbox, &copy, "KEEP"), b"keep-me");
}

#[test]
fn a_read_only_folder_fails_closed_and_keeps_the_file() {
    // chmod 0555 does not stop root, so the folder is a tmpfs remounted read-only.
    let sandbox = Sandbox::new();
    let source = victim(&sandbox);
    let script = r#"
        dir=$1 file=$2 kmsenv=$3 out=$4
        { mount -t tmpfs -o size=1m tmpfs "$dir" && cp "$file" "$dir/kmsenv.toml" \
            && mount -o remount,ro "$dir"; } 2> "$out/setup-failed" || exit 0
        printf %s new-value | "$kmsenv" -f "$dir/kmsenv.toml" set NEW_NAME > "$out/stdout" 2> "$out/stderr"
        echo $? > "$out/rc"
        cp "$dir/kmsenv.toml" "$out/after.toml"
        ls -A "$dir" > "$out/ls"
    "#;
    let Some(result) = confined(&sandbox, &source, script) else {
        return;
    };
    assert_failed_closed(&sandbox, &source, &result, &["kmsenv.toml"]);
}

#[test]
fn a_full_disk_fails_closed_and_keeps_the_file() {
    let sandbox = Sandbox::new();
    let source = victim(&sandbox);
    let script = r#"
        dir=$1 file=$2 kmsenv=$3 out=$4
        { mount -t tmpfs -o size=64k tmpfs "$dir" && cp "$file" "$dir/kmsenv.toml"; } \
            2> "$out/setup-failed" || exit 0
        # Fill the tmpfs: dd stops with ENOSPC, which is the point.
        dd if=/dev/zero of="$dir/filler" bs=4096 2> /dev/null
        printf %s new-value | "$kmsenv" -f "$dir/kmsenv.toml" set NEW_NAME > "$out/stdout" 2> "$out/stderr"
        echo $? > "$out/rc"
        cp "$dir/kmsenv.toml" "$out/after.toml"
        ls -A "$dir" > "$out/ls"
        df -k "$dir" > "$out/df"
    "#;
    let Some(result) = confined(&sandbox, &source, script) else {
        return;
    };
    assert_failed_closed(&sandbox, &source, &result, &["filler", "kmsenv.toml"]);
}
