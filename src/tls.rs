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
//! The HTTP client decodes and parses every root it is given (most of what an
//! HTTPS start still costs: ~145 roots). For AWS's own endpoints ([`is_aws_host`])
//! a first stage gives it only the few that can end their chains: the bundle's
//! (or `SSL_CERT_FILE`'s, or the embedded) certificates whose subject is that of
//! an Amazon Trust Services root ([`Scope::AmazonTrustServices`]), picked by a
//! shallow DER walk to each subject, without parsing. Still a subset of the
//! configuration, and a certificate error moves on to the next stage as above (a
//! TLS-inspecting proxy's CA). When the store holds none of them, or the host is
//! not AWS's, that stage is skipped.
//!
//! Not done here: a verifier that decodes only the roots matching the presented
//! chain. aws-smithy-http-client 1.5 takes a root store, not a verifier, and
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

/// Which certificates of its sources a [`Stage`] trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every one.
    All,
    /// Those whose subject is an Amazon Trust Services root's (for AWS's own
    /// endpoints, whose chains end there).
    AmazonTrustServices,
}

/// One set of trusted roots: the certificates of its sources together (or those
/// of them in its [`Scope`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    sources: Vec<Source>,
    scope: Scope,
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
    /// Amazon Trust Services roots of the file (for AWS hosts only), the file
    /// alone, then the file and the folders; with neither, the embedded roots
    /// (their Amazon Trust Services roots first, for AWS hosts).
    pub fn of(file: Option<PathBuf>, dirs: Vec<PathBuf>) -> Trust {
        let stage = |sources: Vec<Source>, scope| Stage {
            sources,
            scope,
            native: false,
        };
        let mut all: Vec<Source> = file.into_iter().map(Source::File).collect();
        // Not of a folder alone: reading all of it is the cost to avoid.
        if all.is_empty() && dirs.is_empty() {
            all.push(Source::Embedded);
        }
        let mut stages = Vec::new();
        if !all.is_empty() {
            stages.push(stage(all.clone(), Scope::AmazonTrustServices));
        }
        if !all.is_empty() && !dirs.is_empty() {
            stages.push(stage(all.clone(), Scope::All));
        }
        all.extend(dirs.into_iter().map(Source::Dir));
        stages.push(stage(all, Scope::All));
        Trust { stages }
    }

    /// The stages, first to try first.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The stage a request to `host` starts at: the Amazon Trust Services
    /// roots only for AWS's own endpoints (any other host would fail there and
    /// pay a handshake for nothing).
    pub fn first_stage(&self, host: Option<&str>) -> usize {
        match self.stages.first() {
            Some(s) if s.scope == Scope::AmazonTrustServices && !host.is_some_and(is_aws_host) => 1,
            _ => 0,
        }
    }
}

/// The DNS suffixes of AWS endpoints whose certificates chain to an Amazon Trust
/// Services root, from the SDK's partition data (`endpoint_lib.rs` of each
/// service crate): `aws` and `aws-us-gov` (`amazonaws.com`, dual-stack
/// `api.aws`; FIPS names such as `kms-fips.REGION.amazonaws.com` and VPC
/// endpoint names `vpce-….kms.REGION.vpce.amazonaws.com` end the same way), and
/// the European Sovereign Cloud (`amazonaws.eu`, `api.amazonwebservices.eu`),
/// whose roots Amazon Root CA 1, 3 and 4 cross-sign. Not `aws-cn`
/// (`amazonaws.com.cn`: operated apart, its CA not documented as ATS) nor the
/// ISO partitions (government CAs): a wrong guess costs a handshake.
const AWS_SUFFIXES: &[&str] = &[
    ".amazonaws.com",
    ".api.aws",
    ".amazonaws.eu",
    ".api.amazonwebservices.eu",
];

/// Whether `host` is one of AWS's own endpoints ([`AWS_SUFFIXES`]). Only
/// decides which roots are tried first, never whether one is trusted: a wrong
/// answer costs time, not safety.
pub fn is_aws_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    AWS_SUFFIXES.iter().any(|suffix| {
        host.len() > suffix.len()
            && host.is_char_boundary(host.len() - suffix.len())
            && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    })
}

/// The host of a request's URI (`https://HOST:PORT/…`), without user info or
/// port; `None` for an IP literal in brackets or no authority.
pub fn host_of(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    if host.starts_with('[') {
        return None;
    }
    let host = host.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

/// The common names of the Amazon Trust Services roots that AWS endpoints'
/// chains end at (amazontrust.com/repository: Amazon Root CA 1–4, and the
/// Starfield root that cross-signs Amazon Root CA 1 for older stores).
const AMAZON_TRUST_SERVICES_ROOTS: &[&[u8]] = &[
    b"Amazon Root CA 1",
    b"Amazon Root CA 2",
    b"Amazon Root CA 3",
    b"Amazon Root CA 4",
    b"Starfield Services Root Certificate Authority - G2",
];

/// The DER subjects of the Amazon Trust Services roots, taken from the embedded
/// Mozilla copies: a store's certificate is one of them when its subject has the
/// same bytes (only whether it is *offered* depends on this; the store holds it).
fn amazon_subjects() -> &'static [&'static [u8]] {
    static SUBJECTS: std::sync::OnceLock<Vec<&'static [u8]>> = std::sync::OnceLock::new();
    SUBJECTS.get_or_init(|| {
        let roots: &'static [CertificateDer<'static>] = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        roots
            .iter()
            .filter_map(|c| der::subject(c.as_ref()))
            .filter(|s| der::common_name(s).is_some_and(|cn| AMAZON_TRUST_SERVICES_ROOTS.contains(&cn)))
            .collect()
    })
}

/// Just enough DER to find a certificate's subject without parsing the rest.
mod der {
    /// One DER element: its tag, the whole element, its contents, and what
    /// follows it in the input.
    struct Element<'a> {
        tag: u8,
        whole: &'a [u8],
        contents: &'a [u8],
        rest: &'a [u8],
    }

    /// The tag, the content length and what follows the header of the element
    /// at the start of `input` (definite lengths of up to 4 bytes).
    fn header(input: &[u8]) -> Option<(u8, usize, &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes.iter().fold(0, |acc, &b| acc << 8 | usize::from(b))
        };
        Some((tag, len, rest))
    }

    /// The element at the start of `input`, whole.
    fn element(input: &[u8]) -> Option<Element<'_>> {
        let (tag, len, rest) = header(input)?;
        if rest.len() < len {
            return None;
        }
        let (contents, after) = rest.split_at(len);
        let header = input.len() - rest.len();
        Some(Element {
            tag,
            whole: &input[..header + len],
            contents,
            rest: after,
        })
    }

    const SEQUENCE: u8 = 0x30;

    /// The contents of the SEQUENCE at the start of `input`.
    fn sequence(input: &[u8]) -> Option<&[u8]> {
        element(input).filter(|e| e.tag == SEQUENCE).map(|e| e.contents)
    }

    /// The `index`th field of a certificate's TBSCertificate after the
    /// optional version: 0 serial, 1 signature, 2 issuer, 3 validity,
    /// 4 subject, 5 subjectPublicKeyInfo; the whole element.
    pub(super) fn tbs_field(cert: &[u8], index: usize) -> Option<&[u8]> {
        field(sequence(sequence(cert)?)?, index)
    }

    /// The subject of a certificate of which `prefix` is the start: the
    /// Certificate and TBSCertificate may be cut short, not the fields up to
    /// the subject. `None` when the subject is not whole in it.
    pub(super) fn subject_in_prefix(prefix: &[u8]) -> Option<&[u8]> {
        let (SEQUENCE, _, cert) = header(prefix)? else {
            return None;
        };
        let (SEQUENCE, _, tbs) = header(cert)? else {
            return None;
        };
        field(tbs, 4).filter(|s| s.first() == Some(&SEQUENCE))
    }

    /// The `index`th field of a TBSCertificate's contents after the version.
    fn field(tbs: &[u8], index: usize) -> Option<&[u8]> {
        let mut rest = tbs;
        let first = element(rest)?;
        if first.tag == 0xa0 {
            rest = first.rest;
        }
        for _ in 0..index {
            rest = element(rest)?.rest;
        }
        Some(element(rest)?.whole)
    }

    /// A certificate's subject Name, tag and length included.
    pub(super) fn subject(cert: &[u8]) -> Option<&[u8]> {
        tbs_field(cert, 4).filter(|s| s.first() == Some(&SEQUENCE))
    }

    /// The value of the first commonName attribute of a Name.
    pub(super) fn common_name(name: &[u8]) -> Option<&[u8]> {
        const CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
        let mut rdns = sequence(name)?;
        while !rdns.is_empty() {
            let rdn = element(rdns)?;
            rdns = rdn.rest;
            let mut set = rdn.contents;
            while !set.is_empty() {
                let attribute = element(set)?;
                set = attribute.rest;
                let oid = element(attribute.contents)?;
                if oid.whole == CN {
                    return Some(element(oid.rest)?.contents);
                }
            }
        }
        None
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
        let only = match self.scope {
            Scope::All => None,
            Scope::AmazonTrustServices => Some(amazon_subjects()),
        };
        for source in &self.sources {
            match source {
                Source::File(path) => {
                    if let Ok(meta) = std::fs::metadata(path) {
                        seen.insert((meta.dev(), meta.ino()));
                    }
                    read_pem(path, &mut certs, only);
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
                            read_pem(&path, &mut certs, only);
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
        if let Some(wanted) = only {
            certs.retain(|c| der::subject(c).is_some_and(|s| wanted.contains(&s)));
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
        let names: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                Source::File(p) | Source::Dir(p) => p.display().to_string(),
                Source::Embedded => "the embedded Mozilla roots".into(),
            })
            .collect();
        let names = names.join(" and ");
        match (self.scope, self.sources == [Source::Embedded]) {
            (Scope::AmazonTrustServices, _) if count == 0 => {
                format!("TLS: no Amazon Trust Services root in {names}; not trying them first")
            }
            (Scope::AmazonTrustServices, true) => format!(
                "TLS: no system certificate store found; trying the {count} embedded Amazon Trust Services root{plural} first (an AWS endpoint)"
            ),
            (Scope::AmazonTrustServices, false) => format!(
                "TLS: trusting {count} root{plural} from {names}, its Amazon Trust Services ones (an AWS endpoint)"
            ),
            (Scope::All, true) => {
                format!("TLS: no system certificate store found; using the {count} embedded Mozilla roots")
            }
            (Scope::All, false) => format!("TLS: trusting {count} root{plural} from {names}"),
        }
    }
}

impl Stage {
    /// The HTTP client's TLS context for this stage; with `verbose`, says on
    /// stderr which roots it trusts. `None` for an Amazon Trust Services stage
    /// of a store that holds none of those roots: skipped, no handshake wasted.
    pub fn context(&self, verbose: bool) -> Option<TlsContext> {
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
            if certs.is_empty() && self.scope == Scope::AmazonTrustServices {
                return None;
            }
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
        Some(
            TlsContext::builder()
                .with_trust_store(store)
                .build()
                .unwrap_or_default(),
        )
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

/// The certificates of the PEM file at `path` (others, and broken blocks,
/// skipped). With `only`, a certificate whose subject is none of those may be
/// left out unread: each block's first [`PREFIX_CHARS`] are decoded, and the
/// rest only when the subject is wanted or lies beyond them (the caller still
/// filters what is returned).
///
/// Decoded with the `base64` crate rather than rustls-pki-types' PEM reader: the
/// latter decodes in constant time, which roots (public data) do not need, at
/// several times the cost on a bundle of 200 KiB.
fn read_pem(path: &Path, out: &mut Vec<CertificateDer<'static>>, only: Option<&[&[u8]]>) {
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
        let block = &body[..end];
        rest = &body[end + END.len()..];
        if only.is_some_and(|wanted| subject_elsewhere(block, wanted, &mut b64)) {
            continue;
        }
        strip_whitespace(block, usize::MAX, &mut b64);
        if let Ok(der) = B64.decode(&b64) {
            out.push(CertificateDer::from(der));
        }
    }
}

/// How much of a PEM block is decoded to find the certificate's subject: 480
/// bytes of DER, past the subject of every root in the Mozilla store but a few.
const PREFIX_CHARS: usize = 640;

/// Whether the certificate in the PEM `block` (base64 with line breaks) has a
/// subject other than the `wanted` ones, as far as its first [`PREFIX_CHARS`]
/// tell (false when they do not reach past it; `b64` is scratch space).
fn subject_elsewhere(block: &[u8], wanted: &[&[u8]], b64: &mut Vec<u8>) -> bool {
    strip_whitespace(block, PREFIX_CHARS, b64);
    let mut der = [0u8; PREFIX_CHARS / 4 * 3];
    b64.len() == PREFIX_CHARS
        && B64
            .decode_slice(&b64[..], &mut der)
            .ok()
            .and_then(|n| der::subject_in_prefix(&der[..n]))
            .is_some_and(|subject| !wanted.contains(&subject))
}

/// The first `limit` characters of `block` that are not ASCII whitespace, into
/// `out`. Copied a run between whitespace at a time, the whitespace found eight
/// bytes at a time: a byte-by-byte filter, then a byte-by-byte split, were most
/// of what reading a bundle cost (callgrind, an envelope run over HTTPS).
fn strip_whitespace(block: &[u8], limit: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut from = 0;
    while out.len() < limit {
        let end = next_whitespace(block, from).unwrap_or(block.len());
        let run = &block[from..end];
        out.extend_from_slice(&run[..run.len().min(limit - out.len())]);
        if end == block.len() {
            return;
        }
        from = end + 1;
    }
}

/// Where the next ASCII whitespace byte at or after `from` is. Base64 has none
/// (nor any other byte below `!`), so a PEM line is passed over eight bytes at a
/// time; another control byte is kept, as the byte-by-byte filter kept it.
fn next_whitespace(block: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = skip_words(block, from, |w| has_below(w, b'!'));
        let i = at + block.get(at..)?.iter().take(8).position(|&b| b < b'!')?;
        if block[i].is_ascii_whitespace() {
            return Some(i);
        }
        from = i + 1;
    }
}

/// Where `needle` (starting with `-`) first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = next_dash(haystack, from) {
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Where the next `-` at or after `from` is. Base64 has none, so a bundle is
/// mostly passed over eight bytes at a time.
fn next_dash(haystack: &[u8], from: usize) -> Option<usize> {
    let at = skip_words(haystack, from, |w| has_byte(w, b'-'));
    Some(at + haystack.get(at..)?.iter().position(|&b| b == b'-')?)
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Whether a byte of `word` is `byte` (a byte of `word` XOR `byte` is zero).
fn has_byte(word: u64, byte: u8) -> bool {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

/// Whether a byte of `word` is below `n` (exact for `n` up to 128).
fn has_below(word: u64, n: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0
}

/// The offset, from `from` on, of the first eight-byte word of `haystack` for
/// which `hit` is true (it may hold a byte the caller looks for), or of the
/// tail shorter than a word: what comes before can be passed over.
fn skip_words(haystack: &[u8], from: usize, hit: impl Fn(u64) -> bool) -> usize {
    let rest = haystack.get(from..).unwrap_or_default();
    let clean = rest
        .chunks_exact(8)
        .take_while(|c| {
            !hit(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]))
        })
        .count();
    from + clean * 8
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
    use crate::error::TestResult;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn embedded_roots_are_there_and_pem_encoded() {
        let stage = Trust::of(None, vec![]).stages()[1].clone();
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

    fn sources(trust: &Trust) -> Vec<(Scope, Vec<Source>)> {
        trust
            .stages()
            .iter()
            .map(|s| (s.scope, s.sources().to_vec()))
            .collect()
    }

    #[test]
    fn amazon_roots_of_the_bundle_first_then_the_bundle_then_the_folder_with_it() {
        use Scope::{All, AmazonTrustServices as Ats};
        let (f, d) = (PathBuf::from("/b.pem"), PathBuf::from("/certs"));
        let file = Source::File(f.clone());
        assert_eq!(
            sources(&Trust::of(Some(f.clone()), vec![d.clone()])),
            [
                (Ats, vec![file.clone()]),
                (All, vec![file.clone()]),
                (All, vec![file.clone(), Source::Dir(d.clone())])
            ]
        );
        assert_eq!(
            sources(&Trust::of(Some(f), vec![])),
            [(Ats, vec![file.clone()]), (All, vec![file])]
        );
        assert_eq!(
            sources(&Trust::of(None, vec![d.clone()])),
            [(All, vec![Source::Dir(d)])]
        );
        assert_eq!(
            sources(&Trust::of(None, vec![])),
            [(Ats, vec![Source::Embedded]), (All, vec![Source::Embedded])]
        );
    }

    #[test]
    fn only_aws_hosts_start_at_the_amazon_roots() {
        let trust = Trust::of(Some("/b.pem".into()), vec!["/certs".into()]);
        for host in [
            "kms.us-east-1.amazonaws.com",
            "KMS.US-EAST-1.AMAZONAWS.COM.",
            "kms-fips.us-gov-west-1.amazonaws.com",
            "kms.us-east-1.api.aws",
            "kms-fips.us-east-1.api.aws",
            "vpce-0123456789abcdef0-abcdefgh.kms.us-east-1.vpce.amazonaws.com",
            "sts.amazonaws.com",
            "my-bucket.s3.eu-west-1.amazonaws.com",
            "kms.eusc-de-east-1.amazonaws.eu",
        ] {
            assert!(is_aws_host(host), "{host}");
            assert_eq!(trust.first_stage(Some(host)), 0, "{host}");
        }
        for host in [
            "localhost",
            "127.0.0.1",
            "kms.internal.example.com",
            "amazonaws.com",
            "api.aws",
            "evilamazonaws.com",
            "kms.cn-north-1.amazonaws.com.cn",
            "kms.us-east-1.amazonaws.com.example.org",
            "kms.us-east-1.amazonaws.co",
        ] {
            assert!(!is_aws_host(host), "{host}");
            assert_eq!(trust.first_stage(Some(host)), 1, "{host}");
        }
        assert_eq!(trust.first_stage(None), 1);
        // A folder alone has no Amazon stage: every host starts at it.
        let folder = Trust::of(None, vec!["/certs".into()]);
        assert_eq!(folder.first_stage(Some("kms.us-east-1.amazonaws.com")), 0);
        assert_eq!(folder.stages().len(), 1);
    }

    #[test]
    fn the_host_of_a_request_uri() {
        assert_eq!(
            host_of("https://kms.us-east-1.amazonaws.com:4430/"),
            Some("kms.us-east-1.amazonaws.com")
        );
        assert_eq!(
            host_of("https://kms.us-east-1.api.aws"),
            Some("kms.us-east-1.api.aws")
        );
        assert_eq!(host_of("https://u:p@h.api.aws/x?y=1"), Some("h.api.aws"));
        assert_eq!(host_of("https://[::1]:443/"), None);
        assert_eq!(host_of("/no/authority"), None);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The embedded roots picked as Amazon Trust Services' are exactly the five
    /// amazontrust.com/repository lists, by their keys' SHA-256.
    #[test]
    fn the_amazon_subjects_are_the_five_amazon_trust_services_roots() -> TestResult {
        use sha2::Digest;
        let subjects = amazon_subjects();
        let mut keys: Vec<String> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter(|c| der::subject(c).is_some_and(|s| subjects.contains(&s)))
            .map(|c| der::tbs_field(c, 5).map(|spki| hex(&sha2::Sha256::digest(spki))))
            .collect::<Option<_>>()
            .ok_or("a root without its key")?;
        keys.sort();
        assert_eq!(
            keys,
            [
                "2b071c59a0a0ae76b0eadb2bad23bad4580b69c3601b630c2eaf0613afa83f92",
                "36abc32656acfc645c61b71613c4bf21c787f5cabbee48348d58597803d7abc9",
                "7f4296fc5b6a4e3b35d3c369623e364ab1af381d8fa7121533c9d6c633ea2461",
                "f7ecded5c66047d28ed6466b543c40e0743abe81d109254dcf845d4c2c7853c5",
                "fbe3018031f9586bcbf41727e417b7d1c45c2f47f93be372a17b96b50757d5a2",
            ]
        );
        assert_eq!(subjects.len(), 5);
        Ok(())
    }

    fn embedded_named(name: &str) -> CertificateDer<'static> {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .find(|c| der::subject(c).and_then(der::common_name) == Some(name.as_bytes()))
            .unwrap_or_else(|| panic!("{name} embedded"))
            .clone()
    }

    fn crlf(pem_text: &[u8]) -> Vec<u8> {
        pem_text
            .iter()
            .flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] })
            .collect()
    }

    /// The Amazon stage holds the store's certificates with an Amazon root's
    /// subject — also one that is not the embedded copy — and no embedded root
    /// the store lacks; read past comments and CRLF.
    #[test]
    fn the_amazon_stage_is_the_stores_certificates_with_an_amazon_subject_and_no_other() -> TestResult {
        let ca3 = embedded_named("Amazon Root CA 3");
        let real_ca1 = embedded_named("Amazon Root CA 1");
        // Same subject as Amazon Root CA 1, other bytes (a re-issued root, or a
        // stand-in): chosen by its subject, as the store has it.
        let mut other_ca1 = real_ca1.to_vec();
        *other_ca1.last_mut().ok_or("an empty certificate")? ^= 1;
        let other_ca1 = CertificateDer::from(other_ca1);
        let unrelated: Vec<_> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter(|c| der::subject(c).is_some_and(|s| !amazon_subjects().contains(&s)))
            .take(10)
            .collect();
        assert_eq!(unrelated.len(), 10);
        let mut text = b"# a comment before\r\n".to_vec();
        let mut block = Vec::new();
        unrelated[..5].iter().for_each(|c| pem(c, &mut block));
        pem(&ca3, &mut block);
        text.extend(crlf(&block));
        text.extend_from_slice(b"# Amazon Root CA 2 (a comment naming it is not it)\n");
        pem(&other_ca1, &mut text);
        unrelated[5..].iter().for_each(|c| pem(c, &mut text));
        let dir = tempfile::tempdir()?;
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, &text)?;

        let trust = Trust::of(Some(bundle), vec![]);
        let mut got = trust.stages()[0].certificates();
        got.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        let mut want = vec![ca3, other_ca1];
        want.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        assert_eq!(got, want);
        assert!(!got.contains(&real_ca1), "an embedded root the store lacks");
        assert_eq!(
            trust.stages()[1].certificates().len(),
            12,
            "the whole bundle next"
        );
        Ok(())
    }

    /// The subject read from a block's first characters is the certificate's
    /// own, and nearly every root's lies within them (the rest are decoded whole).
    #[test]
    fn a_subject_read_from_the_start_of_a_block_is_the_certificates() -> TestResult {
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let mut within = 0;
        for root in roots {
            let full = der::subject(root).ok_or("a root without a subject")?;
            let prefix = &root[..root.len().min(PREFIX_CHARS / 4 * 3)];
            if let Some(subject) = der::subject_in_prefix(prefix) {
                assert_eq!(subject, full);
                within += 1;
            }
            let mut block = Vec::new();
            pem(root, &mut block);
            let mut scratch = Vec::new();
            assert!(!subject_elsewhere(&block, &[full], &mut scratch));
        }
        assert!(within * 10 >= roots.len() * 9, "{within} of {}", roots.len());
        assert_eq!(der::subject_in_prefix(&roots[0][..40]), None);
        Ok(())
    }

    #[test]
    fn a_store_without_amazon_roots_passes_over_the_amazon_stage() -> TestResult {
        let mut text = Vec::new();
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter(|c| der::subject(c).is_some_and(|s| !amazon_subjects().contains(&s)))
            .for_each(|c| pem(c, &mut text));
        let dir = tempfile::tempdir()?;
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, &text)?;
        let trust = Trust::of(Some(bundle), vec![]);
        assert!(trust.stages()[0].certificates().is_empty());
        assert!(
            trust.stages()[0].context(false).is_none(),
            "no client, no handshake"
        );
        assert!(trust.stages()[1].context(false).is_some());
        // With no store, the embedded Amazon roots are tried first.
        let embedded = Trust::of(None, vec![]);
        assert_eq!(embedded.stages()[0].certificates().len(), 5);
        Ok(())
    }

    #[test]
    fn a_subject_is_found_by_a_shallow_walk_and_broken_der_is_none() -> TestResult {
        let ca1 = embedded_named("Amazon Root CA 1");
        let subject = der::subject(&ca1).ok_or("no subject")?;
        // As amazontrust.com lists it: C=US, O=Amazon, CN=Amazon Root CA 1, all PrintableString.
        let mut want = vec![
            0x30, 0x39, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02,
        ];
        want.extend_from_slice(b"US");
        want.extend_from_slice(&[0x31, 0x0f, 0x30, 0x0d, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x13, 0x06]);
        want.extend_from_slice(b"Amazon");
        want.extend_from_slice(&[0x31, 0x19, 0x30, 0x17, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x10]);
        want.extend_from_slice(b"Amazon Root CA 1");
        assert_eq!(subject, want.as_slice());
        for cut in [0, 1, 2, 10, 100, ca1.len() / 2] {
            assert_eq!(der::subject(&ca1[..cut]), None, "cut at {cut}");
        }
        assert_eq!(der::subject(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(der::common_name(b"\x30\x03\x31\x01\x30"), None);
        Ok(())
    }

    /// A store that lacks one of the Mozilla roots (removed by its admin) never
    /// trusts it in any stage: the embedded roots are only for no store at all.
    #[test]
    fn a_mozilla_root_removed_from_the_store_is_trusted_by_no_stage() -> TestResult {
        let dir = tempfile::tempdir()?;
        let embedded = &webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let (removed, kept) = embedded.split_first().ok_or("no embedded roots")?;
        let mut bundle = Vec::new();
        kept[..kept.len() / 2].iter().for_each(|c| pem(c, &mut bundle));
        let mut folder_file = Vec::new();
        kept[kept.len() / 2..]
            .iter()
            .for_each(|c| pem(c, &mut folder_file));
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs)?;
        std::fs::write(dir.path().join("bundle.pem"), &bundle)?;
        std::fs::write(certs.join("rest.pem"), &folder_file)?;
        std::fs::write(certs.join("junk.txt"), b"not a certificate")?;

        let trust = Trust::of(Some(dir.path().join("bundle.pem")), vec![certs]);
        let stages: Vec<_> = trust.stages().iter().map(Stage::certificates).collect();
        assert_eq!(stages.len(), 3);
        assert!(stages[0].len() < 6, "the Amazon roots of the bundle first");
        assert_eq!(stages[1].len(), kept.len() / 2, "the bundle alone next");
        assert_eq!(stages[2].len(), kept.len(), "then the bundle and the folder");
        for certs in &stages {
            assert!(!certs.contains(removed), "the removed root must not be trusted");
            assert!(certs.iter().all(|c| kept.contains(c)));
        }
        Ok(())
    }

    #[test]
    fn a_bundle_is_read_past_comments_crlf_and_a_broken_block() -> TestResult {
        let roots = &webpki_root_certs::TLS_SERVER_ROOT_CERTS[..2];
        let mut text = b"# comment\r\n".to_vec();
        pem(&roots[0], &mut text);
        text.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n");
        let mut second = Vec::new();
        pem(&roots[1], &mut second);
        text.extend(crlf(&second));
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, &text)?;
        let mut certs = Vec::new();
        read_pem(&path, &mut certs, None);
        assert_eq!(certs, roots);
        Ok(())
    }

    #[test]
    fn the_next_dash_is_found_at_every_offset() {
        let text = b"ab+/cdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ";
        for at in 0..text.len() {
            for from in 0..=at {
                let mut t = text.to_vec();
                t[at] = b'-';
                assert_eq!(next_dash(&t, from), Some(at), "at {at} from {from}");
            }
            assert_eq!(next_dash(&text[..at], 0), None);
        }
        assert_eq!(next_dash(b"-", 1), None);
        assert_eq!(next_dash(b"-", 2), None);
        assert_eq!(find(b"x-y--END--END-", b"--END-"), Some(3));
    }

    #[test]
    fn whitespace_is_stripped_as_a_byte_filter_strips_it_at_every_offset() {
        let text = b"MIIB+/cdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ\xe9z";
        let filter = |t: &[u8], limit: usize| -> Vec<u8> {
            t.iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .take(limit)
                .collect()
        };
        let mut out = Vec::new();
        for at in 0..text.len() {
            for (i, odd) in [b"\n", b"\r", b" ", b"\t", b"\x0c", b"\x01", b"\0"]
                .iter()
                .enumerate()
            {
                let mut t = text.to_vec();
                t.insert(at, odd[0]);
                // A second one, a few bytes on: runs of every length.
                t.insert((at + i * 3 + 1).min(t.len()), b'\n');
                for limit in [0, 1, at, 16, 640, usize::MAX] {
                    strip_whitespace(&t, limit, &mut out);
                    assert_eq!(out, filter(&t, limit), "at {at}, byte {odd:?}, limit {limit}");
                }
            }
        }
        strip_whitespace(b"", 10, &mut out);
        assert!(out.is_empty());
        strip_whitespace(b"\n\r\n \t", 10, &mut out);
        assert!(out.is_empty());
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
