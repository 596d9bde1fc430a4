//! Running the built `kmsenv`: a command line with a controlled environment
//! ([`Kmsenv`]), a watchdog so that a hanging run fails its test instead of the
//! suite, and what a run left behind ([`Output`]) with the assertions tests make
//! on it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::moto::{REGION, moto};

/// How long one kmsenv run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The result of one kmsenv run.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The command line, for failure messages.
    pub what: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Everything the run printed, stdout then stderr.
    pub fn all_output(&self) -> Vec<u8> {
        let mut all = self.stdout.clone();
        all.extend_from_slice(self.stderr.as_bytes());
        all
    }

    fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?} (signal {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status.code(),
            self.status.signal(),
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(self.status.success(), "expected success: {}", self.describe());
        self
    }

    /// Asserts a given exit code.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Output {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}: {}",
            self.describe()
        );
        self
    }

    /// Asserts a kmsenv failure: exit 125, first stderr line starting `kmsenv: `, and
    /// each of `needles` somewhere in stderr.
    #[track_caller]
    pub fn kmsenv_error(self, needles: &[&str]) -> Output {
        assert_eq!(
            self.status.code(),
            Some(125),
            "expected kmsenv failure (125): {}",
            self.describe()
        );
        let first = self.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("kmsenv: "),
            "first stderr line should start with `kmsenv: `: {}",
            self.describe()
        );
        needles.iter().fold(self, |out, needle| out.stderr_has(needle))
    }

    /// Asserts a kmsenv failure (see [`Output::kmsenv_error`]) whose first stderr
    /// line, the one a log shows, names each of `needles` (the file, the variable,
    /// the AWS code, …).
    #[track_caller]
    pub fn first_line_names(self, needles: &[&str]) -> Output {
        let out = self.kmsenv_error(&[]);
        let first = out.stderr.lines().next().unwrap_or("");
        for needle in needles {
            assert!(
                first.contains(needle),
                "the first stderr line should name {needle:?}\n--- stderr ---\n{}",
                out.stderr
            );
        }
        out
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Output {
        assert!(
            self.stderr.contains(needle),
            "stderr should contain {needle:?}: {}",
            self.describe()
        );
        self
    }

    /// The child's environment, when the command was `env -0`.
    #[track_caller]
    pub fn env0(&self) -> BTreeMap<String, Vec<u8>> {
        parse_env0(&self.stdout)
    }
}

/// Parses `env -0` output into a map; panics on a duplicate name.
#[track_caller]
pub fn parse_env0(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for (name, value) in env0_pairs(bytes) {
        if map.insert(name.clone(), value).is_some() {
            panic!("variable {name} appears twice in the child's environment");
        }
    }
    map
}

/// Parses `env -0` output into (name, value) pairs, duplicates kept.
pub fn env0_pairs(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    if entries.last().is_some_and(|e| e.is_empty()) {
        entries.pop();
    }
    entries
        .into_iter()
        .map(|entry| {
            let eq = entry
                .iter()
                .position(|b| *b == b'=')
                .unwrap_or_else(|| panic!("env entry without '=': {entry:?}"));
            let name = String::from_utf8(entry[..eq].to_vec()).expect("UTF-8 variable name");
            (name, entry[eq + 1..].to_vec())
        })
        .collect()
}

/// Asserts that the environment `env` holds each of `values` byte for byte.
#[track_caller]
pub fn assert_values(env: &BTreeMap<String, Vec<u8>>, values: &[(&str, &[u8])]) {
    for (name, value) in values {
        assert_eq!(
            env.get(*name).map(Vec::as_slice),
            Some(*value),
            "{name} should hold its value byte for byte"
        );
    }
}

/// True if `needle` occurs in `haystack` (bytes).
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Bytes as an OsString (for non-UTF-8 arguments).
pub fn os(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_os_string()
}

/// A `kmsenv` command line with a controlled environment.
pub struct Kmsenv {
    command: Command,
    stdin: Option<Vec<u8>>,
    what: Vec<String>,
}

impl Kmsenv {
    /// kmsenv with a clean environment and test credentials pointing to moto.
    pub fn new(home: &Path) -> Kmsenv {
        let mut run = Kmsenv::without_aws(home);
        moto_credentials(&mut run.command);
        run
    }

    /// kmsenv with only PATH and HOME: no AWS configuration at all.
    pub fn without_aws(home: &Path) -> Kmsenv {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kmsenv"));
        bare_env(&mut command, home);
        Kmsenv {
            command,
            stdin: None,
            what: vec!["kmsenv".into()],
        }
    }

    /// kmsenv as [`Kmsenv::new`] makes it, run in a mount namespace of its own
    /// (`unshare -m`; the tests run as root) where `etc_ssl` is bind-mounted over
    /// /etc/ssl: the system certificate store it sees is the test's.
    pub fn with_etc_ssl(home: &Path, etc_ssl: &Path) -> Kmsenv {
        Kmsenv::with_etc(home, etc_ssl, None)
    }

    /// Like [`Kmsenv::with_etc_ssl`], with `hosts` (when given) bind-mounted over
    /// /etc/hosts too: a name such as `kms.us-east-1.amazonaws.com` can lead to
    /// a local server.
    pub fn with_etc(home: &Path, etc_ssl: &Path, hosts: Option<&Path>) -> Kmsenv {
        let mut command = Command::new("/usr/bin/unshare");
        command.args(["-m", "--propagation", "private", "/bin/sh", "-c"]);
        match hosts {
            None => command
                .arg(r#"mount --bind "$0" /etc/ssl && exec "$@""#)
                .arg(etc_ssl),
            Some(hosts) => command
                .arg(r#"mount --bind "$0" /etc/ssl && mount --bind "$1" /etc/hosts && shift && exec "$@""#)
                .arg(etc_ssl)
                .arg(hosts),
        };
        command.arg(env!("CARGO_BIN_EXE_kmsenv"));
        bare_env(&mut command, home);
        moto_credentials(&mut command);
        Kmsenv {
            command,
            stdin: None,
            what: vec![format!("kmsenv (/etc/ssl = {})", etc_ssl.display())],
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Kmsenv {
        self.what.push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Kmsenv
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// `-f PATH`.
    pub fn file(self, path: &Path) -> Kmsenv {
        self.arg("-f").arg(path)
    }

    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Kmsenv {
        self.command.env(name, value);
        self
    }

    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Kmsenv {
        self.command.env_remove(name);
        self
    }

    /// Sends KMS calls to `url` (`AWS_ENDPOINT_URL_KMS`), e.g. a proxy's endpoint.
    pub fn endpoint(self, url: &str) -> Kmsenv {
        self.env("AWS_ENDPOINT_URL_KMS", url)
    }

    /// Sends KMS, Secrets Manager and SSM calls to `url` (each service's
    /// `AWS_ENDPOINT_URL_…`), e.g. a proxy's endpoint.
    pub fn all_endpoints(self, url: &str) -> Kmsenv {
        self.endpoint(url)
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", url)
            .env("AWS_ENDPOINT_URL_SSM", url)
    }

    pub fn current_dir(mut self, dir: &Path) -> Kmsenv {
        self.command.current_dir(dir);
        self
    }

    /// Bytes for kmsenv's stdin (default: /dev/null).
    pub fn stdin(mut self, bytes: impl AsRef<[u8]>) -> Kmsenv {
        self.stdin = Some(bytes.as_ref().to_vec());
        self
    }

    /// Starts kmsenv with piped stdin/stdout/stderr and returns the child without
    /// writing anything, for tests that look at the running process.
    pub fn spawn_piped(mut self) -> (Child, String) {
        self.command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = self.command.spawn().expect("start kmsenv");
        (child, self.what.join(" "))
    }

    /// Runs to completion (bounded by a watchdog) and captures everything.
    pub fn run(self) -> Output {
        self.run_with_pid().1
    }

    /// Like `run`, also returning the PID kmsenv ran as.
    pub fn run_with_pid(mut self) -> (u32, Output) {
        let stdin = self.stdin.take();
        self.command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = self.what.join(" ");
        let mut child = self.command.spawn().expect("start kmsenv");
        let pid = child.id();
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let output = wait_bounded(child, &what);
        (pid, output)
    }
}

/// The environment of a kmsenv run as [`Kmsenv::new`] makes it, for a test that
/// needs a [`Command`] of its own: nothing of the test's environment, PATH, `home`
/// as HOME and working directory, test credentials and moto's endpoints (KMS,
/// Secrets Manager, SSM).
pub fn test_env<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    bare_env(command, home);
    moto_credentials(command)
}

fn bare_env<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .current_dir(home)
}

fn moto_credentials(command: &mut Command) -> &mut Command {
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KMS", moto().endpoint())
        // References (issue 16) read Secrets Manager and SSM: moto serves both.
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto().endpoint())
        .env("AWS_ENDPOINT_URL_SSM", moto().endpoint())
}

/// Waits for a child with a watchdog, so a hanging kmsenv fails the test instead of
/// hanging the suite.
pub fn wait_bounded(child: Child, what: &str) -> Output {
    wait_within(child, what, RUN_LIMIT)
        .unwrap_or_else(|| panic!("`{what}` did not finish within {} s", RUN_LIMIT.as_secs()))
}

/// Waits at most `limit` for a child and captures its output; `None` when it did
/// not finish in time (it is then killed and reaped).
pub fn wait_within(child: Child, what: &str, limit: Duration) -> Option<Output> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let result = match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = rx.recv();
            return None;
        }
    };
    let out = result.unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"));
    Some(Output {
        status: out.status,
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what: what.to_string(),
    })
}

/// The shipped binary of `make static` (`KMSENV_STATIC_BIN`, which `make test`
/// sets): fully static, so it runs where nothing else exists. Without the
/// variable, where `make static` puts it in this build's target folder (which
/// `CARGO_TARGET_DIR` may have moved).
pub fn static_kmsenv() -> PathBuf {
    let path = std::env::var_os("KMSENV_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("x86_64-unknown-linux-musl/release/kmsenv"));
    assert!(
        path.exists(),
        "{} is missing: run `make static` (make test does)",
        path.display()
    );
    path
}

/// The target folder of this build (cargo puts `CARGO_TARGET_TMPDIR` at `tmp/` in it).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}
