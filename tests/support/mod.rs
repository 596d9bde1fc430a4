//! Shared fixture for the integration tests, one module per concern:
//!
//! - `moto`: the KMS the tests talk to (a real `moto_server` on loopback), raw KMS
//!   calls to it, and the AWS CLI pointed at it; `http`: the one small HTTP client.
//! - `proxy`: the fault-injecting KMS proxy and the AWS credential stand-ins.
//! - `sandbox`: one test's temporary folder, keys and files made in it.
//! - `run`: running the built binary (`Kmsenv`) and what it left (`Output`).
//! - `toml_text`: editing a kmsenv file's text by hand.
//! - `tls`: a throwaway CA. `random`: seeded and fresh randomness.
//! - `attack` (tests/integrity.rs) and `docker` (a real Docker engine).
//!
//! The modules most tests use are re-exported here; the others (`attack`, `docker`,
//! `tls`, `random`) are named by path, e.g. `support::tls::make_test_ca`.
//!
//! Nothing here mocks KMS: moto encrypts for real and enforces encryption context.

// Each tests/*.rs is a crate of its own that compiles this whole folder and uses a
// part of it: a helper one test binary leaves unused, another one uses. So unused
// code is allowed here, module by module, and nowhere in the tests themselves.
#[allow(dead_code)]
pub mod attack;
#[allow(dead_code)]
pub mod docker;
#[allow(dead_code)]
mod http;
#[allow(dead_code)]
pub mod moto;
#[allow(dead_code)]
pub mod proxy;
#[allow(dead_code)]
pub mod random;
#[allow(dead_code)]
pub mod run;
#[allow(dead_code)]
pub mod sandbox;
#[allow(dead_code)]
pub mod tls;
#[allow(dead_code)]
pub mod toml_text;

pub use moto::*;
pub use proxy::*;
pub use run::*;
pub use sandbox::*;
pub use toml_text::*;
