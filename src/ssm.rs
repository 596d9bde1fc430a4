//! Parameter Store: the one read an `{ ssm = … }` reference needs
//! (`GetParameters` with decryption), on the run's shared AWS configuration.
//!
//! Behind the `ssm` cargo feature: the SSM SDK adds about 0.9 MiB to the static
//! binary, past the size budget (the release's `kmsenv-full` binary has it).
//! Without it, `refs` refuses an ssm reference with a message that says so,
//! before any call. Whether an answer is the one asked for is `refs`' business.

/// Whether this build reads Parameter Store.
pub const ENABLED: bool = cfg!(feature = "ssm");

#[cfg(feature = "ssm")]
pub use enabled::Ssm;

#[cfg(not(feature = "ssm"))]
pub use disabled::Ssm;

#[cfg(feature = "ssm")]
mod enabled {
    use aws_config::Region;
    use aws_sdk_ssm::Client;
    use aws_sdk_ssm::operation::get_parameters::GetParametersError;
    use aws_smithy_runtime_api::client::interceptors::context::Error as AttemptError;

    use crate::aws::{AnswerCap, Aws, AwsError, RegionalClients, classify, code_of, env_endpoint};
    use crate::refs::{ParamAnswer, ParamBatch};
    use crate::secret::Secret;

    /// The most kmsenv reads of one answer: 10 parameters of 8 KiB, each
    /// escaped in JSON, with room for the rest.
    const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

    fn codes(op: &AttemptError) -> Option<AwsError> {
        code_of::<GetParametersError>(op)
    }

    /// Parameter Store clients (one per region) on the run's configuration.
    pub struct Ssm {
        aws: Aws,
        clients: RegionalClients<Client>,
    }

    impl Ssm {
        /// No I/O. The endpoint is the SDK's (`AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL`).
        pub fn new(aws: Aws) -> Ssm {
            Ssm {
                aws,
                clients: RegionalClients::default(),
            }
        }

        fn client(&self, region: &str) -> Client {
            self.clients.get(region, |region| {
                let mut b = aws_sdk_ssm::config::Builder::from(self.aws.config())
                    .retry_partition(crate::aws::retry_partition())
                    .region(Region::new(region.to_string()))
                    .interceptor(AnswerCap(MAX_ANSWER_BYTES));
                // An `http://` endpoint (a local stand-in): a client without TLS.
                if let Some(http) = self.aws.plain_http_for(env_endpoint("SSM").as_deref()) {
                    b = b.http_client(http);
                }
                Client::from_conf(b.build())
            })
        }

        /// `GetParameters` of `names` (with selectors), decrypted.
        pub async fn get_parameters(&self, region: &str, names: &[String]) -> Result<ParamBatch, AwsError> {
            let client = self.client(region);
            let out = self
                .aws
                .timed(None, codes, |last| async move {
                    client
                        .get_parameters()
                        .set_names(Some(names.to_vec()))
                        .with_decryption(true)
                        .customize()
                        .interceptor(last)
                        .send()
                        .await
                        .map_err(|e| classify(&e))
                })
                .await?;
            Ok(ParamBatch {
                params: out
                    .parameters
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| ParamAnswer {
                        name: p.name,
                        arn: p.arn,
                        kind: p.r#type.map(|t| t.as_str().to_string()),
                        version: p.version,
                        selector: p.selector,
                        value: p.value.map(|v| Secret::new(v.into_bytes())),
                    })
                    .collect(),
                invalid: out.invalid_parameters.unwrap_or_default(),
            })
        }
    }
}

#[cfg(not(feature = "ssm"))]
mod disabled {
    use crate::aws::{Aws, AwsError};
    use crate::refs::ParamBatch;

    /// Parameter Store in a build without it: `refs` refuses ssm references
    /// before any call, so this is never asked.
    pub struct Ssm;

    impl Ssm {
        pub fn new(_: Aws) -> Ssm {
            Ssm
        }

        pub async fn get_parameters(&self, _: &str, _: &[String]) -> Result<ParamBatch, AwsError> {
            Err(AwsError::new(
                "Unsupported",
                "this kmsenv was built without Parameter Store support (use kmsenv-full, or --features ssm)",
            ))
        }
    }
}
