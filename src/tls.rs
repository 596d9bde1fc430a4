//! Where TLS trust comes from, and how little of it a start pays for.
//!
//! kmsenv trusts exactly what the machine's configuration trusts: with
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` set, those alone (as OpenSSL and
//! rustls-native-certs read them); otherwise the system store, i.e. its CA bundle
//! file together with its certificate folder; with no store at all (a
//! `FROM scratch` image) the Mozilla roots compiled into the binary.
//!
//! Reading a whole store costs more than the handshake it serves: on Debian the
//! folder alone is some 290 entries for the ~145 roots the bundle already holds
//! (about 4 ms of CPU, most of it system time, measured on an envelope run).
//! So trust is built in [`Stage`]s, each a superset of the one before and all of
//! them within the configuration: when the store has both a bundle and a folder,
//! first the bundle alone, then the whole store (bundle and folder, read by the
//! HTTP client itself as before). A later stage is read only when a server's
//! certificate fails verification against the earlier one (see `aws.rs`
//! `StagedHttps`). That is sound — every stage holds only roots the configuration
//! trusts — and complete — the last stage is all of them, and it is tried before
//! a certificate is refused. A root absent from the configured store is never
//! trusted, even one among the embedded Mozilla roots: those are used only when
//! no store exists. `SSL_CERT_FILE` or `SSL_CERT_DIR` alone is one stage.
//!
//! Not done here: a verifier that decodes only the roots matching the presented
//! chain (what remains of the cost is decoding and parsing each root the client
//! is given). aws-smithy-http-client 1.5 takes a root store, not a verifier, and
//! builds it before the handshake; its connector cannot be given another.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aws_smithy_http_client::tls::{TlsContext, TrustStore};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::CertificateDer;

/// Where the common Linux distributions (and Alpine, and distroless) keep their
/// CA bundle, in the order OpenSSL's probe (openssl-probe, as rustls-native-certs
/// uses it) tries them: the first that exists is the bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/opt/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/certs/cacert.pem",
];

/// The system's certificate folders (OpenSSL's `CApath`); every one that exists
/// is part of the store.
const SYSTEM_DIRS: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/etc/security/certificates",
];

/// Where a trusted certificate is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A PEM file (a CA bundle): every certificate in it.
    File(PathBuf),
    /// A certificate folder: every certificate in every file of it.
    Dir(PathBuf),
    /// The Mozilla roots compiled into the binary.
    Embedded,
}

/// One set of trusted roots: the certificates of its sources together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    sources: Vec<Source>,
    /// Whether the HTTP client reads this stage's roots itself (through
    /// rustls-native-certs, by the same rules as [`Trust::from_env`]): true for
    /// the whole configured store, which it reads more cheaply than a copy we
    /// would hand it (one decode and one parse per certificate, not two).
    native: bool,
}

/// The roots this run trusts, as [`Stage`]s to try in order: each stage holds
/// the one before it, and the last is everything the configuration trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    stages: Vec<Stage>,
}

impl Trust {
    /// The trust of this machine and environment.
    pub fn from_env() -> Trust {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let file = var("SSL_CERT_FILE").map(PathBuf::from);
        let dirs: Vec<PathBuf> = var("SSL_CERT_DIR")
            .map(|d| {
                std::env::split_paths(&d)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut trust = if file.is_some() || !dirs.is_empty() {
            Trust::of(file, dirs)
        } else {
            Trust::of(
                SYSTEM_BUNDLES.iter().map(PathBuf::from).find(|p| p.exists()),
                SYSTEM_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .filter(|p| p.exists())
                    .collect(),
            )
        };
        if let Some(last) = trust.stages.last_mut() {
            last.native = last.sources != [Source::Embedded];
        }
        trust
    }

    /// The stages for a store of `file` and `dirs` (either may be missing): the
    /// file alone, then the file and the folders; the embedded roots when there
    /// is neither.
    pub fn of(file: Option<PathBuf>, dirs: Vec<PathBuf>) -> Trust {
        let mut all: Vec<Source> = file.into_iter().map(Source::File).collect();
        let mut stages = Vec::new();
        if !all.is_empty() && !dirs.is_empty() {
            stages.push(Stage {
                sources: all.clone(),
                native: false,
            });
        }
        all.extend(dirs.into_iter().map(Source::Dir));
        if all.is_empty() {
            all.push(Source::Embedded);
        }
        stages.push(Stage {
            sources: all,
            native: false,
        });
        Trust { stages }
    }

    /// The stages, first to try first.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }
}

impl Stage {
    /// The sources whose certificates this stage trusts.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The certificates of this stage that can serve as trust anchors (the HTTP
    /// client panics on one that cannot, so those are left out here, as
    /// rustls-native-certs leaves them out).
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        let mut seen = HashSet::new();
        let mut certs = Vec::new();
        for source in &self.sources {
            match source {
                Source::File(path) => {
                    if let Ok(meta) = std::fs::metadata(path) {
                        seen.insert((meta.dev(), meta.ino()));
                    }
                    read_pem(path, &mut certs);
                }
                Source::Dir(dir) => {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let path = entry.path();
                        // Hash links and readable names point to the same files,
                        // and the bundle often sits in the folder too: read each once.
                        let Ok(meta) = std::fs::metadata(&path) else {
                            continue;
                        };
                        if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                            read_pem(&path, &mut certs);
                        }
                    }
                }
                Source::Embedded => certs.extend(
                    webpki_root_certs::TLS_SERVER_ROOT_CERTS
                        .iter()
                        .map(|c| c.clone().into_owned()),
                ),
            }
        }
        certs.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        certs.dedup();
        // The check the HTTP client's store makes (it panics where this fails);
        // each anchor dropped at once, the client builds its own.
        certs.retain(|c| {
            rustls::RootCertStore::empty()
                .add(CertificateDer::from(c.as_ref()))
                .is_ok()
        });
        certs
    }

    /// What this stage trusts, for `-v`.
    pub fn describe(&self, count: usize) -> String {
        let plural = if count == 1 { "" } else { "s" };
        if self.sources == [Source::Embedded] {
            return format!(
                "TLS: no system certificate store found; using the {count} embedded Mozilla roots"
            );
        }
        let names: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                Source::File(p) | Source::Dir(p) => p.display().to_string(),
                Source::Embedded => "the embedded Mozilla roots".into(),
            })
            .collect();
        format!("TLS: trusting {count} root{plural} from {}", names.join(" and "))
    }
}

impl Stage {
    /// The HTTP client's TLS context for this stage; with `verbose`, says on
    /// stderr which roots it trusts.
    pub fn context(&self, verbose: bool) -> TlsContext {
        let note = |count: usize| {
            if verbose {
                // Through `escape` like every other line we print: the paths
                // come from the environment.
                eprintln!("kmsenv: {}", crate::terminal::escape(&self.describe(count)));
            }
        };
        let store = TrustStore::empty();
        let store = if self.native {
            if verbose {
                note(self.certificates().len());
            }
            store.with_native_roots(true)
        } else {
            let certs = self.certificates();
            note(certs.len());
            let mut text = Vec::with_capacity(certs.iter().map(|c| c.len() * 4 / 3 + 64).sum());
            certs.iter().for_each(|c| pem(c, &mut text));
            let store = store.with_native_roots(false);
            if text.is_empty() {
                store
            } else {
                store.with_pem_certificate(text)
            }
        };
        // Building only fails for invalid extra server names, which we never add.
        TlsContext::builder()
            .with_trust_store(store)
            .build()
            .unwrap_or_default()
    }
}

/// Whether `error` (or what caused it) is a server certificate that did not
/// verify — the one failure a larger set of roots can mend.
pub fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        // hyper-rustls wraps the rustls error in io::Errors, whose `source()`
        // skips their own payload.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && is_certificate_error(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Refuse a `SSL_CERT_FILE` / `SSL_CERT_DIR` that holds no certificate: trusting
/// nothing would only fail later, less clearly.
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

/// The certificates of the PEM file at `path` (others, and broken blocks, skipped).
///
/// Decoded with the `base64` crate rather than rustls-pki-types' PEM reader: the
/// latter decodes in constant time, which roots (public data) do not need, at
/// several times the cost on a bundle of 200 KiB.
fn read_pem(path: &Path, out: &mut Vec<CertificateDer<'static>>) {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let Ok(text) = std::fs::read(path) else {
        return;
    };
    let mut rest = text.as_slice();
    let mut b64 = Vec::new();
    while let Some(start) = find(rest, BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = find(body, END) else {
            break;
        };
        b64.clear();
        b64.extend(body[..end].iter().filter(|b| !b.is_ascii_whitespace()));
        if let Ok(der) = B64.decode(&b64) {
            out.push(CertificateDer::from(der));
        }
        rest = &body[end + END.len()..];
    }
}

/// Where `needle` (starting with `-`) first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == needle[0]) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn pem(der: &[u8], out: &mut Vec<u8>) {
    let b64 = B64.encode(der);
    out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn embedded_roots_are_there_and_pem_encoded() {
        let stage = Trust::of(None, vec![]).stages()[0].clone();
        let certs = stage.certificates();
        assert!(certs.len() > 100);
        let mut p = Vec::new();
        pem(&certs[0], &mut p);
        assert!(p.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
        assert!(
            p.split(|&b| b == b'\n')
                .all(|l| l.len() <= 64 || l.starts_with(b"-----"))
        );
        assert_eq!(CertificateDer::from_pem_slice(&p).ok().as_ref(), Some(&certs[0]));
    }

    fn sources(trust: &Trust) -> Vec<Vec<Source>> {
        trust.stages().iter().map(|s| s.sources().to_vec()).collect()
    }

    #[test]
    fn the_bundle_is_read_first_and_the_folder_with_it_second() {
        let (f, d) = (PathBuf::from("/b.pem"), PathBuf::from("/certs"));
        assert_eq!(
            sources(&Trust::of(Some(f.clone()), vec![d.clone()])),
            [
                vec![Source::File(f.clone())],
                vec![Source::File(f.clone()), Source::Dir(d.clone())]
            ]
        );
        assert_eq!(
            sources(&Trust::of(Some(f.clone()), vec![])),
            [vec![Source::File(f)]]
        );
        assert_eq!(sources(&Trust::of(None, vec![d.clone()])), [vec![Source::Dir(d)]]);
        assert_eq!(sources(&Trust::of(None, vec![])), [vec![Source::Embedded]]);
    }

    /// A store that lacks one of the Mozilla roots (removed by its admin) never
    /// trusts it in any stage: the embedded roots are only for no store at all.
    #[test]
    fn a_mozilla_root_removed_from_the_store_is_trusted_by_no_stage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded = &webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let (removed, kept) = embedded.split_first().expect("roots");
        let mut bundle = Vec::new();
        kept[..kept.len() / 2].iter().for_each(|c| pem(c, &mut bundle));
        let mut folder_file = Vec::new();
        kept[kept.len() / 2..]
            .iter()
            .for_each(|c| pem(c, &mut folder_file));
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).expect("mkdir");
        std::fs::write(dir.path().join("bundle.pem"), &bundle).expect("write");
        std::fs::write(certs.join("rest.pem"), &folder_file).expect("write");
        std::fs::write(certs.join("junk.txt"), b"not a certificate").expect("write");

        let trust = Trust::of(Some(dir.path().join("bundle.pem")), vec![certs]);
        let stages: Vec<_> = trust.stages().iter().map(Stage::certificates).collect();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].len(), kept.len() / 2, "the bundle alone first");
        assert_eq!(stages[1].len(), kept.len(), "then the bundle and the folder");
        for certs in &stages {
            assert!(!certs.contains(removed), "the removed root must not be trusted");
            assert!(certs.iter().all(|c| kept.contains(c)));
        }
    }

    #[test]
    fn a_bundle_is_read_past_comments_crlf_and_a_broken_block() {
        let roots = &webpki_root_certs::TLS_SERVER_ROOT_CERTS[..2];
        let mut text = b"# comment\r\n".to_vec();
        pem(&roots[0], &mut text);
        text.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n");
        let mut second = Vec::new();
        pem(&roots[1], &mut second);
        text.extend(
            second
                .iter()
                .flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, &text).expect("write");
        let mut certs = Vec::new();
        read_pem(&path, &mut certs);
        assert_eq!(certs, roots);
    }

    #[test]
    fn only_a_certificate_that_did_not_verify_moves_to_the_next_stage() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As hyper-rustls hands it on: an io::Error around an io::Error around it.
        let wrapped = std::io::Error::other(std::io::Error::other(bad));
        assert!(is_certificate_error(&wrapped));
        let other = std::io::Error::other(rustls::Error::DecryptError);
        assert!(!is_certificate_error(&other));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_certificate_error(&refused));
    }
}
