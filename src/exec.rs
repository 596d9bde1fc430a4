//! The last step: build the command's environment from the opened files, then
//! become the command with `execve` (DESIGN §4 steps 5–6).
//!
//! Environment policy: inherited (or empty with `--pristine`), then files in
//! order, later files winning; file values win over inherited ones unless
//! `--no-override`; inherited `KMSENV_*` variables are dropped; each name appears
//! once. The command is looked up in the *new* `PATH`. If exec fails, every
//! buffer holding plaintext is zeroized on the way out.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, VacantEntry};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io::Write;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};
use zeroize::Zeroizing;

use crate::document::OWN_ENV_PREFIX;
use crate::error::{Class, Error, Result};
use crate::resolve::OpenedFile;

/// The `PATH` used to find the command when the new environment has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How file values combine with the inherited environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub pristine: bool,
    pub no_override: bool,
}

/// One `NAME=VALUE\0` string, zeroized on drop. Its `Debug` shows only the name.
pub struct EnvString(Zeroizing<Vec<u8>>);

impl EnvString {
    fn new(name: &[u8], value: &[u8]) -> EnvString {
        let mut s = Zeroizing::new(Vec::with_capacity(name.len() + value.len() + 2));
        s.extend_from_slice(name);
        s.push(b'=');
        s.extend_from_slice(value);
        s.push(0);
        EnvString(s)
    }

    pub fn name(&self) -> &[u8] {
        let eq = self.0.iter().position(|&b| b == b'=').unwrap_or(self.0.len());
        &self.0[..eq]
    }

    pub fn value(&self) -> &[u8] {
        let eq = self
            .0
            .iter()
            .position(|&b| b == b'=')
            .map_or(self.0.len(), |i| i + 1);
        &self.0[eq..self.0.len() - 1]
    }
}

impl std::fmt::Debug for EnvString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EnvString({}=<redacted>)",
            String::from_utf8_lossy(self.name())
        )
    }
}

impl AsRef<CStr> for EnvString {
    fn as_ref(&self) -> &CStr {
        // Built with exactly one NUL, at the end; values with NUL were refused earlier.
        CStr::from_bytes_until_nul(&self.0).unwrap_or_default()
    }
}

/// The environment for the command, in order, each name once.
#[derive(Debug, Default)]
pub struct Environment {
    vars: Vec<EnvString>,
    index: HashMap<Vec<u8>, usize>,
    /// memfds to keep open across exec (closed on drop if exec fails).
    fds: Vec<RawFd>,
    /// `PATH` came from a file: it may be a secret, so errors do not show it.
    path_from_file: bool,
}

impl Environment {
    /// Start from `inherited` (first occurrence of a name wins, as getenv does),
    /// dropping kmsenv's own variables.
    pub fn inherit(inherited: impl IntoIterator<Item = (OsString, OsString)>, policy: Policy) -> Environment {
        let mut env = Environment::default();
        if policy.pristine {
            return env;
        }
        for (k, v) in inherited {
            let k = k.as_bytes();
            if k.starts_with(OWN_ENV_PREFIX.as_bytes()) {
                continue;
            }
            if let Entry::Vacant(slot) = env.index.entry(k.to_vec()) {
                append(&mut env.vars, slot, v.as_bytes());
            }
        }
        env
    }

    /// Add the opened files' values, in file order, under `policy`. Values marked
    /// `file = true` become memfds and the variable holds their `/proc/self/fd/N`.
    /// Returns the names set, each once, in the order first set.
    ///
    /// One hash of each name (the index's entry): with a thousand values this
    /// loop was a tenth of a plain file's start (callgrind, `exec` of 1,000).
    pub fn apply<'f>(&mut self, files: &'f [OpenedFile], policy: Policy) -> Result<Vec<&'f str>> {
        let inherited = self.vars.len();
        // Which inherited variables a file has set already (those past
        // `inherited` were all set by a file).
        let mut overridden = vec![false; inherited];
        let count = crate::resolve::value_count(files);
        self.vars.reserve(count);
        self.index.reserve(count);
        let mut set_by_file = Vec::with_capacity(count);
        for f in files {
            for v in &f.values {
                let name = v.name.as_bytes();
                let slot = self.index.entry(name.to_vec());
                // An inherited value wins under --no-override (one set by an
                // earlier file is never inherited: its index is past `inherited`).
                if let Entry::Occupied(e) = &slot
                    && policy.no_override
                    && *e.get() < inherited
                {
                    continue;
                }
                let fd_path;
                let value = if v.file {
                    fd_path = Self::memfd(&mut self.fds, &v.name, v.secret.expose(), &f.path)?;
                    fd_path.as_bytes()
                } else {
                    v.secret.expose()
                };
                let first = match slot {
                    Entry::Occupied(e) => {
                        let i = *e.get();
                        self.vars[i] = EnvString::new(name, value);
                        i < inherited && !std::mem::replace(&mut overridden[i], true)
                    }
                    Entry::Vacant(slot) => {
                        append(&mut self.vars, slot, value);
                        true
                    }
                };
                self.path_from_file |= v.name == "PATH";
                if first {
                    set_by_file.push(v.name.as_str());
                }
            }
        }
        Ok(set_by_file)
    }

    /// Put `value` in an anonymous memory file that stays open across exec
    /// (its descriptor kept in `fds`, closed on drop if exec fails).
    fn memfd(fds: &mut Vec<RawFd>, name: &str, value: &[u8], path: &std::path::Path) -> Result<String> {
        let fail = |what: &str, e: std::io::Error| {
            Error::new(
                Class::Io,
                format!(
                    "{}: {name}: cannot {what} the memfd for file = true: {e}",
                    path.display()
                ),
            )
        };
        let cname = CString::new(format!("kmsenv:{name}")).unwrap_or_default();
        // No MFD_CLOEXEC: the descriptor must survive execve.
        let fd = memfd_create(cname.as_c_str(), MFdFlags::empty()).map_err(|e| fail("create", e.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(value).map_err(|e| fail("write", e))?;
        let raw = file.into_raw_fd();
        fds.push(raw);
        Ok(format!("/proc/self/fd/{raw}"))
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.index.get(name.as_bytes()).map(|&i| self.vars[i].value())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.vars.len()
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        for fd in self.fds.drain(..) {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// Add a variable the environment does not have yet: `slot` is its name's
/// place in the index, which then points at it.
fn append(vars: &mut Vec<EnvString>, slot: VacantEntry<'_, Vec<u8>, usize>, value: &[u8]) {
    vars.push(EnvString::new(slot.key(), value));
    slot.insert(vars.len() - 1);
}

/// Replace this process with `argv[0]`, found through the new environment's
/// `PATH`. Returns only on failure, with the exit class env(1) uses: 127 when
/// the command is not found, 126 when it cannot be executed.
pub fn exec(argv: &[OsString], env: &Environment) -> Error {
    let Some(cmd) = argv.first() else {
        return Error::usage("exec needs a command after `--`");
    };
    let args: Vec<CString> = match argv.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(a) => a,
        Err(_) => return Error::usage("command arguments cannot contain NUL bytes"),
    };
    let shown = cmd.to_string_lossy();
    restore_signals();
    if cmd.is_empty() {
        return Error::new(Class::NotFound, "command not found: '' (empty command name)");
    }
    if cmd.as_bytes().contains(&b'/') {
        return match execve(cmd.as_bytes(), &args, env) {
            Errno::ENOENT | Errno::ENOTDIR => {
                Error::new(Class::NotFound, format!("{shown}: command not found"))
            }
            e => not_executable(&shown, e),
        };
    }
    let path = env.get("PATH").unwrap_or(DEFAULT_PATH.as_bytes());
    let mut denied = None;
    for dir in path.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let mut full = dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(cmd.as_bytes());
        match execve(&full, &args, env) {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::ENAMETOOLONG => {}
            Errno::EACCES | Errno::EPERM => denied = Some(Errno::EACCES),
            e => return not_executable(&shown, e),
        }
    }
    match denied {
        Some(e) => not_executable(&shown, e),
        None if env.path_from_file => Error::new(
            Class::NotFound,
            format!("{shown}: command not found in PATH (set by the file; not shown)"),
        ),
        None => Error::new(
            Class::NotFound,
            format!(
                "{shown}: command not found in PATH={}",
                OsStr::from_bytes(path).to_string_lossy()
            ),
        ),
    }
}

/// Give the command the signal state a shell would: the Rust runtime ignores
/// SIGPIPE, and an ignored signal stays ignored across execve (`yes | head`
/// would then fail with EPIPE instead of dying quietly).
fn restore_signals() {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
    // SAFETY: SIG_DFL installs no handler; nothing else runs concurrently here.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn not_executable(shown: &str, e: Errno) -> Error {
    let why = match e {
        Errno::EACCES | Errno::EPERM => "permission denied (not executable?)".to_string(),
        Errno::ENOEXEC => "not an executable format (a script without #!?)".to_string(),
        e => e.desc().to_string(),
    };
    Error::new(Class::NotExecutable, format!("{shown}: cannot execute: {why}"))
}

fn execve(path: &[u8], args: &[CString], env: &Environment) -> Errno {
    let Ok(path) = CString::new(path.to_vec()) else {
        return Errno::ENOENT;
    };
    match nix::unistd::execve(&path, args, &env.vars) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// The inherited environment of this process.
pub fn inherited() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .map(|(k, v)| (OsString::from_vec(k.into_vec()), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;
    use crate::resolve::OpenedValue;
    use crate::secret::Secret;
    use std::path::PathBuf;

    fn file(vals: &[(&str, &str)]) -> OpenedFile {
        OpenedFile {
            path: PathBuf::from("f.toml"),
            opened_by: None,
            values: vals
                .iter()
                .map(|(n, v)| OpenedValue {
                    name: n.to_string(),
                    secret: Secret::new(v.as_bytes().to_vec()),
                    file: false,
                    origin: crate::resolve::Origin::Plain,
                    sensitive: false,
                })
                .collect(),
        }
    }

    fn inherited(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn the_first_inherited_occurrence_of_a_name_wins() {
        let env = Environment::inherit(inherited(&[("A", "inh"), ("A", "dup")]), Policy::default());
        assert_eq!(env.get("A"), Some(&b"inh"[..]));
        assert_eq!(env.len(), 1);
    }

    #[test]
    fn later_files_win_and_files_override_inherited() -> TestResult {
        let mut env = Environment::inherit(
            inherited(&[("A", "inh"), ("KMSENV_FILE", "x"), ("A", "dup")]),
            Policy::default(),
        );
        env.apply(
            &[file(&[("A", "f1"), ("B", "f1")]), file(&[("B", "f2")])],
            Policy::default(),
        )?;
        assert_eq!(env.get("A"), Some(&b"f1"[..]));
        assert_eq!(env.get("B"), Some(&b"f2"[..]));
        assert_eq!(env.get("KMSENV_FILE"), None);
        assert_eq!(env.len(), 2);
        Ok(())
    }

    #[test]
    fn no_override_keeps_inherited_but_later_files_still_win() -> TestResult {
        let p = Policy {
            no_override: true,
            ..Policy::default()
        };
        let mut env = Environment::inherit(inherited(&[("A", "inh")]), p);
        env.apply(&[file(&[("A", "f1"), ("B", "f1")]), file(&[("B", "f2")])], p)?;
        assert_eq!(env.get("A"), Some(&b"inh"[..]));
        assert_eq!(env.get("B"), Some(&b"f2"[..]));
        Ok(())
    }

    #[test]
    fn names_set_are_listed_once_in_the_order_first_set() -> TestResult {
        let files = [
            file(&[("B", "f1"), ("A", "f1")]),
            file(&[("A", "f2"), ("B", "f2")]),
        ];
        let mut env = Environment::inherit(inherited(&[("A", "inh"), ("C", "inh")]), Policy::default());
        assert_eq!(env.apply(&files, Policy::default())?, ["B", "A"]);
        assert_eq!(env.get("A"), Some(&b"f2"[..]));
        assert_eq!(env.get("C"), Some(&b"inh"[..]));
        let p = Policy {
            no_override: true,
            ..Policy::default()
        };
        let mut env = Environment::inherit(inherited(&[("A", "inh")]), p);
        assert_eq!(env.apply(&files, p)?, ["B"]);
        assert_eq!(env.get("A"), Some(&b"inh"[..]));
        Ok(())
    }

    #[test]
    fn debug_of_env_string_hides_the_value() {
        let s = EnvString::new(b"TOKEN", b"CANARY-env");
        assert_eq!(format!("{s:?}"), "EnvString(TOKEN=<redacted>)");
    }
}
