//! The run's one AWS session: an async runtime, the AWS configuration (so
//! credentials are resolved once and shared by S3 and KMS), and the guard that
//! leaves no process it started behind (`reaper`).
//!
//! Started only when something needs AWS: a run whose files need no KMS call
//! starts no runtime and loads no configuration (DESIGN §4 step 2). `exec` ends
//! it before `execve`.

use std::future::Future;
use std::time::Instant;

use crate::aws::{Aws, AwsOptions};
use crate::error::{Class, Error, Result};

pub struct Session {
    rt: Option<tokio::runtime::Runtime>,
    /// `None` for an offline session (the in-memory key service of unit tests).
    aws: Option<Aws>,
    /// Last: dropped after the runtime is shut down, so nothing starts after it.
    _reaper: Option<crate::reaper::Guard>,
}

impl Session {
    /// Start the runtime and load the AWS configuration; `fallback_region` is
    /// the files' first key ARN region, for the SDK's own calls (STS) when the
    /// user configured none.
    pub fn start(opts: &AwsOptions, deadline: Instant, fallback_region: Option<String>) -> Result<Session> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(Class::Io, format!("cannot start the async runtime: {e}")))?;
        let reaper = crate::reaper::start();
        let aws = rt.block_on(Aws::load(opts, deadline, fallback_region));
        Ok(Session {
            rt: Some(rt),
            aws: Some(aws),
            _reaper: Some(reaper),
        })
    }

    /// A session without AWS, for a key service that does no I/O: a runtime
    /// with only a clock (for deadlines).
    pub fn offline() -> Result<Session> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::new(Class::Io, format!("cannot start the async runtime: {e}")))?;
        Ok(Session {
            rt: Some(rt),
            aws: None,
            _reaper: None,
        })
    }

    /// The AWS configuration (S3 and KMS clients are built from it).
    pub fn aws(&self) -> Result<&Aws> {
        self.aws.as_ref().ok_or_else(|| {
            Error::new(
                Class::Internal,
                "internal: an offline session has no AWS configuration",
            )
        })
    }

    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(fut),
            None => unreachable!("the runtime lives until drop"),
        }
    }

    /// End the session; with `join`, wait up to 100 ms for the runtime's
    /// blocking-pool threads (DNS lookups) to end, so that a fork that follows
    /// (`exec --init`) forks a single-threaded process. Without it, shutting
    /// down costs nothing on the start-up path (execve ends the threads).
    pub fn end(mut self, join: bool) {
        if let Some(rt) = self.rt.take() {
            if join {
                rt.shutdown_timeout(std::time::Duration::from_millis(100));
            } else {
                rt.shutdown_background();
            }
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
