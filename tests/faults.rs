//! KMS misbehaving: throttling, 5xx, hangs, resets, refused connections, the
//! modelled KMS errors, a failing region, missing credentials — through the
//! fault-injecting proxy (tests/support/kms_fault_proxy.py) in front of moto.
//!
//! Files are always made through kmsenv pointed at moto directly; only the run
//! under test goes through the proxy. Every failing case asserts exit 125, a first
//! stderr line that names the file and the AWS code or key, that the command did
//! not run, and an upper bound on the time taken (bounds, never exact times).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const WEST: &str = "us-west-2";

/// Codes KMS returns that moto does not model; none of them is retryable.
const MODELLED_ERRORS: [&str; 4] = [
    "DisabledException",
    "KMSInvalidStateException",
    "IncorrectKeyException",
    "AccessDeniedException",
];

/// A run and how long it took.
struct Timed {
    out: Output,
    took: Duration,
}

/// `kmsenv [OPTIONS…] -f FILE exec -- sh -c 'touch MARKER'` with KMS at `endpoint`.
fn exec_via(sandbox: &Sandbox, endpoint: &str, file: &Path, options: &[&str]) -> Timed {
    let run = sandbox
        .kmsenv()
        .endpoint(endpoint)
        .args(options)
        .file(file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command());
    let start = Instant::now();
    let out = run.run();
    Timed {
        out,
        took: start.elapsed(),
    }
}

impl Timed {
    /// Asserts the run took less than `limit` seconds.
    #[track_caller]
    fn within(self, limit: f64) -> Timed {
        assert!(
            self.took < Duration::from_secs_f64(limit),
            "`{}` took {:?}, more than the {limit} s bound\n--- stderr ---\n{}",
            self.out.what,
            self.took,
            self.out.stderr
        );
        self
    }

    /// Asserts the run took at least `floor` seconds (proves the fault was in the path).
    #[track_caller]
    fn at_least(self, floor: f64) -> Timed {
        assert!(
            self.took >= Duration::from_secs_f64(floor),
            "`{}` took only {:?}, less than {floor} s: the injected delay was not waited for\n--- stderr ---\n{}",
            self.out.what,
            self.took,
            self.out.stderr
        );
        self
    }

    /// Asserts fail-closed: exit 125, a first stderr line `kmsenv: …` naming the file
    /// and every needle, and the marker command not run.
    #[track_caller]
    fn fails_closed(self, sandbox: &Sandbox, file: &Path, needles: &[&str]) -> Timed {
        let path = file.display().to_string();
        let mut all = vec![path.as_str()];
        all.extend_from_slice(needles);
        let out = self.out.first_line_names(&all);
        sandbox.assert_command_did_not_run();
        Timed { out, ..self }
    }

    /// Asserts success: exit 0 and the marker command ran (the marker is then removed).
    #[track_caller]
    fn runs_the_command(self, sandbox: &Sandbox) -> Timed {
        let out = self.out.ok();
        assert!(sandbox.marker().exists(), "the command should have run");
        std::fs::remove_file(sandbox.marker()).expect("remove marker");
        Timed { out, ..self }
    }
}

/// A rule list of one rule as JSON.
fn rule(op: Option<&str>, region: Option<&str>, times: Option<u32>, action: &str) -> String {
    let (op, region, times) = (Value::from(op), Value::from(region), Value::from(times));
    format!("{{\"op\": {op}, \"region\": {region}, \"times\": {times}, {action}}}")
}

/// `"action": "error", "code": CODE`.
fn error_action(code: &str) -> String {
    format!("\"action\": \"error\", \"code\": {}", Value::from(code))
}

/// A file under a new us-east-1 key holding one sealed value.
const SEALED_FILE: &[Entry] = &[sealed("DATABASE_URL", b"postgres://app:s3cret@db/app")];

/// The proxy forwards faithfully: the file runs the command through it.
#[track_caller]
fn assert_runs_through(sandbox: &Sandbox, proxy: &Proxy, file: &Path) {
    exec_via(sandbox, &proxy.endpoint(), file, &[]).runs_the_command(sandbox);
    proxy.reset();
}

// ---------------------------------------------------------------------------
// Throttling

#[test]
fn throttled_twice_then_answered_exec_succeeds() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(
            Some("Decrypt"),
            None,
            Some(2),
            &error_action("ThrottlingException")
        )
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &[])
        .runs_the_command(&sandbox)
        .within(20.0);
    assert_eq!(
        proxy.count_op("Decrypt"),
        3,
        "two throttled attempts and one answered: {}",
        proxy.counts()
    );
}

/// Throttling is retried until the deadline, not for a fixed number of attempts:
/// a fleet sharing one quota gets through when its processes keep trying.
#[test]
fn throttled_forever_is_retried_until_the_deadline_then_fails_naming_throttling() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(Some("Decrypt"), None, None, &error_action("ThrottlingException"))
    ));
    // The first four waits are at most 1 + 2 + 4 + 5 s (jitter, capped at 5 s): a
    // fifth attempt always comes before a 15 s deadline.
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "15"])
        .fails_closed(&sandbox, &file, &["ThrottlingException", &key])
        .within(20.0);
    assert!(
        proxy.count_op("Decrypt") >= 5,
        "throttling is retried past the 4 attempts other failures get: {}",
        proxy.counts()
    );
}

/// Many throttled calls in one process: each keeps retrying until the deadline.
/// The SDK's default retry token bucket (500 tokens, 5 per throttled retry)
/// would stop every call after about 100 retries in all — 40 values would get
/// at most 140 attempts; until a 15 s deadline they get far more.
#[test]
fn forty_throttled_direct_values_keep_retrying_until_the_deadline() {
    let sandbox = Sandbox::new();
    let file = direct_values_file(&sandbox, 40);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(Some("Decrypt"), None, None, &error_action("ThrottlingException"))
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "15"])
        .fails_closed(&sandbox, &file, &["ThrottlingException"])
        .within(20.0);
    let attempts = proxy.count_op("Decrypt");
    assert!(
        attempts > 40 + 100 + 20,
        "{attempts} Decrypt attempts: retries stopped before the deadline ({})",
        proxy.counts()
    );
}

/// Throttled answers that each take a second: the deadline always comes while the
/// SDK is still retrying. KMS answered every attempt with ThrottlingException, so
/// that is what the user must be told, not "no answer".
#[test]
fn throttled_until_the_deadline_fails_in_time_naming_throttling() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(
            Some("Decrypt"),
            None,
            None,
            &format!("{}, \"ms\": 1000", error_action("ThrottlingException"))
        )
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "5"])
        .fails_closed(&sandbox, &file, &["ThrottlingException", &key])
        .within(9.0);
    assert!(proxy.count_op("Decrypt") >= 2, "{}", proxy.counts());
}

// ---------------------------------------------------------------------------
// Transport faults

#[test]
fn endpoint_that_never_answers_fails_within_the_timeout() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!("[{}]", rule(None, None, None, "\"action\": \"hang\"")));
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "2"])
        .fails_closed(&sandbox, &file, &["TimeoutError", &key])
        .within(6.0)
        .at_least(1.0);
    assert!(proxy.count_op("Decrypt") >= 1, "{}", proxy.counts());
}

#[test]
fn slow_answers_inside_the_deadline_are_waited_for() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.config("{\"latency_ms\": 700}");
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "10"])
        .runs_the_command(&sandbox)
        .at_least(0.7)
        .within(10.0);
    assert_eq!(proxy.count_op("Decrypt"), 1, "{}", proxy.counts());
}

#[test]
fn slow_answers_beyond_the_deadline_fail_within_it() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(
            Some("Decrypt"),
            None,
            None,
            "\"action\": \"latency\", \"ms\": 8000"
        )
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "2"])
        .fails_closed(&sandbox, &file, &["TimeoutError", &key])
        .within(6.0);
}

#[test]
fn connection_reset_is_retried_then_fails() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!("[{}]", rule(None, None, None, "\"action\": \"reset\"")));
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "30"])
        .fails_closed(&sandbox, &file, &["ConnectionError", &key])
        .within(20.0);
    assert_eq!(
        proxy.count_op("Decrypt"),
        4,
        "a reset is a transport error: retried up to 4 attempts: {}",
        proxy.counts()
    );
}

#[test]
fn connection_reset_once_is_retried_and_succeeds() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(None, None, Some(1), "\"action\": \"reset\"")
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &[])
        .runs_the_command(&sandbox)
        .within(15.0);
    assert_eq!(proxy.count_op("Decrypt"), 2, "{}", proxy.counts());
}

#[test]
fn connection_refused_fails_quickly() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    // Port 1 (tcpmux): privileged, and nothing on a test machine listens there. A
    // port from free_port() could be taken meanwhile by another test's proxy.
    let refused = std::net::TcpStream::connect(("127.0.0.1", 1)).map_err(|e| e.kind());
    assert_eq!(
        refused.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "precondition: 127.0.0.1:1 must refuse connections"
    );
    // Transport errors are retried (4 attempts, at most 1 + 2 + 4 s of backoff).
    exec_via(&sandbox, "http://127.0.0.1:1", &file, &["--timeout", "30"])
        .fails_closed(&sandbox, &file, &["ConnectionError", "refused", &key])
        .within(12.0);
}

// ---------------------------------------------------------------------------
// 5xx

#[test]
fn service_unavailable_twice_then_answered_exec_succeeds() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(
            Some("Decrypt"),
            None,
            Some(2),
            "\"action\": \"status\", \"status\": 503"
        )
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &[])
        .runs_the_command(&sandbox)
        .within(20.0);
    assert_eq!(proxy.count_op("Decrypt"), 3, "{}", proxy.counts());
}

#[test]
fn internal_failure_forever_fails_after_retries() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(
            Some("Decrypt"),
            None,
            None,
            "\"action\": \"status\", \"status\": 500"
        )
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "30"])
        .fails_closed(&sandbox, &file, &["InternalFailure", &key])
        .within(20.0);
    assert_eq!(proxy.count_op("Decrypt"), 4, "{}", proxy.counts());
}

// ---------------------------------------------------------------------------
// The KMS errors moto does not model

/// A file whose data key is wrapped by a us-west-2 key and which holds a direct
/// `kms` value under a us-east-1 key, so a rule per region hits exactly one of them.
struct TwoKinds {
    sandbox: Sandbox,
    file: PathBuf,
    data_key_arn: String,
    direct_arn: String,
}

impl TwoKinds {
    fn new() -> TwoKinds {
        let sandbox = Sandbox::new();
        let data_key_arn = create_key(WEST);
        let direct_arn = create_key(REGION);
        let file = sandbox.init("kmsenv.toml", &[&data_key_arn]);
        sandbox.set(&file, "SEALED_TOKEN", b"sealed-secret");
        sandbox.set_with(
            &file,
            &["--kms", "--key", &direct_arn],
            "DIRECT_TOKEN",
            b"direct-secret",
        );
        TwoKinds {
            sandbox,
            file,
            data_key_arn,
            direct_arn,
        }
    }

    #[track_caller]
    fn check(&self, code: &str) {
        let (sandbox, file) = (&self.sandbox, &self.file);
        let proxy = Proxy::start();
        assert_runs_through(sandbox, &proxy, file);

        // The data key's Decrypt (us-west-2) fails.
        proxy.rules(&format!(
            "[{}]",
            rule(Some("Decrypt"), Some(WEST), None, &error_action(code))
        ));
        exec_via(sandbox, &proxy.endpoint(), file, &["--timeout", "30"])
            .fails_closed(sandbox, file, &[code, &self.data_key_arn])
            .within(15.0);
        assert_eq!(
            proxy.count_region(WEST),
            1,
            "{code} is not retryable: {}",
            proxy.counts()
        );

        // The direct value's Decrypt (us-east-1) fails: stderr names the variable.
        proxy.reset();
        proxy.rules(&format!(
            "[{}]",
            rule(Some("Decrypt"), Some(REGION), None, &error_action(code))
        ));
        exec_via(sandbox, &proxy.endpoint(), file, &["--timeout", "30"])
            .fails_closed(sandbox, file, &["DIRECT_TOKEN", code, &self.direct_arn])
            .within(15.0);
        assert_eq!(
            proxy.count_region(REGION),
            1,
            "{code} is not retryable: {}",
            proxy.counts()
        );
    }
}

#[test]
fn disabled_key_fails_closed_for_data_key_and_direct_value() {
    TwoKinds::new().check(MODELLED_ERRORS[0]);
}

#[test]
fn key_in_invalid_state_fails_closed_for_data_key_and_direct_value() {
    TwoKinds::new().check(MODELLED_ERRORS[1]);
}

#[test]
fn incorrect_key_fails_closed_for_data_key_and_direct_value() {
    TwoKinds::new().check(MODELLED_ERRORS[2]);
}

#[test]
fn access_denied_fails_closed_for_data_key_and_direct_value() {
    TwoKinds::new().check(MODELLED_ERRORS[3]);
}

// ---------------------------------------------------------------------------
// Two wrapping keys in two regions

/// A file wrapped by a us-east-1 key, then a us-west-2 key.
struct TwoRegions {
    sandbox: Sandbox,
    file: PathBuf,
    east: String,
    west: String,
    proxy: Proxy,
}

impl TwoRegions {
    fn new() -> TwoRegions {
        let sandbox = Sandbox::new();
        let east = create_key(REGION);
        let west = create_key(WEST);
        let file = sandbox.init("kmsenv.toml", &[&east, &west]);
        sandbox.set(&file, "API_TOKEN", b"token-from-either-region");
        let proxy = Proxy::start();
        assert_runs_through(&sandbox, &proxy, &file);
        TwoRegions {
            sandbox,
            file,
            east,
            west,
            proxy,
        }
    }

    fn exec(&self, options: &[&str]) -> Timed {
        exec_via(&self.sandbox, &self.proxy.endpoint(), &self.file, options)
    }

    /// `-v` names the key that opened the file.
    #[track_caller]
    fn assert_opened_with(&self, out: &Output, arn: &str) {
        let expected = format!("{}: data key opened with {arn}", self.file.display());
        assert!(
            out.stderr.lines().any(|l| l == format!("kmsenv: {expected}")),
            "-v should say {expected:?}\n--- stderr ---\n{}",
            out.stderr
        );
    }
}

#[test]
fn first_region_hanging_opens_through_the_second() {
    let t = TwoRegions::new();
    t.proxy.rules(&format!(
        "[{}]",
        rule(Some("Decrypt"), Some(REGION), None, "\"action\": \"hang\"")
    ));
    let run = t
        .exec(&["-v", "--timeout", "12"])
        .runs_the_command(&t.sandbox)
        .within(20.0);
    t.assert_opened_with(&run.out, &t.west);
    assert!(t.proxy.count_region(REGION) >= 1, "{}", t.proxy.counts());
    assert_eq!(t.proxy.count_region(WEST), 1, "{}", t.proxy.counts());
}

#[test]
fn first_region_denying_opens_through_the_second() {
    let t = TwoRegions::new();
    t.proxy.rules(&format!(
        "[{}]",
        rule(
            Some("Decrypt"),
            Some(REGION),
            None,
            &error_action("AccessDeniedException")
        )
    ));
    let run = t
        .exec(&["-v", "--timeout", "30"])
        .runs_the_command(&t.sandbox)
        .within(15.0);
    t.assert_opened_with(&run.out, &t.west);
    assert_eq!(t.proxy.count_region(REGION), 1, "{}", t.proxy.counts());
    assert_eq!(t.proxy.count_region(WEST), 1, "{}", t.proxy.counts());
}

#[test]
fn healthy_first_region_opens_the_file_and_the_second_is_not_called() {
    let t = TwoRegions::new();
    let run = t.exec(&["-v"]).runs_the_command(&t.sandbox).within(15.0);
    t.assert_opened_with(&run.out, &t.east);
    assert_eq!(
        t.proxy.count_region(WEST),
        0,
        "keys are tried in order and the first success stops: {}",
        t.proxy.counts()
    );
}

#[test]
fn both_regions_failing_lists_both_keys_and_causes() {
    let t = TwoRegions::new();
    t.proxy.rules(&format!(
        "[{}, {}]",
        rule(
            Some("Decrypt"),
            Some(REGION),
            None,
            &error_action("DisabledException")
        ),
        rule(
            Some("Decrypt"),
            Some(WEST),
            None,
            &error_action("AccessDeniedException")
        )
    ));
    t.exec(&["--timeout", "30"])
        .fails_closed(
            &t.sandbox,
            &t.file,
            &[&t.east, "DisabledException", &t.west, "AccessDeniedException"],
        )
        .within(15.0);
}

// ---------------------------------------------------------------------------
// No credentials

#[test]
fn no_credentials_fails_fast_with_a_hint() {
    let sandbox = Sandbox::new();
    let (file, key) = sandbox.file_with("kmsenv.toml", SEALED_FILE);
    let proxy = Proxy::start();
    let empty_home = temp_dir();
    let start = Instant::now();
    let out = sandbox
        .kmsenv_without_aws()
        .env("HOME", empty_home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", empty_home.path().join("no-such-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            empty_home.path().join("no-such-credentials"),
        )
        .endpoint(&proxy.endpoint())
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run();
    let run = Timed {
        out,
        took: start.elapsed(),
    }
    .fails_closed(&sandbox, &file, &[&key])
    .within(15.0);
    assert!(
        run.out
            .stderr
            .lines()
            .any(|l| l.starts_with("kmsenv: hint: ") && l.contains("credentials")),
        "a hint line should mention credentials\n--- stderr ---\n{}",
        run.out.stderr
    );
    assert_eq!(
        proxy.total(),
        0,
        "no request may leave without credentials: {}",
        proxy.counts()
    );
}

// ---------------------------------------------------------------------------
// What a start-up costs in KMS calls

/// `kmsenv exec -- env -0` through the proxy: the child's environment.
fn env_via(sandbox: &Sandbox, proxy: &Proxy, file: &Path) -> BTreeMap<String, Vec<u8>> {
    sandbox
        .kmsenv()
        .endpoint(&proxy.endpoint())
        .file(file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok()
        .env0()
}

/// `kmsenv -f FILE import` of `dotenv` (on stdin), asserted to succeed.
fn import(sandbox: &Sandbox, file: &Path, dotenv: String) {
    sandbox.kmsenv().file(file).arg("import").stdin(dotenv).run().ok();
}

#[test]
fn envelope_file_of_twenty_sealed_values_costs_one_decrypt() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    let dotenv: String = (1..=20).map(|i| format!("SECRET_{i:02}=value-{i}\n")).collect();
    import(&sandbox, &file, dotenv);
    let proxy = Proxy::start();
    let env = env_via(&sandbox, &proxy, &file);
    for i in 1..=20 {
        assert_eq!(
            env.get(&format!("SECRET_{i:02}")).map(Vec::as_slice),
            Some(format!("value-{i}").as_bytes())
        );
    }
    assert_eq!(proxy.count_op("Decrypt"), 1, "{}", proxy.counts());
    assert_eq!(proxy.total(), 1, "no other KMS call: {}", proxy.counts());
}

/// `count` direct values, as `aws kms encrypt` makes them, in a file without keys.
fn direct_values_file(sandbox: &Sandbox, count: usize) -> PathBuf {
    let key = sandbox.key();
    let entries: Vec<String> = (1..=count)
        .map(|i| {
            let name = format!("TOKEN_{i}");
            let blob = encrypt(
                REGION,
                &key,
                format!("token-{i}").as_bytes(),
                &[("kmsenv:var", &name)],
            );
            format!(
                "{name} = {{ kms = {}, key = {}, context = {{ \"kmsenv:var\" = {} }} }}",
                toml_string(&blob),
                toml_string(&key),
                toml_string(&name)
            )
        })
        .collect();
    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
    let file = sandbox.path("direct.toml");
    sandbox.write(&file, &keyless_file(&entries));
    file
}

#[test]
fn five_direct_values_cost_one_decrypt_each() {
    let sandbox = Sandbox::new();
    let file = direct_values_file(&sandbox, 5);
    let proxy = Proxy::start();
    let env = env_via(&sandbox, &proxy, &file);
    for i in 1..=5 {
        assert_eq!(
            env.get(&format!("TOKEN_{i}")).map(Vec::as_slice),
            Some(format!("token-{i}").as_bytes())
        );
    }
    assert_eq!(proxy.count_op("Decrypt"), 5, "{}", proxy.counts());
    assert_eq!(proxy.total(), 5, "no other KMS call: {}", proxy.counts());
}

/// Under a request quota with room for one call, an envelope file opens; a file
/// that needs one call per secret is throttled and fails closed.
#[test]
fn a_quota_that_stops_per_secret_calls_does_not_stop_an_envelope_file() {
    let sandbox = Sandbox::new();
    let (envelope, _) = sandbox.new_file("kmsenv.toml");
    let dotenv: String = (1..=5).map(|i| format!("SECRET_{i}=value-{i}\n")).collect();
    sandbox
        .kmsenv()
        .file(&envelope)
        .arg("import")
        .stdin(dotenv)
        .run()
        .ok();
    let direct = direct_values_file(&sandbox, 5);

    let proxy = Proxy::start_with(&["--quota-rps", "0.001", "--quota-burst", "1"]);
    exec_via(&sandbox, &proxy.endpoint(), &envelope, &[])
        .runs_the_command(&sandbox)
        .within(15.0);
    assert_eq!(proxy.throttled(), 0, "{}", proxy.counts());

    // Throttling is retried until the deadline: a short one.
    proxy.config("{\"quota_rps\": 0.001, \"quota_burst\": 1}");
    exec_via(&sandbox, &proxy.endpoint(), &direct, &["--timeout", "8"])
        .fails_closed(&sandbox, &direct, &["ThrottlingException"])
        .within(13.0);
    assert!(proxy.throttled() >= 4, "{}", proxy.counts());
}

// ---------------------------------------------------------------------------
// A big file: its data key is opened while the rest of it is parsed (src/early.rs)

/// A file of `n` sealed values made with `import` under `keys` (400 make it
/// several times `early::MIN_BYTES`): (path, the values by name).
fn big_file(sandbox: &Sandbox, keys: &[&str], n: usize) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let file = sandbox.init("big.toml", keys);
    let values: BTreeMap<String, Vec<u8>> = (0..n)
        .map(|i| {
            (
                format!("BIG_{i:04}"),
                format!("value-{i}-of-a-big-file").into_bytes(),
            )
        })
        .collect();
    let dotenv: String = values
        .iter()
        .map(|(name, v)| format!("{name}={}\n", String::from_utf8_lossy(v)))
        .collect();
    import(sandbox, &file, dotenv);
    let size = std::fs::metadata(&file).expect("big file").len();
    assert!(size > 32 * 1024, "the file should be big: {size} bytes");
    (file, values)
}

/// [`big_file`] of 400 values under a new key, with `tail` appended after its
/// last line: the file and the line number `tail` starts at.
fn big_file_ending_with(sandbox: &Sandbox, tail: &str) -> (PathBuf, usize) {
    let key = sandbox.key();
    let (file, _) = big_file(sandbox, &[&key], 400);
    let text = sandbox.read(&file);
    let line = text.lines().count() + 1;
    sandbox.write(&file, &format!("{text}{tail}"));
    (file, line)
}

/// Move the second `[[kmsenv.keys]]` table of `file` to its end, after `[env]`:
/// the same TOML, key order and MAC, but a header (the text before `[env]`)
/// that names only the first key.
fn move_second_key_after_env(sandbox: &Sandbox, file: &Path) {
    let text = sandbox.read(file);
    let second = text.match_indices("[[kmsenv.keys]]").nth(1).expect("two keys").0;
    let env_at = text.find("\n[env]\n").expect("[env]") + 1;
    let moved = format!(
        "{}{}\n{}",
        &text[..second],
        &text[env_at..],
        &text[second..env_at]
    );
    sandbox.write(file, &moved);
}

/// `kmsenv OPTIONS… -f FILE exec -- env -0` through the proxy succeeds and the
/// child sees every value.
#[track_caller]
fn assert_child_gets(
    sandbox: &Sandbox,
    proxy: &Proxy,
    file: &Path,
    options: &[&str],
    values: &BTreeMap<String, Vec<u8>>,
) {
    let out = sandbox
        .kmsenv()
        .endpoint(&proxy.endpoint())
        .args(options)
        .file(file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok();
    let env = out.env0();
    for (name, value) in values {
        assert_eq!(env.get(name), Some(value), "{name} in the child's environment");
    }
}

#[test]
fn a_big_file_is_opened_with_one_decrypt_and_gives_every_value() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let (file, values) = big_file(&sandbox, &[&key], 400);
    let proxy = Proxy::start();
    assert_child_gets(&sandbox, &proxy, &file, &[], &values);
    // The data key opened while the file was parsed is the one used: not opened twice.
    assert_eq!(proxy.count_op("Decrypt"), 1, "{}", proxy.counts());
}

/// The header before `[env]` is not the whole key list: a `[[kmsenv.keys]]`
/// table may come later in the file (valid TOML, same order, same MAC). The key
/// opened from the header alone must not decide the run, whether that key fails
/// at once or hangs: the file's own key order and time shares decide.
#[test]
fn a_big_file_whose_key_list_goes_on_after_env_is_opened_through_every_key() {
    for action in [
        error_action("DisabledException"),
        "\"action\": \"hang\"".to_string(),
    ] {
        let sandbox = Sandbox::new();
        let (east, west) = (sandbox.key(), create_key(WEST));
        let (file, values) = big_file(&sandbox, &[&east, &west], 400);
        move_second_key_after_env(&sandbox, &file);
        // The header's only key (us-east-1) fails; the one after [env] works.
        let proxy = Proxy::start();
        proxy.rules(&format!(
            "[{}]",
            rule(Some("Decrypt"), Some(REGION), None, &action)
        ));
        assert_child_gets(&sandbox, &proxy, &file, &["--timeout", "10"], &values);
        assert_eq!(proxy.count_region(WEST), 1, "{action}: {}", proxy.counts());
    }
}

/// A typo must not wait for KMS: the parse ends long before a hanging
/// endpoint's deadline, and its error is what the user sees.
#[test]
fn a_big_file_that_does_not_parse_is_reported_without_waiting_for_kms() {
    let sandbox = Sandbox::new();
    let (file, line) = big_file_ending_with(&sandbox, "BROKEN = \n");
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(Some("Decrypt"), None, None, "\"action\": \"hang\"")
    ));
    exec_via(&sandbox, &proxy.endpoint(), &file, &["--timeout", "60"])
        .fails_closed(&sandbox, &file, &[&format!(":{line}:"), "invalid TOML"])
        .within(20.0);
}

#[test]
fn a_big_file_with_one_sealed_value_altered_fails_the_mac() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let (file, _) = big_file(&sandbox, &[&key], 400);
    let text = sandbox.read(&file);
    // Two sealed values exchanged between their names: the MAC, which covers
    // every name with its value, refuses the file before any value is used.
    let sealed_of = |name: &str| {
        let marker = format!("{name} = {{ sealed = \"");
        let at = text.find(&marker).expect(name) + marker.len();
        text[at..at + text[at..].find('"').expect("closing quote")].to_string()
    };
    let (a, b) = (sealed_of("BIG_0100"), sealed_of("BIG_0101"));
    let swapped = text
        .replacen(&a, "@A@", 1)
        .replacen(&b, &a, 1)
        .replacen("@A@", &b, 1);
    sandbox.write(&file, &swapped);
    let proxy = Proxy::start();
    exec_via(&sandbox, &proxy.endpoint(), &file, &[]).fails_closed(&sandbox, &file, &["MAC"]);
}

/// A hostile writer's nesting is refused on the parse thread as on the main one:
/// exit 125 naming the place, not a crashed thread.
#[test]
fn a_big_file_nested_past_the_parsers_limit_fails_closed() {
    let sandbox = Sandbox::new();
    let deep = format!("DEEP = {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let (file, line) = big_file_ending_with(&sandbox, &deep);
    let proxy = Proxy::start();
    exec_via(&sandbox, &proxy.endpoint(), &file, &[]).fails_closed(
        &sandbox,
        &file,
        &[&format!(":{line}:"), "recursion"],
    );
}

/// A usage error found in the parsed file (`--only`, `get` of a name no file
/// defines) does not wait for KMS either.
#[test]
fn a_name_missing_from_a_big_file_is_reported_without_waiting_for_kms() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let (file, _) = big_file(&sandbox, &[&key], 400);
    let proxy = Proxy::start();
    proxy.rules(&format!(
        "[{}]",
        rule(Some("Decrypt"), None, None, "\"action\": \"hang\"")
    ));
    for (command, needles) in [
        (
            &["exec", "--only", "NOT_THERE", "--", "true"][..],
            ["--only NOT_THERE", "no file defines"],
        ),
        (&["get", "NOT_THERE"][..], ["NOT_THERE", "not defined"]),
    ] {
        let start = Instant::now();
        sandbox
            .kmsenv()
            .endpoint(&proxy.endpoint())
            .args(["--timeout", "60"])
            .file(&file)
            .args(command)
            .run()
            .kmsenv_error(&needles);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(20), "{command:?} waited {took:?}");
    }
}

/// What the overlap costs, and that it happens at all: a big file that turns out
/// not to parse has already asked KMS for its data key (once; CloudTrail shows
/// it), a small one has not. 3,000 values make the parse (debug build) far
/// longer than starting the session and sending the request.
#[test]
fn a_big_file_asks_kms_while_it_is_parsed_and_a_small_one_does_not() {
    let sandbox = Sandbox::new();
    let key = sandbox.key();
    let (big, _) = big_file(&sandbox, &[&key], 3000);
    let small = sandbox.init("small.toml", &[&key]);
    import(&sandbox, &small, "SMALL=1\n".to_string());
    for (file, decrypts) in [(&big, 1), (&small, 0)] {
        // A proxy each: kmsenv exits without waiting for the early call, so its
        // request can reach the proxy after kmsenv is gone (waited for below).
        let proxy = Proxy::start();
        let text = sandbox.read(file);
        sandbox.write(file, &format!("{text}BROKEN = \n"));
        exec_via(&sandbox, &proxy.endpoint(), file, &[]).fails_closed(&sandbox, file, &["invalid TOML"]);
        assert_eq!(
            proxy.wait_count_op("Decrypt", decrypts),
            decrypts,
            "{}: {}",
            file.display(),
            proxy.counts()
        );
    }
}
