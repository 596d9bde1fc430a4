//! Shared fixture for the integration tests: a real `moto_server` on a loopback
//! port, a tiny KMS JSON client that talks to it directly (to make ciphertexts the
//! way `aws kms encrypt` would), temporary directories, and a runner for the built
//! `kmsenv` binary with a controlled environment.
//!
//! Nothing here mocks KMS: moto encrypts for real and enforces encryption context.
//! Each test creates its own keys, because moto's key material is random per run.
//! Only std, `base64` and `nix` are used, so the fixture adds no dependencies.

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code)]

pub mod attack;
pub mod docker;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Region used by every test unless it says otherwise.
pub const REGION: &str = "us-east-1";

/// How long one kmsenv run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// How long moto_server may take to start answering.
const MOTO_START_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// moto_server

/// A moto_server listening on 127.0.0.1, shared by every test of one test binary.
pub struct Moto {
    port: u16,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The moto_server of this test binary, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(start_moto)
}

fn start_moto() -> Moto {
    let (tx, rx) = mpsc::channel::<Result<u16, String>>();
    // PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
    // process. Test threads come and go, so moto_server is forked from a thread of its
    // own that never returns: it is killed exactly when the test binary exits.
    std::thread::Builder::new()
        .name("moto_server keeper".into())
        .spawn(move || match spawn_ready_moto() {
            Ok((child, port)) => {
                let _ = tx.send(Ok(port));
                let _keep = child;
                loop {
                    std::thread::park();
                }
            }
            Err(message) => {
                let _ = tx.send(Err(message));
            }
        })
        .expect("spawn the moto_server keeper thread");
    match rx.recv() {
        Ok(Ok(port)) => Moto { port },
        Ok(Err(message)) => panic!("{message}"),
        Err(_) => panic!("the moto_server keeper thread died before reporting"),
    }
}

/// Starts moto_server on a free port and waits until it answers HTTP. A port taken
/// between probing and binding makes moto exit at once; that is retried.
fn spawn_ready_moto() -> Result<(Child, u16), String> {
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut command = Command::new("moto_server");
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only makes one async-signal-safe system call (prctl).
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err("moto_server not found: run `make test` (it installs moto[server])".into());
            }
            Err(e) => return Err(format!("cannot start moto_server: {e}")),
        };
        let deadline = Instant::now() + MOTO_START_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_error = format!("moto_server exited early ({status}) on port {port}");
                break;
            }
            if moto_answers(port) {
                return Ok((child, port));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "moto_server did not answer on 127.0.0.1:{port} within {} s",
                    MOTO_START_LIMIT.as_secs()
                ));
            }
            // Readiness poll of an external server, bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(last_error)
}

fn moto_answers(port: u16) -> bool {
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    matches!(http(port, request.as_bytes()), Ok((200, _)))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A KMS-shaped error answer from moto: HTTP status and JSON body.
#[derive(Debug)]
pub struct KmsError {
    pub status: u16,
    pub body: String,
}

impl Moto {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One KMS JSON call. Moto takes the region from the credential scope and does not
    /// check signatures.
    pub fn call(&self, region: &str, operation: &str, body: &str) -> Result<String, KmsError> {
        let request = format!(
            "POST / HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\n\
             Content-Type: application/x-amz-json-1.1\r\n\
             X-Amz-Target: TrentService.{operation}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/{region}/kms/aws4_request, SignedHeaders=host, Signature=00\r\n\
             Content-Length: {len}\r\n\
             Connection: close\r\n\r\n{body}",
            port = self.port,
            len = body.len(),
        );
        let (status, response) = http(self.port, request.as_bytes())
            .unwrap_or_else(|e| panic!("KMS {operation} to moto failed: {e}"));
        let response = String::from_utf8_lossy(&response).into_owned();
        if status == 200 {
            Ok(response)
        } else {
            Err(KmsError {
                status,
                body: response,
            })
        }
    }

    /// Creates a symmetric key and returns its ARN.
    pub fn create_key(&self, region: &str) -> String {
        let body = self
            .call(region, "CreateKey", "{}")
            .unwrap_or_else(|e| panic!("CreateKey: {e:?}"));
        json_field(&body, "Arn").unwrap_or_else(|| panic!("no Arn in CreateKey answer: {body}"))
    }

    /// `Encrypt`, returning the base64 `CiphertextBlob`, as `aws kms encrypt --query
    /// CiphertextBlob --output text` prints it.
    pub fn encrypt(&self, region: &str, key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> String {
        let body = format!(
            "{{\"KeyId\":{},\"Plaintext\":{},\"EncryptionContext\":{}}}",
            json_string(key),
            json_string(&STANDARD.encode(plaintext)),
            json_context(context)
        );
        let answer = self
            .call(region, "Encrypt", &body)
            .unwrap_or_else(|e| panic!("Encrypt: {e:?}"));
        json_field(&answer, "CiphertextBlob")
            .unwrap_or_else(|| panic!("no CiphertextBlob in Encrypt answer: {answer}"))
    }

    /// `Decrypt` of a base64 blob under `context`; the plaintext, or KMS's error.
    pub fn decrypt(&self, region: &str, blob: &str, context: &[(&str, &str)]) -> Result<Vec<u8>, KmsError> {
        let body = format!(
            "{{\"CiphertextBlob\":{},\"EncryptionContext\":{}}}",
            json_string(blob),
            json_context(context)
        );
        let answer = self.call(region, "Decrypt", &body)?;
        let plaintext = json_field(&answer, "Plaintext")
            .unwrap_or_else(|| panic!("no Plaintext in Decrypt answer: {answer}"));
        Ok(STANDARD.decode(plaintext).expect("Plaintext is base64"))
    }
}

/// Shortcut: a new key in moto.
pub fn create_key(region: &str) -> String {
    moto().create_key(region)
}

/// Shortcut: `Encrypt` through moto.
pub fn encrypt(region: &str, key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> String {
    moto().encrypt(region, key, plaintext, context)
}

/// Minimal HTTP/1.1 exchange: one request, `Connection: close`, read to EOF.
fn http(port: u16, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split =
        find(&raw, b"\r\n\r\n").ok_or_else(|| io::Error::other("HTTP answer without end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line: {head}")))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or_else(|| io::Error::other("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| io::Error::other("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(io::Error::other("short chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// True if `needle` occurs in `haystack` (bytes).
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

// ---------------------------------------------------------------------------
// Minimal JSON

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_context(context: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = context
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// The string value of the first `"key": "…"` in a JSON text.
pub fn json_field(json: &str, key: &str) -> Option<String> {
    let quoted = json_string(key);
    let mut from = 0;
    while let Some(at) = json[from..].find(&quoted) {
        let after = from + at + quoted.len();
        let rest = json[after..].trim_start();
        if let Some(rest) = rest.strip_prefix(':') {
            let mut parser = JsonParser::new(rest.trim_start());
            return parser.string().ok();
        }
        from = after;
    }
    None
}

/// Parses a JSON object whose values are all strings, in document order.
pub fn parse_json_object_of_strings(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = JsonParser::new(text);
    let mut out = Vec::new();
    p.skip_ws();
    p.expect(b'{')?;
    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.bump();
    } else {
        loop {
            p.skip_ws();
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            let value = p.string()?;
            out.push((key, value));
            p.skip_ws();
            match p.bump() {
                Some(b',') => continue,
                Some(b'}') => break,
                other => return Err(format!("expected , or }} but found {other:?}")),
            }
        }
    }
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err("trailing characters after the JSON object".into());
    }
    Ok(out)
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> JsonParser<'a> {
    fn new(text: &'a str) -> Self {
        JsonParser {
            bytes: text.as_bytes(),
            pos: 0,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let b = self.peek();
        self.pos += 1;
        b
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }
    fn expect(&mut self, b: u8) -> Result<(), String> {
        match self.bump() {
            Some(x) if x == b => Ok(()),
            other => Err(format!("expected {:?}, found {other:?}", b as char)),
        }
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or("short \\u escape")?;
        self.pos += 4;
        u32::from_str_radix(std::str::from_utf8(digits).map_err(|e| e.to_string())?, 16)
            .map_err(|e| e.to_string())
    }
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.bump().ok_or("unterminated string")? {
                b'"' => break,
                b'\\' => match self.bump().ok_or("unterminated escape")? {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let mut code = self.hex4()?;
                        if (0xD800..0xDC00).contains(&code) {
                            if self.bump() != Some(b'\\') || self.bump() != Some(b'u') {
                                return Err("lone high surrogate".into());
                            }
                            let low = self.hex4()?;
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        }
                        let c = char::from_u32(code).ok_or("bad \\u escape")?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    other => return Err(format!("bad escape \\{}", other as char)),
                },
                b if b < 0x20 => return Err("raw control character in string".into()),
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Temporary directories

/// A directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "kmsenv-test-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Running kmsenv

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
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr should contain {needle:?}: {}",
                self.describe()
            );
        }
        self
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
        run.command
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_KMS", moto().endpoint());
        run
    }

    /// kmsenv with only PATH and HOME: no AWS configuration at all.
    pub fn without_aws(home: &Path) -> Kmsenv {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kmsenv"));
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home)
            .current_dir(home);
        Kmsenv {
            command,
            stdin: None,
            what: vec!["kmsenv".into()],
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

    /// Sends KMS calls to `url` (`AWS_ENDPOINT_URL_KMS`), e.g. a [`Proxy`]'s endpoint.
    pub fn endpoint(self, url: &str) -> Kmsenv {
        self.env("AWS_ENDPOINT_URL_KMS", url)
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

/// Waits for a child with a watchdog, so a hanging kmsenv fails the test instead of
/// hanging the suite.
pub fn wait_bounded(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(result) => {
            let out = result.unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"));
            Output {
                status: out.status,
                stdout: out.stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                what: what.to_string(),
            }
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("`{what}` did not finish within {} s", RUN_LIMIT.as_secs());
        }
    }
}

// ---------------------------------------------------------------------------
// A sandbox per test

/// One test's world: a temp dir (also HOME and working directory) and helpers to
/// make keys and files in it.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: TempDir::new() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// kmsenv with test credentials and moto's endpoint.
    pub fn kmsenv(&self) -> Kmsenv {
        Kmsenv::new(self.dir.path())
    }

    /// kmsenv with no AWS configuration at all.
    pub fn kmsenv_without_aws(&self) -> Kmsenv {
        Kmsenv::without_aws(self.dir.path())
    }

    /// A new KMS key in the default region.
    pub fn key(&self) -> String {
        create_key(REGION)
    }

    /// `kmsenv -f NAME init --key KEY…`, asserted to succeed.
    pub fn init(&self, name: &str, keys: &[&str]) -> PathBuf {
        let file = self.path(name);
        let mut run = self.kmsenv().file(&file).arg("init");
        for key in keys {
            run = run.arg("--key").arg(key);
        }
        run.run().ok();
        file
    }

    /// A new file under a new key: (path, key ARN).
    pub fn new_file(&self, name: &str) -> (PathBuf, String) {
        let key = self.key();
        let file = self.init(name, &[&key]);
        (file, key)
    }

    /// `kmsenv -f FILE set NAME` with the value on stdin, asserted to succeed.
    pub fn set(&self, file: &Path, name: &str, value: &[u8]) {
        self.set_with(file, &[], name, value);
    }

    /// `kmsenv -f FILE set FLAGS… NAME` with the value on stdin.
    pub fn set_with(&self, file: &Path, flags: &[&str], name: &str, value: &[u8]) {
        self.kmsenv()
            .file(file)
            .arg("set")
            .args(flags)
            .arg(name)
            .stdin(value)
            .run()
            .ok();
    }

    /// The environment `kmsenv -f F… exec -- env -0` gives its child.
    #[track_caller]
    pub fn exec_env(&self, files: &[&Path]) -> BTreeMap<String, Vec<u8>> {
        let mut run = self.kmsenv();
        for file in files {
            run = run.file(file);
        }
        run.args(["exec", "--", "env", "-0"]).run().ok().env0()
    }

    pub fn read(&self, file: &Path) -> String {
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
    }

    pub fn write(&self, file: &Path, text: &str) {
        std::fs::write(file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    /// Writes an executable file.
    pub fn write_executable(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, text).expect("write executable");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// A path that a command creates to prove it ran.
    pub fn marker(&self) -> PathBuf {
        self.path("MARKER-command-ran")
    }

    /// `sh -c 'touch MARKER'` as arguments for `exec --`.
    pub fn touch_marker_command(&self) -> Vec<OsString> {
        vec![
            "sh".into(),
            "-c".into(),
            "touch \"$1\"".into(),
            "sh".into(),
            self.marker().into_os_string(),
        ]
    }

    /// Runs `kmsenv -f F… exec -- sh -c 'touch MARKER'` and returns the result.
    pub fn exec_marker(&self, files: &[&Path]) -> Output {
        let mut run = self.kmsenv();
        for file in files {
            run = run.file(file);
        }
        run.args(["exec", "--"]).args(self.touch_marker_command()).run()
    }

    /// Asserts that the file is usable: exec runs the marker command. Then removes
    /// the marker, so a later run can prove that the command did *not* run.
    #[track_caller]
    pub fn assert_command_runs(&self, files: &[&Path]) {
        self.exec_marker(files).ok();
        assert!(self.marker().exists(), "the marker command should have run");
        std::fs::remove_file(self.marker()).expect("remove marker");
    }

    /// Asserts that the marker command did not run.
    #[track_caller]
    pub fn assert_command_did_not_run(&self) {
        assert!(
            !self.marker().exists(),
            "the command ran although kmsenv should have failed closed"
        );
    }
}

// ---------------------------------------------------------------------------
// Editing the TOML text by hand, as an attacker or a merge would

/// The line of `[env]` entry `name` (`NAME = …`).
#[track_caller]
pub fn entry_line<'a>(text: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name} ");
    let prefix_eq = format!("{name}=");
    text.lines()
        .find(|line| {
            let line = line.trim_start();
            (line.starts_with(&prefix) || line.starts_with(&prefix_eq))
                && line[name.len()..].trim_start().starts_with('=')
        })
        .unwrap_or_else(|| panic!("no entry {name} in:\n{text}"))
}

/// True if the file has an `[env]` entry `name`.
pub fn has_entry(text: &str, name: &str) -> bool {
    let prefix = format!("{name} ");
    let prefix_eq = format!("{name}=");
    text.lines().any(|line| {
        let line = line.trim_start();
        (line.starts_with(&prefix) || line.starts_with(&prefix_eq))
            && line[name.len()..].trim_start().starts_with('=')
    })
}

/// The string value of `field = "…"` within a line of TOML.
#[track_caller]
pub fn quoted_field(line: &str, field: &str) -> String {
    for pattern in [format!("{field} = \""), format!("{field}=\"")] {
        if let Some(at) = line.find(&pattern) {
            let rest = &line[at + pattern.len()..];
            let end = rest
                .find('"')
                .unwrap_or_else(|| panic!("unterminated {field} in {line}"));
            return rest[..end].to_string();
        }
    }
    panic!("no {field} = \"…\" in line: {line}");
}

/// The `sealed` text of entry `name`.
#[track_caller]
pub fn sealed_of(text: &str, name: &str) -> String {
    quoted_field(entry_line(text, name), "sealed")
}

/// The `kms` text of entry `name`.
#[track_caller]
pub fn kms_of(text: &str, name: &str) -> String {
    quoted_field(entry_line(text, name), "kms")
}

/// The first `data_key` blob of the file.
#[track_caller]
pub fn data_key_of(text: &str) -> String {
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("data_key"))
        .unwrap_or_else(|| panic!("no data_key in:\n{text}"));
    quoted_field(line, "data_key")
}

/// Replaces exactly one occurrence of `from`.
#[track_caller]
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected exactly one {from:?} in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// Swaps two distinct substrings.
#[track_caller]
pub fn swap(text: &str, a: &str, b: &str) -> String {
    let placeholder = "\u{1}SWAP\u{1}";
    let text = replace_once(text, a, placeholder);
    let text = replace_once(&text, b, a);
    replace_once(&text, placeholder, b)
}

/// Inserts a line right after the `[env]` header (appending the table if missing).
pub fn insert_in_env(text: &str, line: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in text.split_inclusive('\n') {
        out.push_str(l);
        if !done && l.trim() == "[env]" {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            done = true;
        }
    }
    if !done {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n[env]\n");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Removes the line of entry `name`.
#[track_caller]
pub fn remove_entry(text: &str, name: &str) -> String {
    let line = entry_line(text, name).to_string();
    let mut out = String::new();
    let mut removed = false;
    for l in text.split_inclusive('\n') {
        if !removed && l.trim_end_matches('\n') == line {
            removed = true;
            continue;
        }
        out.push_str(l);
    }
    assert!(removed);
    out
}

/// A file without keys, hand-written: only plain and `kms` values, no MAC.
pub fn keyless_file(entries: &[&str]) -> String {
    let mut text = String::from("[kmsenv]\nversion = 2\n\n[env]\n");
    for entry in entries {
        text.push_str(entry);
        text.push('\n');
    }
    text
}

/// A TOML basic string literal for hand-written files.
pub fn toml_string(s: &str) -> String {
    json_string(s)
}

/// Bytes as an OsString (for non-UTF-8 arguments).
pub fn os(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_os_string()
}

/// Base64 (standard, padded).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------
// Proxy: the fault-injecting KMS proxy (tests/support/kms_fault_proxy.py)

/// How long the proxy may take to print its `listening on` line.
const PROXY_START_LIMIT: Duration = Duration::from_secs(20);

/// A `kms_fault_proxy.py` in front of this test binary's moto_server, on its own
/// loopback port. Each test starts its own, so rules never leak between tests that
/// run in parallel. Killed on drop; it also exits by itself when the test binary does.
pub struct Proxy {
    pub port: u16,
    child: Child,
}

impl Proxy {
    /// Starts a proxy forwarding to the shared moto_server and waits (bounded) for it
    /// to accept connections.
    pub fn start() -> Proxy {
        Proxy::start_with(&[])
    }

    /// Like [`Proxy::start`], with extra command-line options
    /// (`--latency-ms N`, `--quota-rps R`, `--quota-burst B`).
    pub fn start_with(options: &[&str]) -> Proxy {
        let upstream = moto().endpoint();
        let args: Vec<&str> = ["--upstream", upstream.as_str()]
            .into_iter()
            .chain(options.iter().copied())
            .collect();
        let (child, port) = spawn_listening("kms_fault_proxy.py", &args);
        Proxy { port, child }
    }

    /// The URL to give kmsenv as `AWS_ENDPOINT_URL_KMS`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One control request; panics unless the proxy answers 200.
    fn control(&self, method: &str, path: &str, body: &str) -> String {
        let request = format!(
            "{method} {path} HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\n\
             Content-Length: {len}\r\n\
             Connection: close\r\n\r\n{body}",
            port = self.port,
            len = body.len(),
        );
        let (status, answer) = http(self.port, request.as_bytes())
            .unwrap_or_else(|e| panic!("proxy control {method} {path} failed: {e}"));
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(status, 200, "proxy control {method} {path} {body}: {answer}");
        answer
    }

    /// Replaces the rule list: `json` is the array, e.g.
    /// `[{"op": "Decrypt", "times": 2, "action": "error", "code": "ThrottlingException"}]`.
    pub fn rules(&self, json: &str) {
        self.control("POST", "/_proxy/rules", &format!("{{\"rules\": {json}}}"));
    }

    /// `{"latency_ms": N, "quota_rps": R, "quota_burst": B}` (any subset).
    pub fn config(&self, json: &str) {
        self.control("POST", "/_proxy/config", json);
    }

    /// Zero the counts and clear the rules.
    pub fn reset(&self) {
        self.control("POST", "/_proxy/reset", "");
    }

    /// The counts as JSON: `{"total": n, "ops": {…}, "regions": {…}, "throttled": n, …}`.
    pub fn counts(&self) -> String {
        self.control("GET", "/_proxy/counts", "")
    }

    /// Requests of one KMS operation (`Decrypt`, `GenerateDataKey`, …) seen so far.
    pub fn count_op(&self, op: &str) -> u64 {
        json_count(&self.counts(), "ops", op)
    }

    /// Requests signed for one region seen so far.
    pub fn count_region(&self, region: &str) -> u64 {
        json_count(&self.counts(), "regions", region)
    }

    /// Every request the proxy received (control requests excepted).
    pub fn total(&self) -> u64 {
        json_top_number(&self.counts(), "total")
    }

    /// Requests answered with `ThrottlingException` by the quota.
    pub fn throttled(&self) -> u64 {
        json_top_number(&self.counts(), "throttled")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The integer after `"key":` at the start of `text` (after whitespace), if any.
fn number_after_key(text: &str, key: &str) -> Option<u64> {
    let quoted = json_string(key);
    let at = text.find(&quoted)?;
    let rest = text[at + quoted.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `section.key` of the proxy's counts (0 when absent).
fn json_count(json: &str, section: &str, key: &str) -> u64 {
    let quoted = json_string(section);
    let at = json
        .find(&quoted)
        .unwrap_or_else(|| panic!("no {section} in proxy counts: {json}"));
    let rest = &json[at + quoted.len()..];
    let open = rest
        .find('{')
        .unwrap_or_else(|| panic!("no {section} object in: {json}"));
    let close = rest[open..]
        .find('}')
        .unwrap_or_else(|| panic!("unterminated {section} in: {json}"))
        + open;
    number_after_key(&rest[open..=close], key).unwrap_or(0)
}

/// A top-level number of the proxy's counts.
fn json_top_number(json: &str, key: &str) -> u64 {
    number_after_key(json, key).unwrap_or_else(|| panic!("no {key} in proxy counts: {json}"))
}

// ---------------------------------------------------------------------------
// Who signed, credential stand-ins, forward proxy, TLS (tests/credentials.rs,
// tests/networks.rs)

impl Proxy {
    /// Like [`Proxy::start`], also serving TLS with `cert`/`key` (PEM) on the same
    /// port; the control API stays plain HTTP.
    pub fn start_tls(cert: &Path, key: &Path) -> Proxy {
        let cert = cert.to_str().expect("UTF-8 certificate path");
        let key = key.to_str().expect("UTF-8 key path");
        Proxy::start_with(&["--tls-cert", cert, "--tls-key", key])
    }

    /// `https://HOST:PORT`, for a proxy started with [`Proxy::start_tls`].
    pub fn https_endpoint(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }

    /// Requests per SigV4 access key id (`"(none)"`: unsigned).
    pub fn akids(&self) -> BTreeMap<String, u64> {
        json_map(&self.counts(), "akids")
    }

    /// Requests per `X-Amz-Security-Token` (`"(none)"`: without one).
    pub fn tokens(&self) -> BTreeMap<String, u64> {
        json_map(&self.counts(), "tokens")
    }

    /// Requests that came over TLS.
    pub fn count_tls(&self) -> u64 {
        json_top_number(&self.counts(), "tls")
    }

    /// Every request, in order: `op`, `region`, `akid`, `token`, `tls`, `status`,
    /// `issued_akid`/`issued_token` (credentials in the answer), `form.NAME`.
    pub fn requests(&self) -> Vec<BTreeMap<String, String>> {
        let json = self.control("GET", "/_proxy/requests", "");
        parse_json_array_of_string_objects(&json)
            .unwrap_or_else(|e| panic!("bad /_proxy/requests answer ({e}): {json}"))
    }
}

/// The flat `{"name": number, …}` object under top-level key `section`.
#[track_caller]
pub fn json_map(json: &str, section: &str) -> BTreeMap<String, u64> {
    let quoted = json_string(section);
    let at = json
        .find(&quoted)
        .unwrap_or_else(|| panic!("no {section} in: {json}"));
    let rest = json[at + quoted.len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .unwrap_or_else(|| panic!("no {section} object in: {json}"));
    let mut p = JsonParser::new(rest.trim_start());
    let mut out = BTreeMap::new();
    let mut parse = || -> Result<(), String> {
        p.expect(b'{')?;
        p.skip_ws();
        if p.peek() == Some(b'}') {
            return Ok(());
        }
        loop {
            p.skip_ws();
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            let mut digits = String::new();
            while let Some(b) = p.peek().filter(u8::is_ascii_digit) {
                digits.push(b as char);
                p.bump();
            }
            out.insert(key, digits.parse::<u64>().map_err(|e| e.to_string())?);
            p.skip_ws();
            match p.bump() {
                Some(b',') => continue,
                Some(b'}') => return Ok(()),
                other => return Err(format!("expected , or }} but found {other:?}")),
            }
        }
    };
    parse().unwrap_or_else(|e| panic!("bad {section} object ({e}) in: {json}"));
    out
}

/// Parses `[{"k": "v", …}, …]` (every value a string).
pub fn parse_json_array_of_string_objects(text: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut p = JsonParser::new(text);
    let mut out = Vec::new();
    p.skip_ws();
    p.expect(b'[')?;
    p.skip_ws();
    if p.peek() == Some(b']') {
        return Ok(out);
    }
    loop {
        p.skip_ws();
        p.expect(b'{')?;
        let mut object = BTreeMap::new();
        p.skip_ws();
        if p.peek() == Some(b'}') {
            p.bump();
        } else {
            loop {
                p.skip_ws();
                let key = p.string()?;
                p.skip_ws();
                p.expect(b':')?;
                p.skip_ws();
                object.insert(key, p.string()?);
                p.skip_ws();
                match p.bump() {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    other => return Err(format!("expected , or }} but found {other:?}")),
                }
            }
        }
        out.push(object);
        p.skip_ws();
        match p.bump() {
            Some(b',') => continue,
            Some(b']') => return Ok(out),
            other => return Err(format!("expected , or ] but found {other:?}")),
        }
    }
}

/// Starts `python3 tests/support/SCRIPT ARGS…` and waits (bounded) for its one
/// `listening on HOST:PORT` line; returns the child and the port.
fn spawn_listening(script: &str, args: &[&str]) -> (Child, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script);
    let mut child = match Command::new("python3")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!(
                "python3 not found: {} needs Python 3.11 (standard library only)",
                script.display()
            )
        }
        Err(e) => panic!("cannot start {}: {e}", script.display()),
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let result = io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line).map(|_| line);
        let _ = tx.send(result);
    });
    let line = match rx.recv_timeout(PROXY_START_LIMIT) {
        Ok(Ok(line)) => line,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not print `listening on`: {other:?}",
                script.display()
            );
        }
    };
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.parse::<u16>().ok());
    match port {
        Some(port) => (child, port),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not start: first line {line:?}", script.display());
        }
    }
}

/// One of `tests/support/aws_standins.py`'s stand-ins on a loopback port: `imds`,
/// `container`, `sso` or `forward-proxy`. Killed on drop; it also exits by itself
/// when the test binary does.
pub struct StandIn {
    pub port: u16,
    child: Child,
}

impl StandIn {
    /// `aws_standins.py MODE OPTIONS…` (see the script for the options).
    pub fn start(mode: &str, options: &[&str]) -> StandIn {
        let mut args = vec![mode];
        args.extend_from_slice(options);
        let (child, port) = spawn_listening("aws_standins.py", &args);
        StandIn { port, child }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests it received, one line each, oldest first.
    pub fn log(&self) -> Vec<String> {
        let request = format!(
            "GET /_standin/log HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        let (status, body) = http(self.port, request.as_bytes())
            .unwrap_or_else(|e| panic!("stand-in log on port {} failed: {e}", self.port));
        assert_eq!(status, 200, "stand-in log: {}", String::from_utf8_lossy(&body));
        String::from_utf8_lossy(&body)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway CA and a server certificate it signed, for `localhost` and
/// `127.0.0.1`, made with the `openssl` CLI.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Makes a [`TestCa`] in `dir`; `None` (with a note on stderr) when the `openssl`
/// CLI is not installed.
pub fn make_test_ca(dir: &Path) -> Option<TestCa> {
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("note: the openssl CLI is not installed; TLS test skipped");
        return None;
    }
    let ca = TestCa {
        ca_cert: dir.join("test-ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let ca_key = dir.join("test-ca.key");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost, IP:127.0.0.1\n",
    )
    .expect("write server.ext");
    let openssl = |args: &[&OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |text: &'static str| OsStr::new(text);
    openssl(&[
        s("req"),
        s("-x509"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:prime256v1"),
        s("-nodes"),
        s("-days"),
        s("2"),
        s("-subj"),
        s("/CN=kmsenv test CA"),
        s("-addext"),
        s("basicConstraints=critical,CA:TRUE"),
        s("-addext"),
        s("keyUsage=critical,keyCertSign,cRLSign"),
        s("-keyout"),
        ca_key.as_os_str(),
        s("-out"),
        ca.ca_cert.as_os_str(),
    ]);
    openssl(&[
        s("req"),
        s("-new"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:prime256v1"),
        s("-nodes"),
        s("-subj"),
        s("/CN=localhost"),
        s("-keyout"),
        ca.server_key.as_os_str(),
        s("-out"),
        csr.as_os_str(),
    ]);
    openssl(&[
        s("x509"),
        s("-req"),
        s("-in"),
        csr.as_os_str(),
        s("-CA"),
        ca.ca_cert.as_os_str(),
        s("-CAkey"),
        ca_key.as_os_str(),
        s("-set_serial"),
        s("2"),
        s("-days"),
        s("2"),
        s("-extfile"),
        ext.as_os_str(),
        s("-out"),
        ca.server_cert.as_os_str(),
    ]);
    Some(ca)
}

/// The shipped binary of `make static` (`KMSENV_STATIC_BIN`, which `make test`
/// sets): fully static, so it runs where nothing else exists.
pub fn static_kmsenv() -> PathBuf {
    let path = std::env::var_os("KMSENV_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-musl/release/kmsenv")
        });
    assert!(
        path.exists(),
        "{} is missing: run `make static` (make test does)",
        path.display()
    );
    path
}

/// The AWS CLI against moto, with test credentials and config files pinned to
/// the sandbox. It keeps the test's own environment otherwise (it may live in a
/// Python virtualenv).
pub fn aws_cli(sandbox: &Sandbox) -> Command {
    let mut command = Command::new("aws");
    command
        .args(["--endpoint-url", &moto().endpoint(), "--region", REGION])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", sandbox.path("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", sandbox.path("no-aws-credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    command
}

/// Runs an [`aws_cli`] command; panics (with its stderr) unless it succeeds.
pub fn run_aws_cli(mut command: Command, what: &str) -> Vec<u8> {
    let output = match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("aws CLI not found on PATH: install awscli to run this test (make tools does)")
        }
        Err(e) => panic!("cannot run aws: {e}"),
    };
    assert!(
        output.status.success(),
        "aws {what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `aws kms encrypt --query CiphertextBlob --output text` against moto and
/// returns the blob, exactly as a contributor would copy it.
pub fn aws_kms_encrypt(sandbox: &Sandbox, key: &str, plaintext: &[u8], context: Option<&str>) -> String {
    let plaintext_file = sandbox.path("plaintext.bin");
    std::fs::write(&plaintext_file, plaintext).expect("write plaintext");
    let mut command = aws_cli(sandbox);
    command
        .args(["kms", "encrypt", "--key-id", key, "--plaintext"])
        .arg(format!("fileb://{}", plaintext_file.display()))
        .args(["--query", "CiphertextBlob", "--output", "text"]);
    if let Some(context) = context {
        command.args(["--encryption-context", context]);
    }
    let blob = String::from_utf8(run_aws_cli(command, "kms encrypt")).expect("aws prints text");
    let blob = blob.trim().to_string();
    assert!(!blob.is_empty(), "aws printed no ciphertext");
    blob
}
