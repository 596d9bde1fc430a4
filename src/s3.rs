//! `-f s3://BUCKET/KEY`: a kmsenv file kept in S3. Read-only: the writing
//! commands work on a local file, which is then uploaded like any artifact.
//!
//! Behind the `s3` cargo feature, because the S3 SDK adds more to the static
//! binary than the size budget allows (`make static-full` turns it on). Without
//! it, an `s3://` path is refused with a message that says so.

use std::path::Path;

use crate::error::{Error, Result};

/// An `s3://BUCKET/KEY` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

/// Whether `path` names an S3 object (`s3://…`) rather than a local file.
pub fn is_url(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().starts_with(b"s3://")
}

/// Parse `s3://BUCKET/KEY`; the key may hold any character, `/` included.
pub fn parse(path: &Path) -> Result<S3Url> {
    let text = path.to_str().unwrap_or_default();
    let rest = text.strip_prefix("s3://").unwrap_or_default();
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() && !key.ends_with('/') => Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }),
        _ => Err(Error::usage(format!(
            "{}: expected s3://BUCKET/KEY naming one object",
            path.display()
        ))),
    }
}

/// Split a `KMSENV_FILE` list on `:`, keeping `s3://…` entries whole.
pub fn split_file_list(list: &std::ffi::OsStr) -> Vec<std::path::PathBuf> {
    let mut out: Vec<std::path::PathBuf> = Vec::new();
    let mut rejoin = false;
    for part in std::env::split_paths(list) {
        let bytes = part.as_os_str().as_encoded_bytes();
        match out.last_mut() {
            Some(prev) if rejoin && bytes.starts_with(b"//") => {
                let mut joined = prev.as_os_str().to_owned();
                joined.push(":");
                joined.push(part.as_os_str());
                *prev = joined.into();
            }
            _ if part.as_os_str().is_empty() => {}
            _ => out.push(part.clone()),
        }
        rejoin = part.as_os_str() == "s3";
    }
    out
}

/// Whether this build reads `s3://` files.
pub const ENABLED: bool = cfg!(feature = "s3");

#[cfg(feature = "s3")]
pub use enabled::{code_of, fetch};

#[cfg(not(feature = "s3"))]
pub use disabled::{code_of, fetch};

#[cfg(feature = "s3")]
mod enabled {
    use aws_config::Region;
    use aws_sdk_s3::Client;
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_smithy_runtime_api::client::interceptors::context::Error as AttemptError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

    use super::S3Url;
    use crate::aws::{Aws, AwsError, classify, env_endpoint};
    use crate::document::MAX_FILE_BYTES;

    /// The region S3 is asked in when none is configured; S3 then names the
    /// bucket's region in its redirect, and the request is made again there.
    const FIRST_REGION: &str = "us-east-1";

    /// The AWS error code of a failed GetObject attempt, for
    /// [`crate::aws::LastAttempt`].
    pub fn code_of(op: &AttemptError) -> Option<AwsError> {
        crate::aws::code_of::<GetObjectError>(op)
    }

    /// Read the object's bytes (at most [`MAX_FILE_BYTES`] + 1, so the caller
    /// can tell a file that is too big), under the run's deadline. Without a
    /// configured region, ask us-east-1 and follow S3 to the bucket's region.
    pub async fn fetch(aws: &Aws, url: &S3Url) -> Result<Vec<u8>, AwsError> {
        let first = aws.user_region().unwrap_or(FIRST_REGION).to_string();
        let region = match get(aws, url, &first).await? {
            Answer::Object(bytes) => return Ok(bytes),
            Answer::Moved(region) => region,
        };
        match get(aws, url, &region).await? {
            Answer::Object(bytes) => Ok(bytes),
            Answer::Moved(again) => Err(AwsError::new(
                "PermanentRedirect",
                format!("S3 sent the request from {first} to {region}, then to {again}"),
            )),
        }
    }

    /// What S3 answered: the object, or the bucket's region when asked in another.
    enum Answer {
        Object(Vec<u8>),
        Moved(String),
    }

    async fn get(aws: &Aws, url: &S3Url, region: &str) -> Result<Answer, AwsError> {
        let client = client(aws, region);
        aws.timed(None, code_of, |last| async move {
            let sent = client
                .get_object()
                .bucket(&url.bucket)
                .key(&url.key)
                .customize()
                .interceptor(last)
                .send()
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => return moved_to(&e).map(Answer::Moved).ok_or_else(|| classify(&e)),
            };
            let mut body = out.body;
            let mut bytes = Vec::new();
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|e| AwsError::new("ConnectionError", format!("reading the object: {e}")))?
            {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > MAX_FILE_BYTES {
                    break;
                }
            }
            Ok(Answer::Object(bytes))
        })
        .await
    }

    /// The bucket's region, when S3 refused the request because it was signed
    /// for another region (a 301 `PermanentRedirect`, or a 400
    /// `AuthorizationHeaderMalformed`) and named the right one.
    fn moved_to(err: &SdkError<GetObjectError, HttpResponse>) -> Option<String> {
        let SdkError::ServiceError(e) = err else {
            return None;
        };
        let raw = e.raw();
        let status = raw.status().as_u16();
        let moved = status == 301
            || status == 307
            || matches!(
                e.err().code(),
                Some("AuthorizationHeaderMalformed" | "PermanentRedirect")
            );
        let region = raw.headers().get("x-amz-bucket-region")?;
        (moved && !region.is_empty()).then(|| region.to_string())
    }

    fn client(aws: &Aws, region: &str) -> Client {
        let endpoint = env_endpoint("S3");
        let mut b = aws_sdk_s3::config::Builder::from(aws.config())
            .retry_partition(crate::aws::retry_partition())
            .region(Region::new(region.to_string()))
            // A custom endpoint (MinIO, LocalStack, moto, a VPC endpoint) is
            // addressed by path: BUCKET.host names rarely resolve there.
            .force_path_style(endpoint.is_some());
        if let Some(http) = aws.plain_http_for(endpoint.as_deref()) {
            b = b.http_client(http);
        }
        Client::from_conf(b.build())
    }
}

#[cfg(not(feature = "s3"))]
mod disabled {
    use aws_smithy_runtime_api::client::interceptors::context::Error as AttemptError;

    use super::S3Url;
    use crate::aws::{Aws, AwsError};

    pub fn code_of(_: &AttemptError) -> Option<AwsError> {
        None
    }

    pub async fn fetch(_: &Aws, _: &S3Url) -> Result<Vec<u8>, AwsError> {
        Err(AwsError::new(
            "NotBuiltIn",
            "this kmsenv was built without S3 support (cargo feature `s3`, `make static-full`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn urls_name_a_bucket_and_a_whole_key() -> crate::error::TestResult {
        let url = parse(Path::new("s3://config/prod/app:v2.toml"))?;
        assert_eq!(url.bucket, "config");
        assert_eq!(url.key, "prod/app:v2.toml");
        for bad in [
            "s3://",
            "s3://bucket",
            "s3://bucket/",
            "s3:///key",
            "s3://bucket/dir/",
        ] {
            assert!(parse(Path::new(bad)).is_err(), "{bad} should be refused");
        }
        assert!(is_url(Path::new("s3://b/k")));
        assert!(!is_url(Path::new("./s3://b/k")));
        Ok(())
    }

    #[test]
    fn a_file_list_keeps_s3_urls_whole() {
        let list = std::ffi::OsStr::new("base.toml:s3://b/prod.toml::/etc/app/local.toml:s3://c/x");
        assert_eq!(
            split_file_list(list),
            ["base.toml", "s3://b/prod.toml", "/etc/app/local.toml", "s3://c/x"]
                .map(PathBuf::from)
                .to_vec()
        );
        // A relative file named `s3` is still a file.
        assert_eq!(
            split_file_list(std::ffi::OsStr::new("s3:app.toml")),
            ["s3", "app.toml"].map(PathBuf::from).to_vec()
        );
    }
}
