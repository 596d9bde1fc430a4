//! What every AWS call of a run shares: one SDK configuration (credentials,
//! region, retries, timeouts under the run's deadline), the HTTP clients, and
//! errors reduced to their AWS error code. KMS (`kms.rs`) and S3 (`s3.rs`) build
//! their clients from it.
//!
//! Errors keep the AWS error code, read from the error metadata because the SDK
//! does not model every code as a variant.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_config::identity::IdentityCache;
use aws_config::meta::region::ProvideRegion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_kms::config::{ConfigBag, Intercept, RuntimeComponents, SharedHttpClient};
use aws_sdk_kms::error::BoxError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpConnector};
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::context::Error as AttemptError;
use aws_smithy_types::body::SdkBody;

use crate::error::Error;

/// A failed AWS call: the AWS error code (or our name for a transport failure)
/// and AWS's message. Never holds plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub code: String,
    pub message: String,
}

/// The most of an AWS error code and message kmsenv keeps: they reach the
/// one-line cause on stderr, and an endpoint (a hostile one too) chooses them —
/// a Secrets Manager answer may be megabytes.
const MAX_CODE_CHARS: usize = 128;
const MAX_MESSAGE_CHARS: usize = 1024;

impl AwsError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError {
            code: capped(code.into(), MAX_CODE_CHARS),
            message: capped(message.into(), MAX_MESSAGE_CHARS),
        }
    }

    /// What a user can do about this code, when `service` answered it (or failed to).
    pub fn hint(&self, service: Service) -> Option<&'static str> {
        Some(match (self.code.as_str(), service) {
            // rustls's words for a certificate no trusted root verifies.
            ("ConnectionError", _) if self.message.contains("invalid peer certificate") => {
                "the endpoint's TLS certificate does not verify against the roots this machine trusts \
                 (the system store, or SSL_CERT_FILE / SSL_CERT_DIR when set): add its CA there, or check the endpoint URL"
            }
            ("AccessDeniedException", Service::SecretsManager) => {
                "the caller may not read this secret: grant secretsmanager:BatchGetSecretValue (on *) and \
                 secretsmanager:GetSecretValue on the secret, and kms:Decrypt on its key (kms:ViaService)"
            }
            ("AccessDeniedException", Service::Ssm) => {
                "the caller may not read this parameter: grant ssm:GetParameters on it, and kms:Decrypt on its key (kms:ViaService)"
            }
            ("ResourceNotFoundException", Service::SecretsManager) => {
                "no such secret (or version) in this account and region: check the ARN; `kmsenv set --secret` writes the full one"
            }
            ("DecryptionFailure", Service::SecretsManager) => {
                "Secrets Manager could not decrypt the secret with its KMS key: check the key's policy and that the key is enabled"
            }
            ("InvalidParameters", Service::Ssm) => {
                "check the parameter's name, version or label, and that the caller may ssm:GetParameters it"
            }
            ("MissingFromAnswer" | "InvalidResponse", _) => {
                "the answer was not for exactly what was asked: is the endpoint (AWS_ENDPOINT_URL_*) really AWS?"
            }
            ("ThrottlingException", Service::SecretsManager | Service::Ssm) => {
                "the request quota was exceeded until the deadline: raise --timeout or the quota"
            }
            ("ConnectionError", Service::SecretsManager) => {
                "cannot reach Secrets Manager: check the network, proxy settings and AWS_ENDPOINT_URL_SECRETS_MANAGER"
            }
            ("ConnectionError", Service::Ssm) => {
                "cannot reach Parameter Store: check the network, proxy settings and AWS_ENDPOINT_URL_SSM"
            }
            ("ConnectionError", Service::S3) => {
                "cannot reach S3: check the network, proxy settings and AWS_ENDPOINT_URL_S3"
            }
            ("TimeoutError", Service::S3) => {
                "no answer from S3 in time: check the network, the endpoint and --timeout"
            }
            (code, _) => match code {
                "AccessDeniedException" => {
                    "the caller's role may not use this key with this encryption context: grant it in IAM or the key policy"
                }
                "InvalidCiphertextException" => {
                    "the ciphertext does not belong to this key and encryption context (copied from another file or variable?)"
                }
                "IncorrectKeyException" => {
                    "the ciphertext was encrypted under another KMS key than the one named"
                }
                "DisabledException" | "KMSInvalidStateException" => {
                    "the key is disabled or pending deletion: enable it in KMS, or use another wrapping key"
                }
                "NotFoundException" => "no such key in this account and region: check the ARN and --region",
                "ThrottlingException" => {
                    "the request quota was exceeded until the deadline: raise --timeout or the quota, or seal direct kms values (one KMS call per file)"
                }
                "TimeoutError" => "no answer in time: check the network, the endpoint and --timeout",
                "ConnectionError" => {
                    "cannot reach KMS: check the network, proxy settings and the endpoint URL"
                }
                "CredentialsError" => {
                    "no usable AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with a role"
                }
                "NoRegion" => "set --region or AWS_REGION, or use full key ARNs",
                "NoSuchKey" => "no object at this key: check the s3://BUCKET/KEY URL",
                "NoSuchBucket" => "no such bucket: check the s3://BUCKET/KEY URL",
                "AccessDenied" => {
                    "the caller may not s3:GetObject this object (and, for an SSE-KMS object, kms:Decrypt its bucket key)"
                }
                _ => return None,
            },
        })
    }

    /// The one way a failed AWS call becomes an [`Error`]: `PLACE: CALL failed:
    /// CODE: message`, with what to do about it. The message is AWS's text,
    /// escaped when it is printed (`error::report`).
    pub fn into_error(self, place: impl fmt::Display, call: impl fmt::Display, service: Service) -> Error {
        let hint = self.hint(service);
        let err = Error::kms(format!("{place}: {call} failed: {self}"));
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    }
}

/// Which AWS service a call went to: hints differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Kms,
    S3,
    SecretsManager,
    Ssm,
}

/// Reads the AWS error code out of one service's modelled operation errors
/// (the SDK erases their types in an interceptor).
pub type CodeReader = fn(&AttemptError) -> Option<AwsError>;

impl std::error::Error for AwsError {}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// Settings from the command line that shape the AWS configuration.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// `-v`: say which TLS roots are used.
    pub verbose: bool,
}

/// `text` cut to `max` characters, marked with `…` when cut.
fn capped(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// The HTTPS client, built on first use. Building it reads the certificate
/// store; a run against a local `http://` KMS with credentials from the
/// environment never needs it, so it never pays for it.
#[derive(Debug, Clone, Default)]
struct LazyHttps {
    client: Arc<OnceLock<SharedHttpClient>>,
    verbose: bool,
}

impl HttpClient for LazyHttps {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.client
            .get_or_init(|| match crate::tls::check_env() {
                Ok(()) => {
                    SharedHttpClient::new(StagedHttps::new(crate::tls::Trust::from_env(), self.verbose))
                }
                Err(why) => SharedHttpClient::new(Refuse(why)),
            })
            .http_connector(settings, components)
    }
}

/// HTTPS whose trusted roots are read in stages (`tls.rs`): a request is sent
/// with the current stage's roots, and when the server's certificate does not
/// verify against them, sent again with the next stage's, which from then on
/// serve every request. Only a certificate error moves on (the request was not
/// sent: the handshake failed); a request that could not be sent again starts
/// at the last stage. The Amazon Trust Services stage serves only requests to
/// AWS's own hosts, and is passed over when the store holds none of its roots.
#[derive(Debug, Clone)]
struct StagedHttps {
    shared: Arc<Stages>,
}

#[derive(Debug)]
struct Stages {
    trust: crate::tls::Trust,
    /// The client of each stage, built when the stage is first used (`None`: a
    /// stage with no roots to try, passed over).
    clients: Vec<OnceLock<Option<SharedHttpClient>>>,
    /// The stage requests start at.
    current: std::sync::atomic::AtomicUsize,
    verbose: bool,
}

impl StagedHttps {
    fn new(trust: crate::tls::Trust, verbose: bool) -> StagedHttps {
        let clients = trust.stages().iter().map(|_| OnceLock::new()).collect();
        StagedHttps {
            shared: Arc::new(Stages {
                trust,
                clients,
                current: Default::default(),
                verbose,
            }),
        }
    }
}

impl Stages {
    fn connector(
        &self,
        stage: usize,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> Option<SharedHttpConnector> {
        self.clients[stage]
            .get_or_init(|| {
                let context = self.trust.stages()[stage].context(self.verbose)?;
                Some(connector_client(Some(context)))
            })
            .as_ref()
            .map(|client| client.http_connector(settings, components))
    }
}

impl HttpClient for StagedHttps {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(StagedConnector {
            shared: self.shared.clone(),
            settings: settings.clone(),
            components: components.clone(),
        })
    }
}

#[derive(Debug)]
struct StagedConnector {
    shared: Arc<Stages>,
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
}

impl aws_smithy_runtime_api::client::http::HttpConnector for StagedConnector {
    fn call(
        &self,
        request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        use std::sync::atomic::Ordering;
        let shared = self.shared.clone();
        let settings = self.settings.clone();
        let components = self.components.clone();
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::new(async move {
            let host = crate::tls::host_of(request.uri());
            let mut stage = shared
                .current
                .load(Ordering::Acquire)
                .max(shared.trust.first_stage(host));
            let mut request = request;
            loop {
                let mut again = None;
                if stage + 1 < shared.clients.len() {
                    again = request.try_clone();
                    if again.is_none() {
                        // A body that cannot be sent twice (none of KMS's): the
                        // whole store at once, so no root it trusts is left untried.
                        stage = shared.clients.len() - 1;
                    }
                }
                let Some(connector) = shared.connector(stage, &settings, &components) else {
                    // Only an Amazon stage is passed over, and one is never last.
                    stage += 1;
                    continue;
                };
                let result = connector.call(request).await;
                match (result, again) {
                    (Err(e), Some(next)) if crate::tls::is_certificate_error(&e) => {
                        stage += 1;
                        shared.current.fetch_max(stage, Ordering::AcqRel);
                        request = next;
                    }
                    // No stage left that trusts more: retrying cannot help (the
                    // SDK retries an I/O error), so it is final.
                    (Err(e), None) if crate::tls::is_certificate_error(&e) => {
                        return Err(aws_smithy_runtime_api::client::result::ConnectorError::user(
                            e.into(),
                        ));
                    }
                    (result, _) => return result,
                }
            }
        })
    }
}

/// The HTTPS client when the TLS settings are unusable (an `SSL_CERT_FILE`
/// without certificates): every request fails with the reason, so a run that
/// never makes an HTTPS request (a local `http://` KMS) is not refused for it.
#[derive(Debug, Clone)]
struct Refuse(String);

impl HttpClient for Refuse {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl aws_smithy_runtime_api::client::http::HttpConnector for Refuse {
    fn call(
        &self,
        _: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::ready(Err(
            aws_smithy_runtime_api::client::result::ConnectorError::user(self.0.clone().into()),
        ))
    }
}

/// An HTTP client without TLS that honours `HTTP_PROXY`/`NO_PROXY`.
pub fn http_client() -> SharedHttpClient {
    connector_client(None)
}

/// An HTTP client that honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, with TLS
/// (rustls on ring) trusting `tls`'s roots, or without TLS.
fn connector_client(tls: Option<aws_smithy_http_client::tls::TlsContext>) -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut b = aws_smithy_http_client::Connector::builder();
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        let b = b.proxy_config(aws_smithy_http_client::proxy::ProxyConfig::from_env());
        match &tls {
            Some(context) => b
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .tls_context(context.clone())
                .build(),
            None => b.build_http(),
        }
    })
}

/// The endpoint set in the environment for `service` (`KMS`, `S3`): the SDK's
/// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`.
pub fn env_endpoint(service: &str) -> Option<String> {
    [
        format!("AWS_ENDPOINT_URL_{service}"),
        "AWS_ENDPOINT_URL".to_string(),
    ]
    .iter()
    .filter_map(|v| std::env::var(v).ok())
    .find(|u| !u.is_empty())
}

/// The loaded AWS configuration of one run, and its deadline. Cheap to clone:
/// the SDK configuration is shared.
#[derive(Clone)]
pub struct Aws {
    config: SdkConfig,
    /// The region the user configured (`--region`, `AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, the profile's `region`), if any.
    user_region: Option<String>,
    deadline: Instant,
}

impl Aws {
    /// Load the AWS configuration (credentials are resolved lazily, on first call).
    ///
    /// The SDK's own region (for STS and other credential sources) is the
    /// user's, else `fallback_region` (the files' first key ARN region), else
    /// us-east-1. kmsenv never asks instance metadata for a region: off EC2 that
    /// costs seconds of start-up, and a key ARN names its region anyway.
    pub async fn load(opts: &AwsOptions, deadline: Instant, fallback_region: Option<String>) -> Aws {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let http = LazyHttps {
            verbose: opts.verbose,
            ..LazyHttps::default()
        };
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(remaining.min(Duration::from_secs(5)))
            .read_timeout(remaining.min(Duration::from_secs(10)))
            .operation_attempt_timeout(remaining.min(Duration::from_secs(10)))
            .operation_timeout(remaining)
            .build();
        let user_region = match &opts.region {
            Some(r) => Some(r.clone()),
            None => configured_region(opts.profile.as_deref()).await,
        }
        .filter(|r| !r.is_empty());
        let region = user_region
            .clone()
            .or(fallback_region)
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(retry_config(false))
            .identity_cache(
                IdentityCache::lazy()
                    .load_timeout(remaining.min(Duration::from_secs(10)))
                    .build(),
            )
            .region(Region::new(region));
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        Aws {
            config: loader.load().await,
            user_region,
            deadline,
        }
    }

    /// The shared SDK configuration that service clients are built from.
    pub fn config(&self) -> &SdkConfig {
        &self.config
    }

    /// The region the user configured, if any (not a fallback).
    pub fn user_region(&self) -> Option<&str> {
        self.user_region.as_deref()
    }

    /// A client without TLS when `endpoint` is `http://` (a local KMS or S3), so
    /// no certificate store is loaded for nothing; `None` means the shared one.
    pub fn plain_http_for(&self, endpoint: Option<&str>) -> Option<SharedHttpClient> {
        endpoint
            .filter(|u| u.starts_with("http://"))
            .map(|_| http_client())
    }

    /// Run one call under the deadline (or `by`, if sooner). `call` gets a
    /// [`LastAttempt`] to attach to its request, so that when the deadline cuts
    /// retries short we report what AWS last said, not just "timeout"; `codes`
    /// reads the service's error codes for it.
    pub async fn timed<T, F, Fut>(
        &self,
        by: Option<Instant>,
        codes: CodeReader,
        call: F,
    ) -> Result<T, AwsError>
    where
        F: FnOnce(LastAttempt) -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        let last = LastAttempt::new(codes);
        let deadline = by.map_or(self.deadline, |b| b.min(self.deadline));
        match tokio::time::timeout_at(deadline.into(), call(last.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(last.explain(e)),
            Err(_) => Err(last.explain(AwsError::new(
                "TimeoutError",
                "no answer before the deadline (--timeout)",
            ))),
        }
    }
}

/// The region from the environment (`AWS_REGION`, else `AWS_DEFAULT_REGION`;
/// an empty one is none) or the profile (`--profile`, else `AWS_PROFILE`, else
/// `default`): the SDK's chain without instance metadata.
async fn configured_region(profile: Option<&str>) -> Option<String> {
    let from_env = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|r| !r.is_empty());
    if from_env.is_some() {
        return from_env;
    }
    let mut from_profile = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(p) = profile {
        from_profile = from_profile.profile_name(p);
    }
    from_profile.build().region().await.map(|r| r.to_string())
}

/// The most kmsenv reads of one KMS answer. The largest real one (a Decrypt of a
/// 4096-byte plaintext, or an Encrypt's 6144-byte blob, in base64 JSON) is under
/// 10 KiB; a hostile endpoint could otherwise make us hold gigabytes.
pub const MAX_KMS_ANSWER_BYTES: u64 = 64 * 1024;

/// Refuses an answer larger than its cap (for KMS, [`MAX_KMS_ANSWER_BYTES`])
/// before it is in memory. The SDK reads a whole answer into one buffer after
/// `modify_before_deserialization`, so the body is wrapped here: it fails at once
/// when the declared Content-Length is over the cap, and as soon as the bytes
/// read pass it when the length is unknown (chunked) or lies. The failure is a
/// response error: `InvalidResponse`, with the cap in the message.
#[derive(Debug, Clone, Copy)]
pub struct AnswerCap(pub u64);

impl AnswerCap {
    pub const KMS: AnswerCap = AnswerCap(MAX_KMS_ANSWER_BYTES);
}

impl Intercept for AnswerCap {
    fn name(&self) -> &'static str {
        "kmsenv::AnswerCap"
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = ctx.response_mut();
        let declared_over = response
            .headers()
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > self.0);
        let inner = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(CappedBody {
            inner,
            read: 0,
            max: self.0,
            over: declared_over,
        });
        Ok(())
    }
}

/// An answer body that errs once more than `max` bytes came (or were
/// announced), so the SDK stops reading it.
struct CappedBody {
    inner: SdkBody,
    read: u64,
    max: u64,
    over: bool,
}

/// Why an answer was dropped unread: it was over this many bytes.
#[derive(Debug)]
struct AnswerTooLarge(u64);

impl fmt::Display for AnswerTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the answer was larger than {} bytes, the most kmsenv reads from this call (not AWS, or a broken proxy?)",
            self.0
        )
    }
}

impl std::error::Error for AnswerTooLarge {}

impl http_body::Body for CappedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.over {
            return Poll::Ready(Some(Err(Box::new(AnswerTooLarge(this.max)))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.read = this.read.saturating_add(data.len() as u64);
            if this.read > this.max {
                this.over = true;
                return Poll::Ready(Some(Err(Box::new(AnswerTooLarge(this.max)))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        !self.over && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Never a hint above the cap: nothing may size a buffer from it.
        let hint = self.inner.size_hint();
        match hint.upper() {
            Some(n) if n <= self.max && !self.over => hint,
            _ => http_body::SizeHint::default(),
        }
    }
}

/// Attempts in all for a failure other than throttling (5xx, a reset, a refused
/// connection): enough to ride out a blip, few enough that a wrong endpoint fails
/// in seconds rather than at the deadline.
pub const MAX_ATTEMPTS: u32 = 4;

/// The longest wait between two attempts. The SDK waits a random time up to
/// 1 s, 2 s, 4 s, … (full jitter), capped here: under a quota shared by a fleet,
/// a waiting process that comes back within seconds takes the capacity the others
/// free (a fleet storm of 200 processes of 20 direct values started 199 with a 5 s
/// cap, 187 with the SDK's 20 s).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The retry partition of every client kmsenv makes. The SDK's default one
/// holds a token bucket per process (500 tokens, 5 spent by each throttled
/// retry, none given back while every answer is throttled): after about 100
/// throttled retries every call would give up at once, long before the
/// deadline, which is what bounds retries here. So the bucket is unlimited.
pub fn retry_partition() -> aws_sdk_kms::config::retry::RetryPartition {
    use aws_sdk_kms::config::retry::{RetryPartition, TokenBucket};
    static PARTITION: OnceLock<RetryPartition> = OnceLock::new();
    PARTITION
        .get_or_init(|| {
            RetryPartition::custom("kmsenv")
                .token_bucket(TokenBucket::unlimited())
                .build()
        })
        .clone()
}

/// The SDK's standard retry mode; `throttled`: the last attempt was throttled,
/// and throttling is retried until the deadline (`--timeout`, which cuts the
/// call) instead of for [`MAX_ATTEMPTS`]. A fleet starting at once shares one
/// KMS request quota: with a fixed number of attempts most of it failed closed
/// after using the quota for nothing (6 of 200 processes of 20 direct values
/// started; until the deadline, 200). Adaptive mode (a client-side rate limiter) was
/// measured too and started fewer (74 of 200): each new process learns the rate
/// from nothing.
fn retry_config(throttled: bool) -> RetryConfig {
    let attempts = if throttled { u32::MAX } else { MAX_ATTEMPTS };
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_max_backoff(MAX_BACKOFF)
}

/// The error codes AWS answers when a request quota is exceeded (KMS:
/// `ThrottlingException`; S3: `SlowDown`).
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "SlowDown"
    )
}

/// Remembers why the last attempt of one call failed, as the SDK retries it, and
/// sets the call's retry budget from it ([`retry_config`]): the SDK reads the
/// retry configuration after this interceptor, before it decides on a retry.
#[derive(Debug, Clone)]
pub struct LastAttempt {
    last: Arc<Mutex<Option<AwsError>>>,
    codes: CodeReader,
}

impl LastAttempt {
    fn new(codes: CodeReader) -> LastAttempt {
        LastAttempt {
            last: Arc::default(),
            codes,
        }
    }

    /// A timeout after failed attempts is reported as the attempts' failure.
    pub fn explain(&self, err: AwsError) -> AwsError {
        if err.code != "TimeoutError" {
            return err;
        }
        match self.last.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(last) if last.code != "TimeoutError" => AwsError::new(
                last.code,
                format!(
                    "{} (still failing when the deadline cut retries short; see --timeout)",
                    last.message
                ),
            ),
            _ => err,
        }
    }
}

impl Intercept for LastAttempt {
    fn name(&self) -> &'static str {
        "kmsenv::LastAttempt"
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(e)) = ctx.output_or_error() {
            let summary = match e.as_operation_error() {
                Some(op) => (self.codes)(op).unwrap_or_else(|| AwsError::new("UnknownError", op.to_string())),
                None if e.is_timeout_error() => AwsError::new("TimeoutError", "attempt timed out"),
                None => AwsError::new("ConnectionError", causes(e).pop().unwrap_or_default()),
            };
            cfg.interceptor_state()
                .store_put(retry_config(is_throttling(&summary.code)));
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
        }
        Ok(())
    }
}

pub fn code_of<T>(op: &AttemptError) -> Option<AwsError>
where
    T: ProvideErrorMetadata + std::error::Error + fmt::Debug + Send + Sync + 'static,
{
    let e = op.downcast_ref::<T>()?;
    Some(AwsError::new(e.code()?, e.message().unwrap_or_default()))
}

/// Turn an SDK error into the AWS error code and message.
pub fn classify<E, R>(err: &SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    if let Some(code) = err.code() {
        return AwsError::new(code, err.message().unwrap_or_default());
    }
    let chain = causes(err);
    let cause = chain.last().cloned().unwrap_or_default();
    if chain
        .iter()
        .any(|c| c.to_ascii_lowercase().contains("credential"))
    {
        let cause = if chain.iter().any(|c| c.contains("no credentials found in chain")) {
            "no credentials in the environment, profiles, web identity, container or instance metadata".into()
        } else {
            cause
        };
        return AwsError::new("CredentialsError", cause);
    }
    match err {
        SdkError::TimeoutError(_) => AwsError::new("TimeoutError", "no answer within the time limit"),
        SdkError::DispatchFailure(d) if d.is_timeout() => AwsError::new("TimeoutError", cause),
        SdkError::DispatchFailure(_) => AwsError::new("ConnectionError", cause),
        // Never the raw answer: the body of one we could not read may be a
        // Decrypt result, and it must not reach a message.
        SdkError::ResponseError(_) => AwsError::new("InvalidResponse", cause),
        _ => AwsError::new("UnknownError", cause),
    }
}

/// The first line of each error in the `source()` chain, without repeats.
fn causes(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default().trim().to_string();
        if !line.is_empty() && out.last() != Some(&line) {
            out.push(line);
        }
        cur = e.source();
    }
    out
}

/// One service client per region, built on first use and shared: every
/// service kmsenv calls (KMS, Secrets Manager, Parameter Store) needs this.
pub struct RegionalClients<C> {
    clients: Mutex<std::collections::HashMap<String, C>>,
}

impl<C> Default for RegionalClients<C> {
    fn default() -> Self {
        RegionalClients {
            clients: Mutex::default(),
        }
    }
}

impl<C: Clone> RegionalClients<C> {
    /// The client for `region`, made by `make` the first time.
    pub fn get(&self, region: &str, make: impl FnOnce(&str) -> C) -> C {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| make(region))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint chooses the code and message; what reaches stderr is bounded.
    #[test]
    fn an_endless_code_or_message_is_cut_with_a_mark() {
        let e = AwsError::new("C".repeat(10_000), "é".repeat(1_000_000));
        assert_eq!(e.code.chars().count(), MAX_CODE_CHARS + 1);
        assert_eq!(e.message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(e.message.ends_with('…') && e.code.ends_with('…'));
        let short = AwsError::new("AccessDeniedException", "not allowed");
        assert_eq!(
            (short.code.as_str(), short.message.as_str()),
            ("AccessDeniedException", "not allowed")
        );
    }
}
