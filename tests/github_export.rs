//! `export --format github`: every line of every secret is masked on stdout
//! before any value is written, and `$GITHUB_ENV` reads back, the way the
//! Actions runner reads it, as exactly the values. Against moto.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// `$GITHUB_ENV` as the runner parses it (actions/runner FileCommandManager,
/// SetEnvFileCommand): lines end in `\n` or `\r\n`; `NAME=VALUE`, or
/// `NAME<<DELIMITER` then the lines up to one equal to DELIMITER, the value
/// being the text between, without the newline before the delimiter line.
fn parse_github_env(text: &str) -> Result<BTreeMap<String, String>, String> {
    fn read_line(text: &str, index: &mut usize) -> Option<(String, usize)> {
        if *index >= text.len() {
            return None;
        }
        let start = *index;
        match text[start..].find('\n') {
            None => {
                *index = text.len();
                Some((text[start..].to_string(), text.len()))
            }
            Some(lf) => {
                let lf = start + lf;
                let end = if lf > start && text.as_bytes()[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                *index = lf + 1;
                Some((text[start..end].to_string(), end))
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut index = 0;
    while let Some((line, _)) = read_line(text, &mut index) {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        let (key, value) = match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => (line[..e].to_string(), line[e + 1..].to_string()),
            (_, Some(h)) => {
                let (key, delimiter) = (&line[..h], &line[h + 2..]);
                if key.is_empty() || delimiter.is_empty() {
                    return Err(format!("bad heredoc line {line:?}"));
                }
                let start = index;
                let mut end = start;
                loop {
                    let Some((l, e)) = read_line(text, &mut index) else {
                        return Err(format!("delimiter {delimiter} not found"));
                    };
                    if l == delimiter {
                        break;
                    }
                    end = e;
                }
                (
                    key.to_string(),
                    if end > start {
                        text[start..end].to_string()
                    } else {
                        String::new()
                    },
                )
            }
            _ => return Err(format!("line without = or <<: {line:?}")),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// The masks a value needs: each non-blank line, as the runner unescapes it.
fn lines_to_mask(value: &str) -> Vec<String> {
    value
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The runner's unescaping of workflow-command data.
fn unescape(data: &str) -> String {
    data.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
}

const PEM: &str = "-----BEGIN PRIVATE KEY-----\nCANARY-pem-line-1\r\nCANARY-pem-line-2 50%0A\n\n-----END PRIVATE KEY-----\n";

#[test]
fn every_secret_line_is_masked_before_github_env_is_written_and_reads_back_exactly() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TLS_KEY", PEM.as_bytes());
    sandbox.set_with(&file, &["--kms"], "API_TOKEN", b"CANARY-direct");
    sandbox.set(&file, "INJECT", b"x\nEOF\nINJECTED=1\nghadelimiter_\n");
    sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"visible-plain");
    sandbox.set_with(&file, &["--plain"], "DB_HOST", b"db.internal");
    sandbox.set_with(
        &file,
        &["--template"],
        "URL",
        b"https://u:${API_TOKEN}@${DB_HOST}/",
    );
    sandbox.set_with(&file, &["--template"], "HEALTH", b"https://${DB_HOST}/health");

    // $GITHUB_ENV is a FIFO: kmsenv's open of it blocks until this test reads,
    // and the test reads only after every mask has arrived on stdout. Were the
    // file written first, kmsenv would never print its masks.
    let github_env = sandbox.path("github_env");
    nix::unistd::mkfifo(&github_env, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let (mut child, what) = sandbox
        .kmsenv()
        .file(&file)
        .env("GITHUB_ENV", &github_env)
        .args(["export", "--format", "github"])
        .spawn_piped();
    drop(child.stdin.take());
    let pid = child.id();
    let (done, watchdog) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        // Not a timing assertion: only a hung run is ended, so that it fails.
        if watchdog.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });

    let secrets = [
        PEM,
        "CANARY-direct",
        "x\nEOF\nINJECTED=1\nghadelimiter_\n",
        "https://u:CANARY-direct@db.internal/",
    ];
    let wanted: BTreeSet<String> = secrets.iter().flat_map(|s| lines_to_mask(s)).collect();
    let mut masked = BTreeSet::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    while !wanted.is_subset(&masked) {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read stdout") == 0 {
            panic!(
                "`{what}` ended before masking {:?}",
                wanted.difference(&masked).collect::<Vec<_>>()
            );
        }
        let data = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("::add-mask::"))
            .unwrap_or_else(|| panic!("not a mask command: {line:?}"));
        masked.insert(unescape(data));
    }
    let mut written = String::new();
    std::fs::File::open(&github_env)
        .and_then(|mut f| f.read_to_string(&mut written))
        .expect("read GITHUB_ENV");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read stdout");
    let out = wait_bounded(child, &what).ok();
    let _ = done.send(());
    for line in rest.lines() {
        masked.insert(unescape(
            line.strip_prefix("::add-mask::").expect("only masks on stdout"),
        ));
    }

    // Exactly the secrets' lines: no plain value, no template of plain values.
    assert_eq!(masked, wanted);
    assert!(!out.stderr.contains("CANARY"));
    let env = parse_github_env(&written).expect("the runner parses it");
    let want: BTreeMap<String, String> = [
        ("TLS_KEY", PEM),
        ("API_TOKEN", "CANARY-direct"),
        ("INJECT", "x\nEOF\nINJECTED=1\nghadelimiter_\n"),
        ("LOG_LEVEL", "visible-plain"),
        ("DB_HOST", "db.internal"),
        ("URL", "https://u:CANARY-direct@db.internal/"),
        ("HEALTH", "https://db.internal/health"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, want);
}

fn github_env_file(sandbox: &Sandbox) -> std::path::PathBuf {
    let path = sandbox.path("github_env");
    sandbox.write(&path, "EARLIER=kept\n");
    path
}

fn assert_untouched(sandbox: &Sandbox, path: &Path) {
    assert_eq!(sandbox.read(path), "EARLIER=kept\n");
}

#[test]
fn without_github_env_nothing_is_printed_and_kmsenv_exits_125() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"CANARY-no-env");

    let out = sandbox
        .kmsenv()
        .file(&file)
        .args(["export", "--format", "github"])
        .run()
        .kmsenv_error(&["$GITHUB_ENV is not set"]);

    assert!(out.stdout.is_empty());
    assert!(!contains_bytes(&out.all_output(), b"CANARY"));
}

#[test]
fn a_value_the_runner_would_change_is_refused_before_anything_is_written() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "GOOD", b"CANARY-good");
    sandbox.set(&file, "BINARY", b"\xff\xfe CANARY-binary");
    let github_env = github_env_file(&sandbox);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .env("GITHUB_ENV", &github_env)
        .args(["export", "--format", "github"])
        .run()
        .kmsenv_error(&["BINARY: value is not UTF-8"]);

    assert!(
        out.stdout.is_empty(),
        "no mask is printed for a run that writes nothing"
    );
    assert_untouched(&sandbox, &github_env);
}

#[test]
fn values_are_appended_after_what_earlier_steps_wrote() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set_with(&file, &["--plain"], "MODE", b"ci");
    let github_env = github_env_file(&sandbox);

    let out = sandbox
        .kmsenv()
        .file(&file)
        .env("GITHUB_ENV", &github_env)
        .args(["export", "--format", "github"])
        .run()
        .ok();

    assert!(out.stdout.is_empty(), "a plain value is not masked");
    let env = parse_github_env(&sandbox.read(&github_env)).expect("parses");
    assert_eq!(env.get("EARLIER").map(String::as_str), Some("kept"));
    assert_eq!(env.get("MODE").map(String::as_str), Some("ci"));
}
