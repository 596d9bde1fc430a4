//! The one line `kmsenv --version` prints, for a bug report to quote: the
//! release, the commit and target it was built from, its optional features, and
//! the file format versions it writes and reads (what decides whether a file
//! written by one kmsenv opens in another).

use std::sync::LazyLock;

use crate::document::{FORMAT_VERSION, LEGACY_VERSION};

/// The commit, from `build.rs` (`unknown` when built without git metadata).
pub const COMMIT: &str = env!("KMSENV_COMMIT");

/// The target triple, from `build.rs`.
pub const TARGET: &str = env!("KMSENV_TARGET");

static LINE: LazyLock<String> = LazyLock::new(|| {
    let features = match (cfg!(feature = "s3"), cfg!(feature = "ssm")) {
        (true, true) => "s3, ssm",
        (true, false) => "s3",
        (false, true) => "ssm",
        (false, false) => "none",
    };
    format!(
        "{} (commit {COMMIT}, target {TARGET}, features: {features}, file format: writes {FORMAT_VERSION}, reads {LEGACY_VERSION}-{FORMAT_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
});

/// Everything after `kmsenv ` on the `--version` line. Built once, at first use;
/// a `&'static str` because clap takes the version as one.
pub fn line() -> &'static str {
    LINE.as_str()
}
