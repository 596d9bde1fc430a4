//! KMS: the few operations kmsenv needs, behind the [`KeyService`] trait, and
//! their AWS implementation on the run's shared [`Aws`] configuration.
//!
//! One KMS client is built per region on first use, the region coming from the
//! key ARN (DESIGN §5). Every call runs under the run's one deadline.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use aws_config::Region;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;

use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::encrypt::EncryptError;
use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyError;
use aws_sdk_kms::operation::re_encrypt::ReEncryptError;
use aws_smithy_runtime_api::client::interceptors::context::Error as AttemptError;

use crate::aws::{AnswerCap, Aws, classify, code_of, env_endpoint};
pub use crate::aws::{AwsError, AwsOptions};
use crate::secret::Secret;

/// An encryption context: sorted, so messages and MACs are stable.
pub type Context = BTreeMap<String, String>;

/// A data key as KMS made it: plaintext, its wrapping, and the key's full ARN.
#[derive(Debug)]
pub struct GeneratedKey {
    pub plaintext: Secret,
    pub blob: Vec<u8>,
    pub key_arn: String,
}

/// A decrypted blob and the key KMS says decrypted it (its ARN).
#[derive(Debug)]
pub struct Decrypted {
    pub plaintext: Secret,
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
    ) -> impl Future<Output = Result<GeneratedKey, AwsError>>;
    /// Encrypt `plaintext` under `key`; returns the blob and the key's ARN.
    fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        ctx: &Context,
    ) -> impl Future<Output = Result<(Vec<u8>, String), AwsError>>;
    /// Decrypt `blob`, pinning `key` when known, giving up at `by` if it comes
    /// before the run's deadline (a key's share of the time, in failover). An
    /// answer for another key than `key` is an error.
    fn decrypt(
        &self,
        key: Option<&str>,
        blob: &[u8],
        ctx: &Context,
        by: Option<Instant>,
    ) -> impl Future<Output = Result<Decrypted, AwsError>>;
    /// Re-encrypt `blob` from its key and context to `dest_key` and `dest_ctx`,
    /// without the plaintext leaving KMS; returns the blob and the ARN.
    fn re_encrypt(
        &self,
        blob: &[u8],
        source_key: Option<&str>,
        ctx: &Context,
        dest_key: &str,
        dest_ctx: &Context,
    ) -> impl Future<Output = Result<(Vec<u8>, String), AwsError>>;
}

/// KMS's error codes, for [`crate::aws::LastAttempt`].
fn kms_codes(op: &AttemptError) -> Option<AwsError> {
    code_of::<DecryptError>(op)
        .or_else(|| code_of::<EncryptError>(op))
        .or_else(|| code_of::<GenerateDataKeyError>(op))
        .or_else(|| code_of::<ReEncryptError>(op))
}

/// The region a key is used in, for people.
pub fn region_of(arn: &str) -> &str {
    arn_region(arn).unwrap_or("configured region")
}

/// The region named by a key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`), if it is one.
pub fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

/// A new data key and its wrappings, in the order of the keys asked for.
#[derive(Debug)]
pub struct NewDataKey {
    pub plaintext: Secret,
    /// `(key ARN as KMS answered it, CiphertextBlob)`.
    pub wrappings: Vec<(String, Vec<u8>)>,
}

/// Which key and call failed while making a data key.
#[derive(Debug)]
pub struct KeyFailure {
    pub key: String,
    pub op: &'static str,
    pub error: AwsError,
}

/// A new data key (`init`, `rotate`): generated under the first key, then
/// encrypted under each further key, all with the data-key context `ctx`.
pub async fn new_data_key<K: KeyService>(
    kms: &K,
    keys: &[&str],
    ctx: &Context,
) -> Result<NewDataKey, KeyFailure> {
    let fail = |key: &str, op, error| KeyFailure {
        key: key.to_string(),
        op,
        error,
    };
    let Some((first, rest)) = keys.split_first() else {
        return Err(fail(
            "",
            "GenerateDataKey",
            AwsError::new("NoKey", "no key to wrap the data key with"),
        ));
    };
    let generated = kms
        .generate_data_key(first, ctx)
        .await
        .map_err(|e| fail(first, "GenerateDataKey", e))?;
    let mut wrappings = vec![(generated.key_arn, generated.blob)];
    for key in rest {
        let (blob, arn) = kms
            .encrypt(key, generated.plaintext.expose(), ctx)
            .await
            .map_err(|e| fail(key, "Encrypt", e))?;
        wrappings.push((arn, blob));
    }
    Ok(NewDataKey {
        plaintext: generated.plaintext,
        wrappings,
    })
}

/// Whether a Decrypt answer's key ARN is the key that was asked for. A key ARN
/// must match exactly and a bare key id must be the ARN's id; an alias cannot be
/// compared without another call, and KMS itself refuses a ciphertext of another
/// key (`IncorrectKeyException`), so it is accepted.
pub fn answer_matches(asked: &str, answered: &str) -> bool {
    if asked.contains("alias/") {
        return true;
    }
    if asked.starts_with("arn:") {
        return asked == answered;
    }
    answered.rsplit_once(":key/").is_some_and(|(_, id)| id == asked)
}

/// KMS through the AWS SDK: the shared configuration, one client per region.
pub struct AwsKms {
    aws: Aws,
    endpoint_url: Option<String>,
    /// For an `http://` KMS endpoint (a local KMS): a client without TLS.
    plain_http: Option<aws_sdk_kms::config::SharedHttpClient>,
    clients: Mutex<HashMap<String, Client>>,
    /// The region for a key given without an ARN when the user configured none:
    /// the region of the first key ARN in the files.
    fallback_region: Option<String>,
    /// The reads of `{ secret = … }` and `{ ssm = … }` references (`refs`), on
    /// the same configuration: one AWS session serves every service of a run.
    secrets: crate::secrets_manager::SecretsManager,
    ssm: crate::ssm::Ssm,
}

impl AwsKms {
    /// KMS on a loaded configuration (no I/O): `fallback_region` is the region
    /// for keys without an ARN when the user configured none.
    pub fn new(aws: Aws, opts: &AwsOptions, fallback_region: Option<String>) -> AwsKms {
        let endpoint_url = opts.endpoint_url.clone();
        let plain_http = aws.plain_http_for(endpoint_url.clone().or_else(|| env_endpoint("KMS")).as_deref());
        AwsKms {
            secrets: crate::secrets_manager::SecretsManager::new(aws.clone()),
            ssm: crate::ssm::Ssm::new(aws.clone()),
            aws,
            endpoint_url,
            plain_http,
            clients: Mutex::new(HashMap::new()),
            fallback_region,
        }
    }

    /// The shared AWS configuration, for other services (S3).
    pub fn aws(&self) -> &Aws {
        &self.aws
    }

    fn client(&self, key: &str) -> Result<Client, AwsError> {
        let region = arn_region(key)
            .or(self.aws.user_region())
            .or(self.fallback_region.as_deref())
            .map(str::to_string)
            .ok_or_else(|| {
                let what = if key.is_empty() {
                    "a value without `key`".to_string()
                } else {
                    format!("key {key}")
                };
                AwsError::new(
                    "NoRegion",
                    format!("{what} needs a region, and none is configured"),
                )
            })?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let client = clients.entry(region.clone()).or_insert_with(|| {
            let mut b = aws_sdk_kms::config::Builder::from(self.aws.config())
                .retry_partition(crate::aws::retry_partition())
                .region(Region::new(region))
                .interceptor(AnswerCap::KMS);
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
}

/// The ciphertext of an answer, which KMS always sends.
fn ciphertext(blob: Option<Blob>, op: &str) -> Result<Vec<u8>, AwsError> {
    blob.map(Blob::into_inner)
        .ok_or_else(|| AwsError::new("InvalidResponse", format!("{op} returned no ciphertext")))
}

fn with_context<B>(mut b: B, ctx: &Context, add: impl Fn(B, String, String) -> B) -> B {
    for (k, v) in ctx {
        b = add(b, k.clone(), v.clone());
    }
    b
}

impl KeyService for AwsKms {
    async fn generate_data_key(&self, key: &str, ctx: &Context) -> Result<GeneratedKey, AwsError> {
        let client = self.client(key)?;
        self.aws
            .timed(None, kms_codes, |last| async move {
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
                    .ok_or_else(|| {
                        AwsError::new("InvalidResponse", "GenerateDataKey returned no plaintext")
                    })?;
                let blob = ciphertext(out.ciphertext_blob, "GenerateDataKey")?;
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
    ) -> Result<(Vec<u8>, String), AwsError> {
        let client = self.client(key)?;
        self.aws
            .timed(None, kms_codes, |last| async move {
                let req = client.encrypt().key_id(key).plaintext(Blob::new(plaintext));
                let out = with_context(req, ctx, |b, k, v| b.encryption_context(k, v))
                    .customize()
                    .interceptor(last)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                let blob = ciphertext(out.ciphertext_blob, "Encrypt")?;
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
    ) -> Result<Decrypted, AwsError> {
        // Without a key the region is the configured one.
        let client = self.client(key.unwrap_or(""))?;
        self.aws
            .timed(by, kms_codes, |last| async move {
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
                let plaintext = out
                    .plaintext
                    .map(|b| Secret::new(b.into_inner()))
                    .ok_or_else(|| AwsError::new("InvalidResponse", "Decrypt returned no plaintext"))?;
                let key_arn = out
                    .key_id
                    .ok_or_else(|| AwsError::new("InvalidResponse", "Decrypt returned no KeyId"))?;
                if let Some(asked) = key
                    && !answer_matches(asked, &key_arn)
                {
                    return Err(AwsError::new(
                        "InvalidResponse",
                        format!("Decrypt answered for key {key_arn}, not for the key asked for"),
                    ));
                }
                Ok(Decrypted { plaintext, key_arn })
            })
            .await
    }

    async fn re_encrypt(
        &self,
        blob: &[u8],
        source_key: Option<&str>,
        ctx: &Context,
        dest_key: &str,
        dest_ctx: &Context,
    ) -> Result<(Vec<u8>, String), AwsError> {
        let client = self.client(dest_key)?;
        self.aws
            .timed(None, kms_codes, |last| async move {
                let mut req = client
                    .re_encrypt()
                    .ciphertext_blob(Blob::new(blob))
                    .destination_key_id(dest_key);
                if let Some(k) = source_key {
                    req = req.source_key_id(k);
                }
                let req = with_context(req, ctx, |b, k, v| b.source_encryption_context(k, v));
                let out = with_context(req, dest_ctx, |b, k, v| b.destination_encryption_context(k, v))
                    .customize()
                    .interceptor(last)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                let blob = ciphertext(out.ciphertext_blob, "ReEncrypt")?;
                Ok((blob, out.key_id.unwrap_or_else(|| dest_key.to_string())))
            })
            .await
    }
}

impl crate::refs::RefService for AwsKms {
    async fn batch_get_secrets(
        &self,
        region: &str,
        arns: &[&str],
    ) -> Result<crate::refs::SecretBatch, AwsError> {
        self.secrets.batch_get(region, arns).await
    }

    async fn get_secret(
        &self,
        region: &str,
        arn: &str,
        version: &crate::reference::SecretVersion,
    ) -> Result<crate::refs::SecretAnswer, AwsError> {
        self.secrets.get(region, arn, version).await
    }

    async fn get_parameters(
        &self,
        region: &str,
        names: &[String],
    ) -> Result<crate::refs::ParamBatch, AwsError> {
        self.ssm.get_parameters(region, names).await
    }

    fn parameter_region(&self) -> Option<String> {
        self.aws
            .user_region()
            .map(str::to_string)
            .or_else(|| self.fallback_region.clone())
    }
}

#[cfg(test)]
pub mod fake {
    //! An in-memory KMS for unit tests: "wraps" by prefixing the key id and the
    //! sorted context, so a wrong key or context fails like KMS does.

    use super::*;
    use std::cell::Cell;

    /// The fake KMS does no I/O: a runtime with only a clock (for deadlines) runs it.
    pub fn block_on<F: std::future::Future>(fut: F) -> std::io::Result<F::Output> {
        Ok(tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?
            .block_on(fut))
    }

    /// A file made through the fake KMS, with the given sealed and plain values.
    pub fn make_file(
        kms: &FakeKms,
        sealed: &[(&str, &[u8])],
        plain: &[(&str, &str)],
    ) -> std::result::Result<crate::document::Document, Box<dyn std::error::Error>> {
        let ctx: Context = [("app".to_string(), "t".to_string())].into();
        let mut dk_ctx = ctx.clone();
        dk_ctx.insert("kmsenv:purpose".into(), "data-key".into());
        let g = block_on(kms.generate_data_key("k1", &dk_ctx))??;
        let dk = crate::envelope::DataKey::from_plaintext(&g.plaintext)
            .ok_or("the fake's data key has 32 bytes")?;
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&g.blob);
        let mut text = format!(
            "[kmsenv]\nversion = 2\ncontext = {{ app = \"t\" }}\n\n[[kmsenv.keys]]\narn = \"k1\"\ndata_key = \"{b64}\"\n\n[env]\n"
        );
        for (n, v) in sealed {
            text += &format!("{n} = {{ sealed = \"{}\" }}\n", dk.seal(n, v));
        }
        for (n, v) in plain {
            text += &format!("{n} = \"{v}\"\n");
        }
        let doc = crate::document::Document::parse(std::path::Path::new("t.toml"), text.clone())?;
        let mac = dk.mac(&doc.mac_input());
        text = text.replacen("version = 2\n", &format!("version = 2\nmac = \"{mac}\"\n"), 1);
        Ok(crate::document::Document::parse(
            std::path::Path::new("t.toml"),
            text,
        )?)
    }

    pub fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(30)
    }

    /// The fake is given to a run up front (`Run::offline`), never started.
    impl crate::run::Connect for FakeKms {
        fn connect(
            _: &crate::session::Session,
            _: &AwsOptions,
            _: Option<String>,
        ) -> crate::error::Result<Self> {
            Err(crate::error::Error::new(
                crate::error::Class::Internal,
                "internal: the in-memory key service is installed up front",
            ))
        }
    }

    /// A fake KMS: every operation in memory; `calls` counts them. It reads
    /// references from `refs` (`crate::refs::fake`).
    #[derive(Default)]
    pub struct FakeKms {
        pub calls: Cell<usize>,
        /// Keys that answer AccessDeniedException.
        pub denied: Vec<String>,
        pub refs: crate::refs::fake::FakeRefs,
    }

    fn envelope(key: &str, ctx: &Context) -> Vec<u8> {
        format!("{key}|{ctx:?}|").into_bytes()
    }

    impl KeyService for FakeKms {
        async fn generate_data_key(&self, key: &str, ctx: &Context) -> Result<GeneratedKey, AwsError> {
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
        ) -> Result<(Vec<u8>, String), AwsError> {
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
        ) -> Result<Decrypted, AwsError> {
            self.calls.set(self.calls.get() + 1);
            let key = key.unwrap_or_default();
            if self.denied.iter().any(|d| d == key) {
                return Err(AwsError::new("AccessDeniedException", "denied by the fake"));
            }
            let head = envelope(key, ctx);
            match blob.strip_prefix(head.as_slice()) {
                Some(pt) => Ok(Decrypted {
                    plaintext: Secret::new(pt.to_vec()),
                    key_arn: key.to_string(),
                }),
                None => Err(AwsError::new("InvalidCiphertextException", "")),
            }
        }

        async fn re_encrypt(
            &self,
            blob: &[u8],
            source_key: Option<&str>,
            ctx: &Context,
            dest_key: &str,
            dest_ctx: &Context,
        ) -> Result<(Vec<u8>, String), AwsError> {
            let plain = self.decrypt(source_key, blob, ctx, None).await?;
            self.encrypt(dest_key, plain.plaintext.expose(), dest_ctx).await
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

    #[test]
    fn a_decrypt_answer_must_be_for_the_key_asked_for() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd";
        assert!(answer_matches(arn, arn));
        assert!(!answer_matches(
            arn,
            "arn:aws:kms:us-east-1:999999999999:key/1234abcd"
        ));
        assert!(answer_matches("1234abcd", arn));
        assert!(!answer_matches("1234abc", arn));
        assert!(answer_matches("alias/app", arn));
    }
}
