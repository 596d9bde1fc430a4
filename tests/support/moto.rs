//! The KMS the tests talk to: a real `moto_server` on a loopback port, one per test
//! binary, and raw KMS JSON calls to it (to make ciphertexts the way `aws kms
//! encrypt` would, or to check what kmsenv wrote), plus the AWS CLI pointed at it.
//! The same moto serves Secrets Manager and SSM Parameter Store: tests seed them
//! with secrets and parameters over the same JSON API ([`Moto::create_secret`],
//! [`Moto::put_parameter`], …).
//!
//! Nothing here mocks KMS: moto encrypts for real and enforces encryption context.
//! Each test creates its own keys, because moto's key material is random per run;
//! and names its own secrets and parameters ([`unique_name`]), because one moto
//! serves every test of a binary.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::http;
use super::sandbox::Sandbox;

/// Region used by every test unless it says otherwise.
pub const REGION: &str = "us-east-1";

/// How long moto_server may take to start answering.
const MOTO_START_LIMIT: Duration = Duration::from_secs(30);

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
            if matches!(http::request(port, "GET", "/", &[], ""), Ok((200, _))) {
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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A KMS-shaped error answer: HTTP status and JSON body.
#[derive(Debug)]
pub struct KmsError {
    pub status: u16,
    pub body: String,
}

/// One KMS JSON call to a server on `port` (moto, or a proxy in front of it),
/// signed for `region`. Moto takes the region from the credential scope and does
/// not check signatures.
pub fn kms_call(port: u16, region: &str, operation: &str, body: &Value) -> Result<Value, KmsError> {
    aws_json_call(port, region, "kms", &format!("TrentService.{operation}"), body)
}

/// One Secrets Manager JSON call (`secretsmanager.OPERATION`), as [`kms_call`].
pub fn secretsmanager_call(
    port: u16,
    region: &str,
    operation: &str,
    body: &Value,
) -> Result<Value, KmsError> {
    aws_json_call(
        port,
        region,
        "secretsmanager",
        &format!("secretsmanager.{operation}"),
        body,
    )
}

/// One SSM JSON call (`AmazonSSM.OPERATION`), as [`kms_call`].
pub fn ssm_call(port: u16, region: &str, operation: &str, body: &Value) -> Result<Value, KmsError> {
    aws_json_call(port, region, "ssm", &format!("AmazonSSM.{operation}"), body)
}

/// One call of an AWS JSON 1.1 API: `target` is the `X-Amz-Target` header, the
/// request is signed (in form only) for `service` in `region`.
fn aws_json_call(
    port: u16,
    region: &str,
    service: &str,
    target: &str,
    body: &Value,
) -> Result<Value, KmsError> {
    let operation = target.rsplit('.').next().unwrap_or(target);
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=00"
    );
    let headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amz-Target", target),
        ("Authorization", authorization.as_str()),
    ];
    let (status, answer) = http::request(port, "POST", "/", &headers, &body.to_string())
        .unwrap_or_else(|e| panic!("{target} to port {port} failed: {e}"));
    if status != 200 {
        return Err(KmsError { status, body: answer });
    }
    Ok(serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{operation} answered no JSON ({e}): {answer}")))
}

/// The account moto answers as (its default), in every ARN it makes.
pub const ACCOUNT: &str = "123456789012";

/// `prefix` followed by fresh random hex: a secret or parameter name no other
/// test of this binary uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", super::random::random_hex(6))
}

/// A secret as Secrets Manager names it after `CreateSecret`.
#[derive(Clone, Debug)]
pub struct Secret {
    /// Full ARN, with the random six-character suffix.
    pub arn: String,
    pub name: String,
    /// The version `CreateSecret` made (staged AWSCURRENT).
    pub version_id: String,
}

/// A secret's value: text (`SecretString`) or bytes (`SecretBinary`).
#[derive(Clone, Copy, Debug)]
pub enum SecretValue<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

impl SecretValue<'_> {
    fn add_to(self, body: &mut Value) {
        match self {
            SecretValue::Text(text) => body["SecretString"] = Value::from(text),
            SecretValue::Binary(bytes) => body["SecretBinary"] = Value::from(STANDARD.encode(bytes)),
        }
    }
}

/// The string `field` of a KMS answer.
#[track_caller]
fn string_field(answer: &Value, field: &str) -> String {
    answer[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in the KMS answer: {answer}"))
        .to_string()
}

/// An encryption context as KMS takes it.
pub fn context_json(context: &[(&str, &str)]) -> Value {
    Value::Object(
        context
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect(),
    )
}

/// The body of `Encrypt` of `plaintext` under `key` with `context`.
pub fn encrypt_request(key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> Value {
    json!({
        "KeyId": key,
        "Plaintext": STANDARD.encode(plaintext),
        "EncryptionContext": context_json(context),
    })
}

impl Moto {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One KMS JSON call to moto.
    pub fn call(&self, region: &str, operation: &str, body: &Value) -> Result<Value, KmsError> {
        kms_call(self.port, region, operation, body)
    }

    /// Creates a symmetric key and returns its ARN.
    pub fn create_key(&self, region: &str) -> String {
        let answer = self
            .call(region, "CreateKey", &json!({}))
            .unwrap_or_else(|e| panic!("CreateKey: {e:?}"));
        string_field(&answer["KeyMetadata"], "Arn")
    }

    /// `Encrypt`, returning the base64 `CiphertextBlob`, as `aws kms encrypt --query
    /// CiphertextBlob --output text` prints it.
    pub fn encrypt(&self, region: &str, key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> String {
        let answer = self
            .call(region, "Encrypt", &encrypt_request(key, plaintext, context))
            .unwrap_or_else(|e| panic!("Encrypt: {e:?}"));
        string_field(&answer, "CiphertextBlob")
    }

    /// `Decrypt` of a base64 blob under `context`; the plaintext, or KMS's error.
    pub fn decrypt(&self, region: &str, blob: &str, context: &[(&str, &str)]) -> Result<Vec<u8>, KmsError> {
        let body = json!({"CiphertextBlob": blob, "EncryptionContext": context_json(context)});
        let answer = self.call(region, "Decrypt", &body)?;
        Ok(STANDARD
            .decode(string_field(&answer, "Plaintext"))
            .expect("Plaintext is base64"))
    }
}

impl Moto {
    /// `CreateSecret` of `value` under `name` in `region`.
    pub fn create_secret(&self, region: &str, name: &str, value: SecretValue) -> Secret {
        let mut body = json!({"Name": name});
        value.add_to(&mut body);
        let answer = secretsmanager_call(self.port, region, "CreateSecret", &body)
            .unwrap_or_else(|e| panic!("CreateSecret {name}: {e:?}"));
        Secret {
            arn: string_field(&answer, "ARN"),
            name: string_field(&answer, "Name"),
            version_id: string_field(&answer, "VersionId"),
        }
    }

    /// `PutSecretValue`: a new version of the secret `id` (name or ARN) staged
    /// `stages` (none given: AWSCURRENT, the previous current becoming AWSPREVIOUS,
    /// as a rotation does). Returns its version id.
    pub fn put_secret_value(&self, region: &str, id: &str, value: SecretValue, stages: &[&str]) -> String {
        let mut body = json!({"SecretId": id});
        value.add_to(&mut body);
        if !stages.is_empty() {
            body["VersionStages"] = json!(stages);
        }
        let answer = secretsmanager_call(self.port, region, "PutSecretValue", &body)
            .unwrap_or_else(|e| panic!("PutSecretValue {id}: {e:?}"));
        string_field(&answer, "VersionId")
    }

    /// `PutParameter` (`kind`: SecureString, String or StringList), overwriting an
    /// existing one (a new version). Returns the version.
    pub fn put_parameter(&self, region: &str, name: &str, value: &str, kind: &str) -> u64 {
        let body = json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true});
        let answer = ssm_call(self.port, region, "PutParameter", &body)
            .unwrap_or_else(|e| panic!("PutParameter {name}: {e:?}"));
        answer["Version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no Version in the PutParameter answer: {answer}"))
    }

    /// `LabelParameterVersion`: `labels` on version `version` of `name`.
    pub fn label_parameter(&self, region: &str, name: &str, version: u64, labels: &[&str]) {
        let body = json!({"Name": name, "ParameterVersion": version, "Labels": labels});
        let answer = ssm_call(self.port, region, "LabelParameterVersion", &body)
            .unwrap_or_else(|e| panic!("LabelParameterVersion {name}: {e:?}"));
        assert_eq!(answer["InvalidLabels"], json!([]), "labels refused: {answer}");
    }
}

/// The ARN of parameter `name` in moto's account, as SSM writes it (the name's
/// leading `/` is not doubled).
pub fn parameter_arn(region: &str, name: &str) -> String {
    format!(
        "arn:aws:ssm:{region}:{ACCOUNT}:parameter/{}",
        name.strip_prefix('/').unwrap_or(name)
    )
}

/// Shortcut: a new key in moto.
pub fn create_key(region: &str) -> String {
    moto().create_key(region)
}

/// Shortcut: `Encrypt` through moto.
pub fn encrypt(region: &str, key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> String {
    moto().encrypt(region, key, plaintext, context)
}

// ---------------------------------------------------------------------------
// The AWS CLI against moto (tests that paste its output into a file, as users do)

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
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
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
