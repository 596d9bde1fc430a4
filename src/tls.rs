//! Where TLS trust comes from: the system's certificate store when there is one
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` win, as everywhere), else the Mozilla root
//! store compiled into the binary — so kmsenv works in a `FROM scratch` image,
//! which has no CA bundle at all.

use std::path::Path;

use aws_smithy_http_client::tls::{TlsContext, TrustStore};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Where the common Linux distributions (and Alpine, and distroless) keep their
/// CA bundle; the same places OpenSSL and rustls-native-certs look.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/certs",
];

/// Which roots a TLS connection trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    System,
    Embedded,
}

/// The roots to use on this machine.
pub fn roots() -> Roots {
    let env_set = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if env_set || SYSTEM_BUNDLES.iter().any(|p| Path::new(p).exists()) {
        Roots::System
    } else {
        Roots::Embedded
    }
}

/// Refuse a `SSL_CERT_FILE` / `SSL_CERT_DIR` that holds no certificate: trusting
/// nothing would only fail later, less clearly (and trips an assertion in the
/// HTTP client's debug builds).
pub fn check_env() -> Result<(), String> {
    fn has_cert(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"))
    }
    let file = std::env::var_os("SSL_CERT_FILE").filter(|s| !s.is_empty());
    let dir = std::env::var_os("SSL_CERT_DIR").filter(|s| !s.is_empty());
    if let Some(f) = &file {
        if !has_cert(Path::new(f)) {
            return Err(format!(
                "SSL_CERT_FILE={}: no PEM certificate in it (or unreadable)",
                Path::new(f).display()
            ));
        }
    } else if let Some(d) = &dir {
        let any = std::env::split_paths(d).any(|d| {
            std::fs::read_dir(&d).is_ok_and(|entries| entries.flatten().any(|e| has_cert(&e.path())))
        });
        if !any {
            return Err(format!(
                "SSL_CERT_DIR={}: no PEM certificate in it (or unreadable)",
                Path::new(d).display()
            ));
        }
    }
    Ok(())
}

/// The TLS context for `roots`.
pub fn context(roots: Roots) -> TlsContext {
    let store = match roots {
        Roots::System => TrustStore::empty().with_native_roots(true),
        Roots::Embedded => webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .fold(TrustStore::empty().with_native_roots(false), |store, der| {
                store.with_pem_certificate(pem(der))
            }),
    };
    // Building only fails for invalid extra server names, which we never add.
    TlsContext::builder()
        .with_trust_store(store)
        .build()
        .unwrap_or_default()
}

/// How many roots are compiled in (for `-v`).
pub fn embedded_count() -> usize {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
}

fn pem(der: &[u8]) -> Vec<u8> {
    let b64 = B64.encode(der);
    let mut out = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_roots_are_there_and_pem_encoded() {
        assert!(embedded_count() > 100);
        let p = pem(&webpki_root_certs::TLS_SERVER_ROOT_CERTS[0]);
        assert!(p.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
        assert!(
            p.split(|&b| b == b'\n')
                .all(|l| l.len() <= 64 || l.starts_with(b"-----"))
        );
    }
}
