//! `kmsenv edit`: the decrypted values as dotenv text in `$EDITOR`, then only
//! what changed is re-sealed (unchanged values keep their exact ciphertext).
//!
//! The plaintext file lives in a private folder on a tmpfs (never on disk), mode
//! 0700 / 0600, and is removed on every way out: success, editor failure, parse
//! error, SIGINT and SIGQUIT (after the editor exits), SIGTERM and SIGHUP (at once). The file
//! is not locked while you edit; if someone else changed it meanwhile, nothing is
//! written. What no handler can catch (SIGKILL, a crash) leaves a folder behind:
//! the next `edit` removes it (`sweep_stale`).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, sigaction,
};
use zeroize::Zeroizing;

use crate::document::{Document, Value, value_rule};
use crate::dotenv;
use crate::error::{Class, Error, Result};
use crate::resolve::Selection;
use crate::run::{Connect, Run};
use crate::secret::Secret;
use crate::writer::Writer;

/// Times the editor is re-opened after a parse error before giving up.
const MAX_ATTEMPTS: usize = 5;

pub fn run<K: Connect>(run: &mut Run<K>) -> Result<()> {
    let started = SystemTime::now();
    let path = run.single_file("edit")?.to_path_buf();
    let original = Document::load(&path, run.deadline)?;
    run.admit(&original, false)?;
    // The data key is opened once: for showing the values, and again for writing
    // them back if the file is still what it was.
    let unlocked = run.unlock(&original)?;
    // References are not values of the file: they are not read, shown or
    // changed here (`set --secret`/`set --ssm` change them).
    let shown: std::collections::BTreeSet<String> = original
        .entries
        .iter()
        .filter(|e| !matches!(e.value, Value::Ref(_)))
        .map(|e| e.name.clone())
        .collect();
    let opened = run.open_unlocked(
        &original,
        unlocked.as_ref().map(|(k, _)| k),
        unlocked.as_ref().map(|(_, arn)| arn.clone()),
        Selection {
            only: Some(&shown),
            ..Selection::ALL
        },
    )?;
    let values: Vec<(String, Secret)> = opened.values.into_iter().map(|v| (v.name, v.secret)).collect();
    if let Some((n, _)) = values.iter().find(|(_, v)| v.expose().contains(&0)) {
        return Err(Error::usage(format!(
            "{}: {n} holds binary data (NUL bytes) that a text editor cannot show",
            path.display()
        ))
        .with_hint("change it with `kmsenv set NAME --from-file PATH` instead"));
    }

    let mut text = Zeroizing::new(header(&path).into_bytes());
    // Escaping at most doubles a value: reserve so the buffer never grows (and
    // never leaves an unwiped copy behind).
    text.reserve(
        values
            .iter()
            .map(|(n, v)| n.len() + 2 * v.expose().len() + 8)
            .sum(),
    );
    for (n, v) in &values {
        dotenv::format_editable(n, v.expose(), &mut text);
    }
    // No session while the editor runs: a session is a child subreaper and kills
    // what it adopted when it ends — an editor's detached server, for one. The
    // writer starts a new one if it needs KMS.
    // Joined: the editor's signal handling below holds signals off on this thread
    // alone, so no other thread should be left to take them.
    run.end_session(true);
    let scratch = Scratch::create(&path, started)?;
    let Some(edited) = edit_until_valid(&scratch, &text)? else {
        run.note(format!("{}: no changes", path.display()));
        return Ok(());
    };
    drop(scratch);

    // Apply, under the lock, to the file exactly as it was when we read it.
    let mut w = Writer::open_unchanged(run, &original, unlocked.map(|(k, _)| k))?;
    let changed = apply(&mut w, &values, &edited)?;
    if changed.is_empty() {
        run.note(format!("{}: no changes", path.display()));
        return Ok(());
    }
    w.save()?;
    run.note(format!("{}: changed {}", path.display(), changed.join(" ")));
    Ok(())
}

fn header(path: &Path) -> String {
    format!(
        "# kmsenv edit: {} — one NAME=\"value\" per line (dotenv).\n\
         # Changed values are re-sealed, new names are sealed, deleted lines are removed.\n\
         # Save and quit to apply; quit without saving (or empty the file) to change nothing.\n",
        path.display()
    )
}

/// Run the editor until the text parses; `None` if the user changed nothing.
fn edit_until_valid(scratch: &Scratch, initial: &[u8]) -> Result<Option<Vec<(String, Secret)>>> {
    let mut shown = Zeroizing::new(initial.to_vec());
    for _ in 0..MAX_ATTEMPTS {
        scratch.write(&shown)?;
        run_editor(&scratch.file)?;
        let edited = Zeroizing::new(
            std::fs::read(&scratch.file).map_err(|e| Error::io("read back", &scratch.file, &e))?,
        );
        if *edited == *initial || edited.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if *edited == *shown && *shown != *initial {
            // Re-opened with an error and saved unchanged: the user gave up.
            return Err(Error::usage(
                "the edited text still does not parse; nothing was changed",
            ));
        }
        match dotenv::parse("edit", &edited) {
            Ok(values) => return Ok(Some(values)),
            Err(e) => {
                // Sized before any value goes in, so it never grows with values in it.
                let mut again = Zeroizing::new(format!("# ERROR: {e}\n").into_bytes());
                again.reserve(edited.len());
                for line in edited
                    .split_inclusive(|&b| b == b'\n')
                    .filter(|l| !l.starts_with(b"# ERROR: "))
                {
                    again.extend_from_slice(line);
                }
                shown = again;
            }
        }
    }
    Err(Error::usage(format!(
        "the edited text still does not parse after {MAX_ATTEMPTS} tries; nothing was changed"
    )))
}

/// Run `$VISUAL`/`$EDITOR` (through sh, so `code --wait` works) on `file`.
fn run_editor(file: &Path) -> Result<()> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(std::env::var_os)
        .find(|e| !e.is_empty())
        .unwrap_or_else(|| "vi".into());
    // The handlers are held off until the editor's pid is stored: a SIGTERM taken
    // between the spawn and the store would end kmsenv and leave the editor
    // running (and free to save plaintext again), a SIGINT would not wait for it.
    // The editor starts with an empty mask (std's spawn sets it).
    let held: SigSet = [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT]
        .into_iter()
        .collect();
    let mut before = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held), Some(&mut before)).is_ok();
    let spawned = std::process::Command::new("/bin/sh")
        .arg("-c")
        // `exec`: the shell becomes the editor, so the pid we signal is the editor's.
        .arg(format!("exec {} \"$1\"", editor.to_string_lossy()))
        .arg("sh")
        .arg(file)
        .spawn();
    if let Ok(child) = &spawned {
        EDITOR_PID.store(child.id() as i32, Ordering::SeqCst);
    }
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
    }
    let mut child = spawned.map_err(|e| Error::new(Class::Io, format!("cannot start the editor: {e}")))?;
    let status = child.wait();
    EDITOR_PID.store(0, Ordering::SeqCst);
    let status = status.map_err(|e| Error::new(Class::Io, format!("cannot wait for the editor: {e}")))?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Error::usage("interrupted; nothing was changed"));
    }
    if !status.success() {
        return Err(Error::usage(format!(
            "the editor ({}) failed ({status}); nothing was changed",
            editor.to_string_lossy()
        )));
    }
    Ok(())
}

/// Turn the edited values into file edits; the names changed.
pub(super) fn apply<K: Connect>(
    w: &mut Writer<K>,
    before: &[(String, Secret)],
    after: &[(String, Secret)],
) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for (name, value) in after {
        let old = before.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if old == Some(value) {
            continue; // unchanged: keeps its exact ciphertext
        }
        let entry = w.doc().entry(name).cloned();
        let file = entry.as_ref().is_some_and(|e| e.file);
        if let Some(why) = value_rule(name, value.expose(), file) {
            return Err(Error::usage(why));
        }
        match entry.map(|e| e.value) {
            Some(Value::Plain(_)) => {
                let text = std::str::from_utf8(value.expose())
                    .map_err(|_| Error::usage(format!("{name}: a plain value must be UTF-8 text")))?;
                w.editor().set_plain(name, text)?;
            }
            Some(Value::Template(_)) => {
                // The view shows the template text, not its result: editing keeps it a template.
                let text = std::str::from_utf8(value.expose())
                    .map_err(|_| Error::usage(format!("{name}: a template must be UTF-8 text")))?;
                crate::template::parse(text).map_err(|why| Error::usage(format!("{name}: {why}")))?;
                w.editor().set_template(name, text, file)?;
            }
            Some(Value::Kms { key, .. }) => {
                // A direct entry's `key` and `context` are outside the MAC: the new
                // value goes only to a key the verified key list (or the pin)
                // vouches for, bound to its name as `set --kms` binds it.
                let key = w.vouched_key(name, key.as_deref())?;
                let context = w.doc().direct_value_context(name, file);
                let (session, kms) = w.kms()?;
                let (blob, arn) = session
                    .block_on(kms.encrypt(&key, value.expose(), &context))
                    .map_err(|e| w.kms_error(Some(name), &key, "Encrypt", e))?;
                w.check_trusted(name, &arn)?;
                w.editor()
                    .set_kms(name, &B64.encode(blob), Some(&arn), &context, file)?;
            }
            Some(Value::Ref(r)) => {
                return Err(Error::usage(format!(
                    "{name} is a {} reference, not a value of the file; change it with `kmsenv set --{} {name} …`, \
                     or `kmsenv unset {name}` first",
                    r.kind(),
                    r.kind()
                )));
            }
            Some(Value::Sealed(_)) | None => {
                let sealed = w.seal(name, value.expose())?;
                w.editor().set_sealed(name, &sealed, file)?;
            }
        }
        changed.push(name.clone());
    }
    for (name, _) in before {
        if !after.iter().any(|(n, _)| n == name) {
            w.editor().remove(name)?;
            changed.push(format!("-{name}"));
        }
    }
    Ok(changed)
}

static SCRATCH: OnceLock<(CString, CString)> = OnceLock::new();
static EDITOR_PID: AtomicI32 = AtomicI32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The name of every scratch folder: this, then 16 lowercase hex digits.
const SCRATCH_PREFIX: &str = "kmsenv-edit-";

/// The private tmpfs folder and the plaintext file in it; removed on drop and
/// by the signal handlers. The folder is locked while it lives, which is how a
/// later `edit` tells it from one left by a killed edit.
struct Scratch {
    dir: PathBuf,
    file: PathBuf,
    _in_use: Flock<File>,
}

impl Scratch {
    fn create(target: &Path, started: SystemTime) -> Result<Scratch> {
        let base = tmpfs_dir().ok_or_else(|| {
            Error::usage("no tmpfs folder for the plaintext (tried $XDG_RUNTIME_DIR and /dev/shm)")
                .with_hint("kmsenv never writes decrypted values to disk; use `kmsenv set` instead")
        })?;
        let mut suffix = [0u8; 8];
        crate::envelope::random_bytes(&mut suffix);
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("{SCRATCH_PREFIX}{suffix}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("create the private folder", &dir, &e))?;
        let in_use = lock_folder(&dir, FlockArg::LockExclusiveNonblock).map_err(|e| {
            let _ = std::fs::remove_dir(&dir);
            Error::io("lock the private folder", &dir, &e)
        })?;
        // Our own folder is locked and newer than `started`: the sweep skips it.
        if let Ok(ours) = std::fs::symlink_metadata(&dir) {
            sweep_stale(&base, ours.uid(), started);
        }
        let stem = target
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = dir.join(format!("{stem}.env"));
        let scratch = Scratch {
            dir,
            file,
            _in_use: in_use,
        };
        let paths = (
            CString::new(scratch.file.as_os_str().as_bytes()).unwrap_or_default(),
            CString::new(scratch.dir.as_os_str().as_bytes()).unwrap_or_default(),
        );
        if SCRATCH.set(paths).is_ok() {
            install_handlers();
        }
        Ok(scratch)
    }

    fn write(&self, text: &[u8]) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.file)
            .map_err(|e| Error::io("write", &self.file, &e))?;
        f.write_all(text).map_err(|e| Error::io("write", &self.file, &e))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Overwrite before unlinking: tmpfs pages go back to the kernel anyway,
        // but an editor's hard link or open descriptor would keep them.
        if let Ok(meta) = std::fs::metadata(&self.file)
            && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&self.file)
        {
            let _ = f.write_all(&vec![0u8; meta.len() as usize]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Remove the scratch folders of edits that were killed (SIGKILL, a crash):
/// named as ours, a real folder owned by this user, last changed before this
/// edit started, and not locked (a live edit holds the lock on its own until it
/// ends). Never another user's folder, another name, or a symlink. Best effort:
/// a folder that cannot be checked or removed is left as it is.
/// `uid` is the owner of the folder this edit just made: ours, as the kernel sees it.
fn sweep_stale(base: &Path, uid: u32, started: SystemTime) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_scratch_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = meta.modified().is_ok_and(|m| m < started);
        if !meta.is_dir() || meta.uid() != uid || !old {
            continue;
        }
        // Unlocked, while we hold its lock: no live edit uses it, nor can start to.
        let Ok(lock) = lock_folder(&path, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let _ = std::fs::remove_dir_all(&path);
        drop(lock);
    }
}

fn is_scratch_name(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Lock the folder `dir` itself (never a symlink in its place).
fn lock_folder(dir: &Path, how: FlockArg) -> std::io::Result<Flock<File>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)?;
    Flock::lock(f, how).map_err(|(_, e)| std::io::Error::from(e))
}

/// A folder on a tmpfs: `$XDG_RUNTIME_DIR`, else `/dev/shm`.
fn tmpfs_dir() -> Option<PathBuf> {
    let candidates = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/dev/shm")]);
    candidates.into_iter().find(|p| {
        nix::sys::statfs::statfs(p.as_path())
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    })
}

extern "C" fn on_terminate(sig: nix::libc::c_int) {
    // Only async-signal-safe calls here: kill, unlink, rmdir, _exit.
    let pid = EDITOR_PID.load(Ordering::SeqCst);
    if pid > 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    }
    if let Some((file, dir)) = SCRATCH.get() {
        let _ = nix::unistd::unlink(file.as_c_str());
        let _ = nix::unistd::unlinkat(
            nix::fcntl::AT_FDCWD,
            dir.as_c_str(),
            nix::unistd::UnlinkatFlags::RemoveDir,
        );
    }
    // SAFETY: _exit is async-signal-safe and ends the process without unwinding.
    unsafe { nix::libc::_exit(128 + sig) }
}

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    // Ctrl-C reaches the editor too (same process group); we clean up and stop
    // once it has exited, so the user's editor is not killed under them.
    INTERRUPTED.store(true, Ordering::SeqCst);
    if EDITOR_PID.load(Ordering::SeqCst) == 0 {
        on_terminate(Signal::SIGINT as i32);
    }
}

fn install_handlers() {
    let term = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let int = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handlers only touch atomics and make async-signal-safe calls.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &term);
        let _ = sigaction(Signal::SIGHUP, &term);
        let _ = sigaction(Signal::SIGINT, &int);
        // Ctrl-\ must not dump a core full of plaintext, nor leave the scratch file.
        let _ = sigaction(Signal::SIGQUIT, &int);
    }
}
