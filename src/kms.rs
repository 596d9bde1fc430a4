//! KMS: the few operations kmsenv needs, behind the [`KeyService`] trait, and
//! their AWS implementation with deadlines, retries and error codes kept.
//!
//! One SDK configuration (credentials, retries, timeouts) is loaded once and
//! shared; one KMS client is built per region on first use, the region coming
//! from the key ARN (DESIGN §5). Every call runs under the run's one deadline.
//! Errors keep the AWS error code, read from the error metadata because the SDK
//! does not model every code as a variant.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_kms::config::{ConfigBag, Intercept, RuntimeComponents, SharedHttpClient};
use aws_sdk_kms::error::BoxError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::encrypt::EncryptError;
use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyError;
use aws_sdk_kms::operation::re_encrypt::ReEncryptError;
use aws_sdk_kms::primitives::Blob;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpConnector};
use aws_smithy_runtime_api::client::interceptors::context::Error as AttemptError;

use crate::secret::Secret;

/// An encryption context: sorted, so messages and MACs are stable.
pub type Context = BTreeMap<String, String>;

/// A KMS failure: the AWS error code (or our name for a transport failure) and
/// AWS's message. Never holds plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    pub code: String,
    pub message: String,
}

impl KmsError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        KmsError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// What a user can do about this code.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self.code.as_str() {
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
                "KMS request quota exceeded after retries: try again, or raise the quota"
            }
            "TimeoutError" => "no answer in time: check the network, the endpoint and --timeout",
            "ConnectionError" => "cannot reach KMS: check the network, proxy settings and the endpoint URL",
            "CredentialsError" => {
                "no usable AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with a role"
            }
            "NoRegion" => "set --region or AWS_REGION, or use full key ARNs",
            _ => return None,
        })
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// A data key as KMS made it: plaintext, its wrapping, and the key's full ARN.
#[derive(Debug)]
pub struct GeneratedKey {
    pub plaintext: Secret,
    pub blob: Vec<u8>,
    pub key_arn: String,
}

/// The KMS operations kmsenv uses. The AWS implementation is [`AwsKms`]; unit
/// tests use an in-memory one.
pub trait KeyService {
    /// A new 256-bit data key under `key`.
    fn generate_data_key(
        &self,
        key: &str,
        ctx: &Context,
    ) -> impl Future<Output = Result<GeneratedKey, KmsError>>;
    /// Encrypt `plaintext` under `key`; returns the blob and the key's ARN.
    fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        ctx: &Context,
    ) -> impl Future<Output = Result<(Vec<u8>, String), KmsError>>;
    /// Decrypt `blob`, pinning `key` when known, giving up at `by` if it comes
    /// before the run's deadline (a key's share of the time, in failover).
    fn decrypt(
        &self,
        key: Option<&str>,
        blob: &[u8],
        ctx: &Context,
        by: Option<Instant>,
    ) -> impl Future<Output = Result<Secret, KmsError>>;
    /// Re-encrypt `blob` from its key and context to `dest_key` with the same
    /// context, without the plaintext leaving KMS; returns the blob and the ARN.
    fn re_encrypt(
        &self,
        blob: &[u8],
        source_key: Option<&str>,
        ctx: &Context,
        dest_key: &str,
    ) -> impl Future<Output = Result<(Vec<u8>, String), KmsError>>;
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

/// The HTTPS client, built on first use. Building it loads the system's
/// certificate store; a run against a local `http://` KMS with credentials from
/// the environment never needs it, so it never pays for it.
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
            .get_or_init(|| http_client(true, self.verbose))
            .http_connector(settings, components)
    }
}

/// An HTTP client that honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, with TLS
/// (rustls on ring, system roots; `SSL_CERT_FILE` works) or without it.
fn http_client(tls: bool, verbose: bool) -> SharedHttpClient {
    let roots = crate::tls::roots();
    if tls && roots == crate::tls::Roots::Embedded && verbose {
        eprintln!(
            "kmsenv: TLS: no system certificate store found; using the {} embedded Mozilla roots",
            crate::tls::embedded_count()
        );
    }
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut b = aws_smithy_http_client::Connector::builder();
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        let b = b.proxy_config(aws_smithy_http_client::proxy::ProxyConfig::from_env());
        if tls {
            b.tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(crate::tls::context(roots))
            .build()
        } else {
            b.build_http()
        }
    })
}

/// The KMS endpoint set for this run, if any: `--endpoint-url`, else the SDK's
/// `AWS_ENDPOINT_URL_KMS`, else `AWS_ENDPOINT_URL`.
fn kms_endpoint(opts: &AwsOptions) -> Option<String> {
    opts.endpoint_url.clone().or_else(|| {
        ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|u| !u.is_empty())
    })
}

/// The region named by a key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`), if it is one.
pub fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

/// KMS through the AWS SDK: one shared configuration, one client per region.
pub struct AwsKms {
    config: SdkConfig,
    endpoint_url: Option<String>,
    /// For an `http://` KMS endpoint (a local KMS): a client without TLS, so no
    /// certificate store is loaded for nothing.
    plain_http: Option<SharedHttpClient>,
    clients: Mutex<HashMap<String, Client>>,
    deadline: Instant,
}

impl AwsKms {
    /// Load the AWS configuration (credentials are resolved lazily, on first call).
    ///
    /// `default_region` is used when neither `--region` nor the environment names
    /// one; passing the first key ARN's region here keeps the SDK from asking
    /// IMDS for a region on machines that are not EC2.
    pub async fn load(opts: &AwsOptions, deadline: Instant, default_region: Option<String>) -> AwsKms {
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
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .identity_cache(
                IdentityCache::lazy()
                    .load_timeout(remaining.min(Duration::from_secs(10)))
                    .build(),
            );
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        } else if let (false, None, Some(r)) = (env_region, &opts.profile, default_region) {
            loader = loader.region(Region::new(r));
        }
        let config = loader.load().await;
        AwsKms {
            config,
            endpoint_url: opts.endpoint_url.clone(),
            plain_http: kms_endpoint(opts)
                .filter(|u| u.starts_with("http://"))
                .map(|_| http_client(false, opts.verbose)),
            clients: Mutex::new(HashMap::new()),
            deadline,
        }
    }

    fn client(&self, key: &str) -> Result<Client, KmsError> {
        let region = match arn_region(key) {
            Some(r) => r.to_string(),
            None => self.config.region().map(|r| r.to_string()).ok_or_else(|| {
                let what = if key.is_empty() {
                    "a value without `key`".to_string()
                } else {
                    format!("key {key}")
                };
                KmsError::new(
                    "NoRegion",
                    format!("{what} needs a region, and none is configured"),
                )
            })?,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let client = clients.entry(region.clone()).or_insert_with(|| {
            let mut b = aws_sdk_kms::config::Builder::from(&self.config).region(Region::new(region));
            if let Some(url) = &self.endpoint_url {
                b = b.endpoint_url(url);
            }
            if let Some(http) = &self.plain_http {
                b = b.http_client(http.clone());
            }
            Client::from_conf(b.build())
        });
        Ok(client.clone())
    }

    /// Run one call under the deadline (or `by`, if sooner). `call` gets a
    /// [`LastAttempt`] to attach to its request, so that when the deadline cuts
    /// retries short we report what KMS last said, not just "timeout".
    async fn timed<T, F, Fut>(&self, by: Option<Instant>, call: F) -> Result<T, KmsError>
    where
        F: FnOnce(LastAttempt) -> Fut,
        Fut: Future<Output = Result<T, KmsError>>,
    {
        let last = LastAttempt::default();
        let deadline = by.map_or(self.deadline, |b| b.min(self.deadline));
        match tokio::time::timeout_at(deadline.into(), call(last.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(last.explain(e)),
            Err(_) => Err(last.explain(KmsError::new(
                "TimeoutError",
                "no answer before the deadline (--timeout)",
            ))),
        }
    }
}

/// Remembers why the last attempt of one call failed, as the SDK retries it.
#[derive(Debug, Clone, Default)]
struct LastAttempt(Arc<Mutex<Option<KmsError>>>);

impl LastAttempt {
    /// A timeout after failed attempts is reported as the attempts' failure.
    fn explain(&self, err: KmsError) -> KmsError {
        if err.code != "TimeoutError" {
            return err;
        }
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(last) if last.code != "TimeoutError" => KmsError::new(
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
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(e)) = ctx.output_or_error() {
            let summary = match e.as_operation_error() {
                Some(op) => code_of::<DecryptError>(op)
                    .or_else(|| code_of::<EncryptError>(op))
                    .or_else(|| code_of::<GenerateDataKeyError>(op))
                    .or_else(|| code_of::<ReEncryptError>(op))
                    .unwrap_or_else(|| KmsError::new("UnknownError", op.to_string())),
                None if e.is_timeout_error() => KmsError::new("TimeoutError", "attempt timed out"),
                None => KmsError::new("ConnectionError", causes(e).pop().unwrap_or_default()),
            };
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
        }
        Ok(())
    }
}

fn code_of<T>(op: &AttemptError) -> Option<KmsError>
where
    T: ProvideErrorMetadata + std::error::Error + fmt::Debug + Send + Sync + 'static,
{
    let e = op.downcast_ref::<T>()?;
    Some(KmsError::new(e.code()?, e.message().unwrap_or_default()))
}

fn with_context<B>(mut b: B, ctx: &Context, add: impl Fn(B, String, String) -> B) -> B {
    for (k, v) in ctx {
        b = add(b, k.clone(), v.clone());
    }
    b
}

/// Turn an SDK error into the AWS error code and message.
fn classify<E, R>(err: &SdkError<E, R>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    if let Some(code) = err.code() {
        return KmsError::new(code, err.message().unwrap_or_default());
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
        return KmsError::new("CredentialsError", cause);
    }
    match err {
        SdkError::TimeoutError(_) => KmsError::new("TimeoutError", "no answer within the time limit"),
        SdkError::DispatchFailure(d) if d.is_timeout() => KmsError::new("TimeoutError", cause),
        SdkError::DispatchFailure(_) => KmsError::new("ConnectionError", cause),
        // Never the raw answer: the body of one we could not read may be a
        // Decrypt result, and it must not reach a message.
        SdkError::ResponseError(_) => KmsError::new("InvalidResponse", cause),
        _ => KmsError::new("UnknownError", cause),
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

impl KeyService for AwsKms {
    async fn generate_data_key(&self, key: &str, ctx: &Context) -> Result<GeneratedKey, KmsError> {
        let client = self.client(key)?;
        self.timed(None, |last| async move {
            let req = client.generate_data_key().key_id(key).number_of_bytes(32);
            let out = with_context(req, ctx, |b, k, v| b.encryption_context(k, v))
                .customize()
                .interceptor(last)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let plaintext = out
                .plaintext
                .map(|b| Secret::new(b.into_inner()))
                .ok_or_else(|| KmsError::new("InvalidResponse", "GenerateDataKey returned no plaintext"))?;
            let blob = out
                .ciphertext_blob
                .map(Blob::into_inner)
                .ok_or_else(|| KmsError::new("InvalidResponse", "GenerateDataKey returned no ciphertext"))?;
            let key_arn = out.key_id.unwrap_or_else(|| key.to_string());
            Ok(GeneratedKey {
                plaintext,
                blob,
                key_arn,
            })
        })
        .await
    }

    async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        ctx: &Context,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let client = self.client(key)?;
        self.timed(None, |last| async move {
            let req = client.encrypt().key_id(key).plaintext(Blob::new(plaintext));
            let out = with_context(req, ctx, |b, k, v| b.encryption_context(k, v))
                .customize()
                .interceptor(last)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let blob = out
                .ciphertext_blob
                .map(Blob::into_inner)
                .ok_or_else(|| KmsError::new("InvalidResponse", "Encrypt returned no ciphertext"))?;
            Ok((blob, out.key_id.unwrap_or_else(|| key.to_string())))
        })
        .await
    }

    async fn decrypt(
        &self,
        key: Option<&str>,
        blob: &[u8],
        ctx: &Context,
        by: Option<Instant>,
    ) -> Result<Secret, KmsError> {
        // Without a key the region is the configured one.
        let client = self.client(key.unwrap_or(""))?;
        self.timed(by, |last| async move {
            let mut req = client.decrypt().ciphertext_blob(Blob::new(blob));
            if let Some(k) = key {
                req = req.key_id(k);
            }
            let out = with_context(req, ctx, |b, k, v| b.encryption_context(k, v))
                .customize()
                .interceptor(last)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            out.plaintext
                .map(|b| Secret::new(b.into_inner()))
                .ok_or_else(|| KmsError::new("InvalidResponse", "Decrypt returned no plaintext"))
        })
        .await
    }

    async fn re_encrypt(
        &self,
        blob: &[u8],
        source_key: Option<&str>,
        ctx: &Context,
        dest_key: &str,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let client = self.client(dest_key)?;
        self.timed(None, |last| async move {
            let mut req = client
                .re_encrypt()
                .ciphertext_blob(Blob::new(blob))
                .destination_key_id(dest_key);
            if let Some(k) = source_key {
                req = req.source_key_id(k);
            }
            let req = with_context(req, ctx, |b, k, v| b.source_encryption_context(k, v));
            let out = with_context(req, ctx, |b, k, v| b.destination_encryption_context(k, v))
                .customize()
                .interceptor(last)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let blob = out
                .ciphertext_blob
                .map(Blob::into_inner)
                .ok_or_else(|| KmsError::new("InvalidResponse", "ReEncrypt returned no ciphertext"))?;
            Ok((blob, out.key_id.unwrap_or_else(|| dest_key.to_string())))
        })
        .await
    }
}

/// Run `fut` on a single-threaded runtime built for this one job. All KMS calls
/// of a run are I/O-bound and issued concurrently, so one thread is enough.
pub fn block_on<F: Future>(fut: F) -> std::io::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(fut);
    // Do not wait for a DNS lookup stuck in the blocking pool: we are about to
    // exec or exit, and the deadline has been kept.
    rt.shutdown_background();
    Ok(out)
}

/// A runtime and a loaded [`AwsKms`], for commands that make several KMS calls
/// in sequence (read the data key, then encrypt, …).
pub struct Session {
    rt: Option<tokio::runtime::Runtime>,
    pub kms: AwsKms,
}

impl Session {
    pub fn start(
        opts: &AwsOptions,
        deadline: Instant,
        default_region: Option<String>,
    ) -> std::io::Result<Session> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let kms = rt.block_on(AwsKms::load(opts, deadline, default_region));
        Ok(Session { rt: Some(rt), kms })
    }

    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(fut),
            None => unreachable!("the runtime lives until drop"),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! An in-memory KMS for unit tests: "wraps" by prefixing the key id and the
    //! sorted context, so a wrong key or context fails like KMS does.

    use super::*;
    use std::cell::Cell;

    #[derive(Default)]
    pub struct FakeKms {
        pub calls: Cell<usize>,
        /// Keys that answer AccessDeniedException.
        pub denied: Vec<String>,
    }

    fn envelope(key: &str, ctx: &Context) -> Vec<u8> {
        format!("{key}|{ctx:?}|").into_bytes()
    }

    impl KeyService for FakeKms {
        async fn generate_data_key(&self, key: &str, ctx: &Context) -> Result<GeneratedKey, KmsError> {
            let plaintext = crate::envelope::new_data_key();
            let (blob, key_arn) = self.encrypt(key, plaintext.expose(), ctx).await?;
            Ok(GeneratedKey {
                plaintext,
                blob,
                key_arn,
            })
        }

        async fn encrypt(
            &self,
            key: &str,
            plaintext: &[u8],
            ctx: &Context,
        ) -> Result<(Vec<u8>, String), KmsError> {
            self.calls.set(self.calls.get() + 1);
            let mut blob = envelope(key, ctx);
            blob.extend_from_slice(plaintext);
            Ok((blob, key.to_string()))
        }

        async fn decrypt(
            &self,
            key: Option<&str>,
            blob: &[u8],
            ctx: &Context,
            _: Option<Instant>,
        ) -> Result<Secret, KmsError> {
            self.calls.set(self.calls.get() + 1);
            let key = key.unwrap_or_default();
            if self.denied.iter().any(|d| d == key) {
                return Err(KmsError::new("AccessDeniedException", "denied by the fake"));
            }
            let head = envelope(key, ctx);
            match blob.strip_prefix(head.as_slice()) {
                Some(pt) => Ok(Secret::new(pt.to_vec())),
                None => Err(KmsError::new("InvalidCiphertextException", "")),
            }
        }

        async fn re_encrypt(
            &self,
            blob: &[u8],
            source_key: Option<&str>,
            ctx: &Context,
            dest_key: &str,
        ) -> Result<(Vec<u8>, String), KmsError> {
            let plain = self.decrypt(source_key, blob, ctx, None).await?;
            self.encrypt(dest_key, plain.expose(), ctx).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_the_arn() {
        assert_eq!(
            arn_region("arn:aws:kms:eu-west-1:111122223333:key/abc"),
            Some("eu-west-1")
        );
        assert_eq!(
            arn_region("arn:aws:kms:us-east-1:111122223333:alias/x"),
            Some("us-east-1")
        );
        assert_eq!(arn_region("alias/x"), None);
        assert_eq!(arn_region("1234abcd-12ab"), None);
    }
}
