//! A real Docker engine for the tests (DESIGN §6): Debian's `dockerd` with no bridge
//! network at all, containers on `--network host` only (every packet stays on
//! loopback, where moto_server listens), images `FROM scratch` built from what the
//! test has (the static kmsenv, the static test app) — nothing is pulled.
//!
//! If no engine answers, one is started and stopped again when the test binary
//! exits (SIGTERM through PR_SET_PDEATHSIG, from a thread that never ends, as for
//! moto_server). A machine without `dockerd` fails the test with what to do: nothing
//! is skipped silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Output, TempDir, temp_dir, wait_bounded};

/// How long dockerd may take to answer.
const ENGINE_START_LIMIT: Duration = Duration::from_secs(90);

/// The engine the tests talk to; `started` when this test binary started it.
pub struct Engine {
    pub started: bool,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// The running engine, started on first use when none answers.
pub fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| {
        if engine_answers() {
            return Engine { started: false };
        }
        start_engine();
        Engine { started: true }
    })
}

fn engine_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_engine() {
    let found = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .any(|dir| dir.join(name).is_file())
    };
    assert!(
        found("dockerd"),
        "no Docker engine answers and dockerd is not installed: run `make tools` \
         (it installs Debian's docker.io). These tests need a real engine; they are not skipped."
    );
    assert!(found("docker"), "the docker client is missing: run `make tools`");
    let log = std::env::temp_dir().join(format!("kmsenv-test-dockerd-{}.log", std::process::id()));
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let log_for_thread = log.clone();
    std::thread::Builder::new()
        .name("dockerd keeper".into())
        .spawn(move || {
            let file = match std::fs::File::create(&log_for_thread) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(format!("create {}: {e}", log_for_thread.display())));
                    return;
                }
            };
            let mut command = Command::new("dockerd");
            command
                .args(["--bridge=none", "--iptables=false", "--ip-forward=false"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(file);
            // SAFETY: the closure makes one async-signal-safe system call (prctl).
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                        .map_err(std::io::Error::from)
                });
            }
            match command.spawn() {
                Ok(child) => {
                    let _ = tx.send(Ok(()));
                    let _keep = child;
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start dockerd: {e}")));
                }
            }
        })
        .expect("spawn the dockerd keeper thread");
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(message)) => panic!("{message}"),
        Err(_) => panic!("the dockerd keeper thread died before reporting"),
    }
    let deadline = Instant::now() + ENGINE_START_LIMIT;
    while !engine_answers() {
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            panic!(
                "dockerd did not answer within {} s; the end of {}:\n{}",
                ENGINE_START_LIMIT.as_secs(),
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        // Readiness poll of an external server, bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `docker` command against the engine (started first if none answers), for
/// a test that runs it its own way; the legacy builder, as in [`docker`].
pub fn docker_command() -> Command {
    engine();
    let mut command = Command::new("docker");
    command.env("DOCKER_BUILDKIT", "0");
    command
}

/// `docker ARGS…` against the engine, bounded by the run watchdog. The legacy
/// builder is asked for: it builds `FROM scratch` offline without buildx.
pub fn docker<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    engine();
    let mut command = Command::new("docker");
    command
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{command:?}");
    let child = command.spawn().expect("start docker");
    wait_bounded(child, &what)
}

/// An image built for one test, removed when dropped.
pub struct Image {
    pub tag: String,
    _context: TempDir,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds `dockerfile` in a fresh context holding `files` (name in the context,
/// source path). Nothing is pulled: the Dockerfile must be `FROM scratch`.
pub fn build_image(dockerfile: &str, files: &[(&str, &Path)]) -> Image {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let context = temp_dir();
    for (name, source) in files {
        std::fs::copy(source, context.path().join(name))
            .unwrap_or_else(|e| panic!("copy {} into the build context: {e}", source.display()));
        // The file is ciphertext, readable by any user the container runs as.
        let mode = if name.ends_with(".toml") { 0o644 } else { 0o755 };
        std::fs::set_permissions(
            context.path().join(name),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .expect("chmod in the build context");
    }
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    let tag = format!(
        "kmsenv-test-{}-{}:latest",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let out = docker([
        "build".as_ref(),
        "--network".as_ref(),
        "host".as_ref(),
        // Tests build and remove images at once: a layer cached from another
        // test's image may be gone by the time this build names it as a parent.
        "--no-cache".as_ref(),
        "-q".as_ref(),
        "-t".as_ref(),
        tag.as_ref(),
        context.path().as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "docker build failed:\n{}\nDockerfile:\n{dockerfile}",
        out.stderr
    );
    Image {
        tag,
        _context: context,
    }
}

/// The static test app (tests/support/app.c), built once per test binary with
/// `gcc -static`.
pub fn static_app() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join(format!("kmsenv-test-app-{}", std::process::id()));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/app.c");
        let status = Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&source)
            .status()
            .expect("gcc not found (install build-essential)");
        assert!(status.success(), "gcc -static {} failed", source.display());
        out
    })
}

/// A container started with `docker run -d`, removed (killed first) when dropped.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d --network host ARGS…`.
    pub fn start(args: &[&str]) -> Container {
        let out = docker(["run", "-d", "--network", "host"].iter().chain(args));
        assert!(out.status.success(), "docker run failed: {}", out.stderr);
        Container {
            id: out.stdout_text().trim().to_string(),
        }
    }

    /// Blocks until the container's stdout has a line equal to `line` (docker logs
    /// --follow ends when the container does, so this cannot hang past it).
    pub fn wait_for_line(&self, line: &str) {
        let mut follower = Command::new("docker")
            .args(["logs", "--follow", &self.id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker logs");
        let (tx, rx) = mpsc::channel();
        let mut stdout = follower.stdout.take().expect("piped");
        let wanted = line.to_string();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut found = false;
            for l in std::io::BufReader::new(&mut stdout).lines() {
                match l {
                    Ok(l) if l == wanted => {
                        found = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(found);
        });
        let found = rx.recv_timeout(Duration::from_secs(60)).unwrap_or(false);
        let _ = follower.kill();
        let _ = follower.wait();
        assert!(
            found,
            "the container never printed {line:?}; logs:\n{}",
            self.logs()
        );
    }

    /// `docker wait`: the container's exit code.
    pub fn wait(&self) -> i32 {
        let out = docker(["wait", &self.id]);
        assert!(out.status.success(), "docker wait: {}", out.stderr);
        out.stdout_text()
            .trim()
            .parse()
            .expect("exit code from docker wait")
    }

    /// stdout and stderr of the container, together.
    pub fn logs(&self) -> String {
        let out = docker(["logs", &self.id]);
        format!("{}{}", out.stdout_text(), out.stderr)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
