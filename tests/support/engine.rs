//! The real Docker engine for tests that build and run images (DESIGN.md §6): the
//! engine already running, else `dockerd --bridge=none --iptables=false
//! --ip-forward=false` started here. Containers run with `--network host` only
//! and images are `FROM scratch`: nothing is pulled.
//!
//! A minimal start-if-missing for `tests/release.rs`, written while the shared
//! Docker test support was not on main yet; fold it into that support once it is.
//!
//! An engine this starts is left running for the tests after it (a machine-wide
//! daemon, not one test's child: stopping it under another test binary would
//! break that one). When no engine can be started the test fails and says why:
//! nothing is skipped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a freshly started dockerd may take to answer.
const START_LIMIT: Duration = Duration::from_secs(60);

static ENGINE: OnceLock<Result<(), String>> = OnceLock::new();

/// A `docker` command against a running engine, started first if missing.
/// BuildKit is off: the legacy builder resolves `COPY --from=IMAGE` from the
/// local images, where BuildKit would ask a registry.
#[track_caller]
pub fn docker() -> Command {
    if let Err(why) = ENGINE.get_or_init(start_if_missing) {
        panic!("no Docker engine: {why}");
    }
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0");
    cmd
}

fn answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_if_missing() -> Result<(), String> {
    match Command::new("docker").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("the docker CLI is missing: install Debian's docker.io".into()),
    }
    if answers() {
        return Ok(());
    }
    let log = Path::new("/tmp/kmsenv-tests-dockerd.log");
    let log_file = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err_file = log_file.try_clone().map_err(|e| format!("{e}"))?;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("dockerd")
        .args(["--bridge=none", "--iptables=false", "--ip-forward=false"])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        // Its own process group: a Ctrl-C of the test run does not stop it mid-write.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start dockerd (as root, from docker.io): {e}"))?;
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if answers() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(format!(
                "dockerd exited ({status}); the end of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "dockerd did not answer within {} s (see {})",
                START_LIMIT.as_secs(),
                log.display()
            ));
        }
        // Readiness poll of an external daemon, bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(200));
    }
}
