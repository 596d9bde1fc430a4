//! Python servers on loopback that stand between kmsenv and moto or AWS: the
//! fault-injecting KMS proxy (`kms_fault_proxy.py`: throttling, errors, latency,
//! TLS, and a record of every request) and the credential stand-ins
//! (`aws_standins.py`: IMDS, the container endpoint, SSO, a forward proxy).
//!
//! Each test starts its own, so rules never leak between tests that run in
//! parallel. They are killed on drop and exit by themselves when the test binary
//! does.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::http;
use super::moto::moto;

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A `kms_fault_proxy.py` in front of this test binary's moto_server, on its own
/// loopback port.
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

    /// Like [`Proxy::start`], also serving TLS with `cert`/`key` (PEM) on the same
    /// port; the control API stays plain HTTP.
    pub fn start_tls(cert: &Path, key: &Path) -> Proxy {
        let cert = cert.to_str().expect("UTF-8 certificate path");
        let key = key.to_str().expect("UTF-8 key path");
        Proxy::start_with(&["--tls-cert", cert, "--tls-key", key])
    }

    /// The URL to give kmsenv as `AWS_ENDPOINT_URL_KMS`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `https://HOST:PORT`, for a proxy started with [`Proxy::start_tls`].
    pub fn https_endpoint(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }

    /// One control request; panics unless the proxy answers 200 with JSON.
    fn control(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, answer) = http::request(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json")],
            body,
        )
        .unwrap_or_else(|e| panic!("proxy control {method} {path} failed: {e}"));
        assert_eq!(status, 200, "proxy control {method} {path} {body}: {answer}");
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("proxy control {method} {path} answered no JSON ({e}): {answer}"))
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

    /// The counts: `{"total": n, "ops": {…}, "regions": {…}, "throttled": n, …}`.
    pub fn counts(&self) -> Value {
        self.control("GET", "/_proxy/counts", "")
    }

    /// Requests of one KMS operation (`Decrypt`, `GenerateDataKey`, …) seen so far.
    pub fn count_op(&self, op: &str) -> u64 {
        self.counts()["ops"][op].as_u64().unwrap_or(0)
    }

    /// Requests of `op` seen once at least `n` have been (or 30 s have passed): a
    /// request that a client wrote just before it exited may still be on its way
    /// through the proxy when the client's exit is seen.
    pub fn wait_count_op(&self, op: &str, n: u64) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let seen = self.count_op(op);
            if seen >= n || std::time::Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The most requests of `op` the proxy held at once, from arrival to the end
    /// of their answer: how many calls a client had in flight together.
    pub fn peak_in_flight(&self, op: &str) -> u64 {
        self.counts()["peak_in_flight"][op].as_u64().unwrap_or(0)
    }

    /// How the proxy's `wait_for` holds ended: (released because the awaited
    /// operation arrived, released at their `ms`).
    pub fn waits(&self) -> (u64, u64) {
        let waits = &self.counts()["waits"];
        (
            waits["seen"].as_u64().unwrap_or(0),
            waits["timeout"].as_u64().unwrap_or(0),
        )
    }

    /// Requests signed for one region seen so far.
    pub fn count_region(&self, region: &str) -> u64 {
        self.counts()["regions"][region].as_u64().unwrap_or(0)
    }

    /// Every request the proxy received (control requests excepted).
    pub fn total(&self) -> u64 {
        self.top_number("total")
    }

    /// Requests answered with `ThrottlingException` by the quota.
    pub fn throttled(&self) -> u64 {
        self.top_number("throttled")
    }

    /// Requests that came over TLS.
    pub fn count_tls(&self) -> u64 {
        self.top_number("tls")
    }

    /// Connections that began a TLS handshake, whether or not it succeeded.
    pub fn count_tls_handshakes(&self) -> u64 {
        self.top_number("tls_handshakes")
    }

    /// Requests per region the request was signed for.
    pub fn regions(&self) -> BTreeMap<String, u64> {
        self.section("regions")
    }

    /// Requests per SigV4 access key id (`"(none)"`: unsigned).
    pub fn akids(&self) -> BTreeMap<String, u64> {
        self.section("akids")
    }

    /// Requests per `X-Amz-Security-Token` (`"(none)"`: without one).
    pub fn tokens(&self) -> BTreeMap<String, u64> {
        self.section("tokens")
    }

    /// Every request, in order: `op`, `region`, `akid`, `token`, `tls`, `status`,
    /// `issued_akid`/`issued_token` (credentials in the answer), `form.NAME`.
    pub fn requests(&self) -> Vec<BTreeMap<String, String>> {
        let json = self.control("GET", "/_proxy/requests", "");
        serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("bad /_proxy/requests answer ({e}): {json}"))
    }

    #[track_caller]
    fn top_number(&self, key: &str) -> u64 {
        let counts = self.counts();
        counts[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in proxy counts: {counts}"))
    }

    /// The flat `{"name": number, …}` object under `section` of the counts.
    #[track_caller]
    fn section(&self, section: &str) -> BTreeMap<String, u64> {
        let counts = self.counts();
        serde_json::from_value(counts[section].clone())
            .unwrap_or_else(|e| panic!("bad {section} object ({e}) in: {counts}"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One of `tests/support/aws_standins.py`'s stand-ins on a loopback port: `imds`,
/// `container`, `sso` or `forward-proxy`.
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
        let (status, body) = http::request(self.port, "GET", "/_standin/log", &[], "")
            .unwrap_or_else(|e| panic!("stand-in log on port {} failed: {e}", self.port));
        assert_eq!(status, 200, "stand-in log: {body}");
        body.lines().map(str::to_string).collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let line = match rx.recv_timeout(START_LIMIT) {
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
