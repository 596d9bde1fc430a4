//! Secrets Manager: the two reads a `{ secret = … }` reference needs, on the
//! run's shared AWS configuration (credentials, retries, deadline).
//!
//! `BatchGetSecretValue` for current versions (every page of it) and
//! `GetSecretValue` for pinned ones. Nothing here decides whether an answer is
//! the one asked for: that is `refs`, which sees every answer whole.

use aws_config::Region;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::batch_get_secret_value::BatchGetSecretValueError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_smithy_runtime_api::client::interceptors::context::Error as AttemptError;

use crate::aws::{AnswerCap, Aws, AwsError, RegionalClients, classify, code_of, env_endpoint};
use crate::reference::SecretVersion;
use crate::refs::{BatchError, SecretAnswer, SecretBatch, SecretData};
use crate::secret::Secret;

/// The most kmsenv reads of one answer: 20 secrets of 64 KiB, each escaped
/// in JSON (at worst six bytes for one), with room for the rest.
const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;
/// Pages of one `BatchGetSecretValue` followed before giving up: 20 ids fit
/// in one page, so a longer chain means a broken or hostile endpoint.
const MAX_PAGES: usize = 20;

/// Secrets Manager's error codes, for [`crate::aws::LastAttempt`].
fn codes(op: &AttemptError) -> Option<AwsError> {
    code_of::<BatchGetSecretValueError>(op).or_else(|| code_of::<GetSecretValueError>(op))
}

/// Secrets Manager clients (one per region) on the run's configuration.
pub struct SecretsManager {
    aws: Aws,
    clients: RegionalClients<Client>,
}

impl SecretsManager {
    /// No I/O and no work for a run without references: a client (and its
    /// endpoint, the SDK's own setting `AWS_ENDPOINT_URL_SECRETS_MANAGER` or
    /// `AWS_ENDPOINT_URL`) is made on first use, per region.
    pub fn new(aws: Aws) -> SecretsManager {
        SecretsManager {
            aws,
            clients: RegionalClients::default(),
        }
    }

    fn client(&self, region: &str) -> Client {
        self.clients.get(region, |region| {
            let mut b = aws_sdk_secretsmanager::config::Builder::from(self.aws.config())
                .retry_partition(crate::aws::retry_partition())
                .region(Region::new(region.to_string()))
                .interceptor(AnswerCap(MAX_ANSWER_BYTES));
            // An `http://` endpoint (a local stand-in): a client without TLS.
            if let Some(http) = self
                .aws
                .plain_http_for(env_endpoint("SECRETS_MANAGER").as_deref())
            {
                b = b.http_client(http);
            }
            Client::from_conf(b.build())
        })
    }

    /// The current versions of `arns`, every page.
    pub async fn batch_get(&self, region: &str, arns: &[&str]) -> Result<SecretBatch, AwsError> {
        let client = self.client(region);
        let mut batch = SecretBatch::default();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let client = client.clone();
            let page_token = token.take();
            let out = self
                .aws
                .timed(None, codes, |last| async move {
                    let mut req = client.batch_get_secret_value().set_next_token(page_token);
                    for a in arns {
                        req = req.secret_id_list(*a);
                    }
                    req.customize()
                        .interceptor(last)
                        .send()
                        .await
                        .map_err(|e| classify(&e))
                })
                .await?;
            batch
                .values
                .extend(out.secret_values.unwrap_or_default().into_iter().map(|v| {
                    answer(
                        v.arn,
                        v.version_id,
                        v.version_stages,
                        v.secret_string,
                        v.secret_binary,
                    )
                }));
            batch
                .errors
                .extend(out.errors.unwrap_or_default().into_iter().map(|e| BatchError {
                    secret_id: e.secret_id,
                    error: AwsError::new(
                        e.error_code.unwrap_or_else(|| "UnknownError".into()),
                        e.message.unwrap_or_default(),
                    ),
                }));
            // Every id answers once (a value or an error): more is a broken or
            // hostile endpoint, and no page is asked for once all are in, so a
            // run holds at most about one answer's worth per id.
            let items = batch.values.len() + batch.errors.len();
            if items > arns.len() {
                return Err(AwsError::new(
                    "InvalidResponse",
                    format!(
                        "BatchGetSecretValue answered {items} secrets for {} asked",
                        arns.len()
                    ),
                ));
            }
            match out.next_token.filter(|t| !t.is_empty()) {
                Some(t) if items < arns.len() => token = Some(t),
                _ => return Ok(batch),
            }
        }
        Err(AwsError::new(
            "InvalidResponse",
            format!("BatchGetSecretValue went on for more than {MAX_PAGES} pages"),
        ))
    }

    /// One pinned version of `arn`.
    pub async fn get(
        &self,
        region: &str,
        arn: &str,
        version: &SecretVersion,
    ) -> Result<SecretAnswer, AwsError> {
        let client = self.client(region);
        let out = self
            .aws
            .timed(None, codes, |last| async move {
                let req = client.get_secret_value().secret_id(arn);
                let req = match version {
                    SecretVersion::Current => req,
                    SecretVersion::Stage(s) => req.version_stage(s),
                    SecretVersion::Id(id) => req.version_id(id),
                };
                req.customize()
                    .interceptor(last)
                    .send()
                    .await
                    .map_err(|e| classify(&e))
            })
            .await?;
        Ok(answer(
            out.arn,
            out.version_id,
            out.version_stages,
            out.secret_string,
            out.secret_binary,
        ))
    }
}

/// One secret of either answer, its value moved into a zeroizing buffer at once.
fn answer(
    arn: Option<String>,
    version_id: Option<String>,
    stages: Option<Vec<String>>,
    text: Option<String>,
    binary: Option<aws_smithy_types::Blob>,
) -> SecretAnswer {
    let value = match (text, binary) {
        (Some(t), _) => SecretData::Text(Secret::new(t.into_bytes())),
        (None, Some(b)) => SecretData::Binary(Secret::new(b.into_inner())),
        (None, None) => SecretData::Neither,
    };
    SecretAnswer {
        arn,
        version_id,
        stages: stages.unwrap_or_default(),
        value,
    }
}
