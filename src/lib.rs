//! kmsenv as a library: the modules behind the `kmsenv` binary, public so that
//! the fuzz targets (and the binary) can reach them. Not a stable API.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod document;
pub mod dotenv;
pub mod envelope;
pub mod error;
pub mod exec;
pub mod input;
pub mod kms;
pub mod resolve;
pub mod s3;
pub mod secret;
pub mod store;
pub mod terminal;
pub mod tls;
pub mod trust;
pub mod version;
