//! kmsenv as a library: the modules behind the `kmsenv` binary, public so that
//! the fuzz targets (and the binary) can reach them. Not a stable API.

pub mod aws;
pub mod blocking;
pub mod cli;
pub mod commands;
pub mod document;
pub mod dotenv;
pub mod early;
pub mod envelope;
pub mod error;
pub mod exec;
pub mod github;
pub mod init;
pub mod input;
pub mod kms;
pub mod lint;
pub mod reaper;
pub mod reference;
pub mod refs;
pub mod resolve;
pub mod run;
pub mod s3;
pub mod secret;
pub mod secrets_manager;
pub mod session;
pub mod ssm;
pub mod store;
pub mod template;
pub mod terminal;
pub mod tls;
pub mod trust;
pub mod unlock;
pub mod user;
pub mod version;
pub mod writer;
