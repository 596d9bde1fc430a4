//! Whom kmsenv's HTTPS client trusts: exactly the configuration's roots — the
//! system store (its CA bundle and its certificate folder), or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` alone when set, or the embedded Mozilla roots when there is no
//! store — whichever part of them it reads first (tls.rs reads the bundle, and the
//! folder only when the bundle does not verify the server).
//!
//! The server is the fault proxy in TLS mode in front of moto, with a throwaway
//! CA (`support::tls`). The system store is a copy of this machine's /etc/ssl,
//! with or without that CA, bind-mounted over /etc/ssl in a mount namespace of
//! kmsenv's own (`Kmsenv::with_etc_ssl`). `-v` says which roots were read.

mod support;

use std::path::Path;

use support::proxy::Proxy;
use support::tls::{TestCa, hosts_with, make_ca, make_test_ca, system_store};
use support::*;

const NAME: &str = "API_TOKEN";
const VALUE: &[u8] = b"decrypted-over-tls";
const SEALED_FILE: &[Entry] = &[sealed(NAME, VALUE)];
const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One test's world: a sandbox with a sealed file, a CA, and the TLS proxy.
struct World {
    sandbox: Sandbox,
    file: std::path::PathBuf,
    ca: TestCa,
    tls: Proxy,
    /// The endpoint's host name, and the /etc/hosts that leads it to the proxy.
    host: String,
    hosts: Option<std::path::PathBuf>,
}

fn world() -> Option<World> {
    let sandbox = Sandbox::new();
    let ca = make_test_ca(sandbox.dir.path())?;
    Some(World::with(sandbox, ca, "localhost"))
}

/// The name kmsenv's KMS endpoint has in the tests of AWS hosts: /etc/hosts,
/// bind-mounted for kmsenv alone, leads it to the proxy.
const AWS_HOST: &str = "kms.us-east-1.amazonaws.com";

/// A world whose server is `AWS_HOST`, its certificate signed by a CA with
/// the subject `ca_subject`.
fn aws_world(ca_subject: &[(&str, &str)]) -> Option<World> {
    let sandbox = Sandbox::new();
    let ca = make_ca(sandbox.dir.path(), ca_subject, AWS_HOST)?;
    let mut w = World::with(sandbox, ca, AWS_HOST);
    w.hosts = Some(hosts_with(w.sandbox.dir.path(), AWS_HOST));
    Some(w)
}

impl World {
    fn with(sandbox: Sandbox, ca: TestCa, host: &str) -> World {
        let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
        let tls = Proxy::start_tls(&ca.server_cert, &ca.server_key);
        World {
            sandbox,
            file,
            ca,
            tls,
            host: host.into(),
            hosts: None,
        }
    }

    /// `kmsenv -v -f FILE exec -- env -0` against the TLS endpoint, with
    /// `etc_ssl` as /etc/ssl.
    fn run(&self, etc_ssl: &Path, env: &[(&str, &Path)]) -> Output {
        let mut run = Kmsenv::with_etc(self.sandbox.dir.path(), etc_ssl, self.hosts.as_deref())
            .endpoint(&self.tls.https_endpoint(&self.host));
        for (name, value) in env {
            run = run.env(name, value);
        }
        run.args(["-v", "--timeout", "10"])
            .file(&self.file)
            .args(["exec", "--", "env", "-0"])
            .run()
    }

    /// Asserts the run decrypted over TLS and handed the value to the command.
    #[track_caller]
    fn assert_decrypted(&self, out: Output) -> String {
        let stderr = out.stderr.clone();
        let out = out.ok();
        assert_eq!(
            out.env0().get(NAME).map(Vec::as_slice),
            Some(VALUE),
            "the command should get the value: {stderr}"
        );
        assert!(self.tls.count_op("Decrypt") >= 1, "{}", self.tls.counts());
        assert_eq!(self.tls.count_tls(), self.tls.total(), "{}", self.tls.counts());
        stderr
    }

    /// Asserts the run refused the server's certificate: exit 125, a one-line
    /// cause naming it and what to do, nothing sent, nothing run.
    #[track_caller]
    fn assert_refused(&self, out: Output) -> String {
        let out = out
            .code_is(125)
            .kmsenv_error(&["invalid peer certificate", "add its CA there"]);
        assert_eq!(
            self.tls.total(),
            0,
            "no request may get through: {}",
            self.tls.counts()
        );
        // One handshake per stage at most: a certificate no stage trusts is not
        // retried (more roots will not come).
        let handshakes = self.tls.counts()["tls_handshakes"].as_u64().unwrap_or(0);
        assert!(
            (1..=3).contains(&handshakes),
            "{handshakes} handshakes: {}",
            self.tls.counts()
        );
        out.stderr
    }
}

#[test]
fn the_system_store_is_trusted_and_its_bundle_is_enough_when_it_holds_the_ca() {
    let Some(w) = world() else { return };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, true, true);
    let stderr = w.assert_decrypted(w.run(&store, &[]));
    assert!(
        stderr.contains(&format!("roots from {BUNDLE}\n")),
        "the bundle alone should have been read:\n{stderr}"
    );
}

#[test]
fn a_ca_only_in_the_system_certificate_folder_is_trusted() {
    // A corporate proxy's CA dropped into /etc/ssl/certs without rebuilding the bundle.
    let Some(w) = world() else { return };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, false, true);
    let stderr = w.assert_decrypted(w.run(&store, &[]));
    assert!(
        stderr.contains(&format!("roots from {BUNDLE} and /etc/ssl/certs\n")),
        "the folder should have been read after the bundle:\n{stderr}"
    );
}

#[test]
fn a_ca_only_in_the_system_bundle_is_trusted() {
    let Some(w) = world() else { return };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, true, false);
    w.assert_decrypted(w.run(&store, &[]));
}

#[test]
fn a_ca_absent_from_the_system_store_is_refused_after_reading_all_of_it() {
    // The end-to-end form of "a root removed from the store": the CA is in no part
    // of it (the embedded roots are tested in tls.rs's unit tests).
    let Some(w) = world() else { return };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, false, false);
    let stderr = w.assert_refused(w.run(&store, &[]));
    assert!(
        stderr.contains(&format!("roots from {BUNDLE} and /etc/ssl/certs\n")),
        "the whole store should have been tried:\n{stderr}"
    );
}

#[test]
fn ssl_cert_file_alone_is_trusted_not_the_system_store() {
    let Some(w) = world() else { return };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, true, true);
    // A file holding another CA: the system store's CA must not count.
    let other = w.sandbox.path("other.pem");
    std::fs::copy(&w.ca.server_cert, &other).expect("copy");
    w.assert_refused(w.run(&store, &[("SSL_CERT_FILE", &other)]));

    w.tls.reset();
    let empty_store = system_store(&w.sandbox.path("empty"), &w.ca.ca_cert, false, false);
    let stderr = w.assert_decrypted(w.run(&empty_store, &[("SSL_CERT_FILE", &w.ca.ca_cert)]));
    assert!(
        stderr.contains(&format!("trusting 1 root from {}\n", w.ca.ca_cert.display())),
        "{stderr}"
    );
}

#[test]
fn ssl_cert_dir_alone_is_trusted_not_the_system_store() {
    let Some(w) = world() else { return };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, true, true);
    let other = w.sandbox.path("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::copy(&w.ca.server_cert, other.join("server.pem")).expect("copy");
    w.assert_refused(w.run(&store, &[("SSL_CERT_DIR", &other)]));

    w.tls.reset();
    let dir = w.sandbox.path("ca-dir");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::copy(&w.ca.ca_cert, dir.join("ca.pem")).expect("copy");
    let empty_store = system_store(&w.sandbox.path("empty"), &w.ca.ca_cert, false, false);
    let stderr = w.assert_decrypted(w.run(&empty_store, &[("SSL_CERT_DIR", &dir)]));
    assert!(
        stderr.contains(&format!("trusting 1 root from {}\n", dir.display())),
        "{stderr}"
    );
}

#[test]
fn without_a_system_store_the_embedded_roots_are_used_and_a_private_ca_is_refused() {
    let Some(w) = world() else { return };
    let empty = w.sandbox.path("no-store");
    std::fs::create_dir(&empty).expect("mkdir");
    let stderr = w.assert_refused(w.run(&empty, &[]));
    assert!(stderr.contains("embedded Mozilla roots"), "{stderr}");
}

#[test]
fn a_ca_only_in_the_system_certificate_folder_is_trusted_through_a_connect_proxy() {
    // Through HTTPS_PROXY the HTTP client does the handshake itself, over the
    // tunnel: its certificate error must move on to the folder the same way.
    let Some(w) = world() else { return };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, false, true);
    let proxy = StandIn::start("forward-proxy", &[]);
    let url = proxy.url("");
    let stderr = w.assert_decrypted(w.run(&store, &[("HTTPS_PROXY", Path::new(&url))]));
    assert!(
        stderr.contains(&format!("roots from {BUNDLE} and /etc/ssl/certs\n")),
        "{stderr}"
    );
    let connect = format!("CONNECT localhost:{} -> 200", w.tls.port);
    let log = proxy.log();
    assert!(
        log.len() >= 2 && log.iter().all(|l| *l == connect),
        "a tunnel for the bundle's try and one for the folder's:\n{}",
        log.join("\n")
    );
}

/// The subject of Amazon Root CA 1 as its certificate encodes it (C=US, O=Amazon,
/// CN=Amazon Root CA 1, each a PrintableString), as amazontrust.com lists it.
const AMAZON_ROOT_CA_1: &[(&str, &str)] = &[("C", "US"), ("O", "Amazon"), ("CN", "Amazon Root CA 1")];
const AMAZON_ROOT_CA_1_SUBJECT: &[u8] = b"\x30\x39\x31\x0b\x30\x09\x06\x03\x55\x04\x06\x13\x02US\
\x31\x0f\x30\x0d\x06\x03\x55\x04\x0a\x13\x06Amazon\
\x31\x19\x30\x17\x06\x03\x55\x04\x03\x13\x10Amazon Root CA 1";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The certificates of a PEM file, DER.
fn pem_certificates(path: &Path) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).expect("read PEM");
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| {
            let body: String = block
                .split("-----END CERTIFICATE-----")
                .next()?
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD.decode(body).ok()
        })
        .collect()
}

/// How many certificates of `bundle` are Amazon Trust Services roots (or carry
/// one's name, as the stand-in does): what the AWS stage should hold.
fn amazon_roots_in(bundle: &Path) -> usize {
    pem_certificates(bundle)
        .iter()
        .filter(|der| {
            contains(der, b"Amazon Root CA ")
                || contains(der, b"Starfield Services Root Certificate Authority - G2")
        })
        .count()
}

/// The `-v` lines about TLS roots, in order.
fn tls_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("kmsenv: TLS: "))
        .collect()
}

#[test]
fn an_aws_endpoint_is_verified_against_the_amazon_roots_of_the_bundle_alone() {
    let Some(w) = aws_world(AMAZON_ROOT_CA_1) else {
        return;
    };
    // The stand-in has the real root's subject, byte for byte.
    let real = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .find(|c| contains(c, b"Amazon Root CA 1"))
        .expect("Amazon Root CA 1 embedded");
    assert!(contains(real, AMAZON_ROOT_CA_1_SUBJECT));
    assert!(contains(
        &pem_certificates(&w.ca.ca_cert)[0],
        AMAZON_ROOT_CA_1_SUBJECT
    ));

    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, true, true);
    let expected = amazon_roots_in(&store.join("certs/ca-certificates.crt"));
    assert!((1..=6).contains(&expected), "{expected}");
    let stderr = w.assert_decrypted(w.run(&store, &[]));
    let plural = if expected == 1 { "" } else { "s" };
    assert_eq!(
        tls_lines(&stderr),
        [format!(
            "kmsenv: TLS: trusting {expected} root{plural} from {BUNDLE}, its Amazon Trust Services ones (an AWS endpoint)"
        )],
        "only the bundle's Amazon roots should have been handed to the client:\n{stderr}"
    );
    assert_eq!(w.tls.count_tls_handshakes(), 1, "{}", w.tls.counts());
}

/// The CA of a TLS-inspecting corporate proxy, which re-signs AWS's certificates.
const INSPECTING_PROXY_CA: &[(&str, &str)] = &[("O", "Example Corp"), ("CN", "Example Corp TLS inspection")];

#[test]
fn an_aws_endpoint_behind_a_tls_inspecting_proxy_whose_ca_is_in_the_store_is_trusted_next() {
    // A corporate proxy re-signs AWS's certificate with its own CA, which the
    // admin added to the system store: the Amazon roots fail, the bundle verifies.
    let Some(w) = aws_world(INSPECTING_PROXY_CA) else {
        return;
    };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, true, true);
    let stderr = w.assert_decrypted(w.run(&store, &[]));
    let lines = tls_lines(&stderr);
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].ends_with("its Amazon Trust Services ones (an AWS endpoint)"),
        "{stderr}"
    );
    assert!(lines[1].ends_with(&format!("roots from {BUNDLE}")), "{stderr}");
    assert_eq!(
        w.tls.count_tls_handshakes(),
        2,
        "one refused, one verified: {}",
        w.tls.counts()
    );
}

#[test]
fn an_aws_endpoint_behind_a_tls_inspecting_proxy_whose_ca_is_not_in_the_store_is_refused() {
    let Some(w) = aws_world(INSPECTING_PROXY_CA) else {
        return;
    };
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, false, false);
    let stderr = w.assert_refused(w.run(&store, &[]));
    let lines = tls_lines(&stderr);
    assert_eq!(lines.len(), 3, "every stage tried:\n{stderr}");
    assert!(
        lines[2].ends_with(&format!("roots from {BUNDLE} and /etc/ssl/certs")),
        "{stderr}"
    );
}

#[test]
fn an_aws_endpoint_with_a_store_without_amazon_roots_starts_at_the_bundle() {
    // A store of the proxy's CA alone (an image trimmed to its company's CA):
    // nothing to try first, so no handshake is spent on it.
    let Some(w) = aws_world(&[("CN", "Example Corp Root")]) else {
        return;
    };
    let store = w.sandbox.path("trimmed-ssl");
    std::fs::create_dir_all(store.join("certs")).expect("mkdir");
    std::fs::copy(&w.ca.ca_cert, store.join("certs/ca-certificates.crt")).expect("copy");
    let stderr = w.assert_decrypted(w.run(&store, &[]));
    assert_eq!(
        tls_lines(&stderr),
        [
            format!("kmsenv: TLS: no Amazon Trust Services root in {BUNDLE}; not trying them first"),
            format!("kmsenv: TLS: trusting 1 root from {BUNDLE}"),
        ],
        "{stderr}"
    );
    assert_eq!(
        w.tls.count_tls_handshakes(),
        1,
        "none spent on an empty stage: {}",
        w.tls.counts()
    );
}

#[test]
fn an_aws_endpoint_with_ssl_cert_file_tries_that_files_amazon_roots_first() {
    let Some(w) = aws_world(AMAZON_ROOT_CA_1) else {
        return;
    };
    // The system store lacks the stand-in: only SSL_CERT_FILE counts.
    let store = system_store(w.sandbox.dir.path(), &w.ca.ca_cert, false, false);
    let file = w.sandbox.path("roots.pem");
    let mut text = std::fs::read(&w.ca.server_cert).expect("read");
    text.extend(std::fs::read(&w.ca.ca_cert).expect("read"));
    std::fs::write(&file, text).expect("write");
    let stderr = w.assert_decrypted(w.run(&store, &[("SSL_CERT_FILE", &file)]));
    assert_eq!(
        tls_lines(&stderr),
        [format!(
            "kmsenv: TLS: trusting 1 root from {}, its Amazon Trust Services ones (an AWS endpoint)",
            file.display()
        )],
        "{stderr}"
    );
    assert_eq!(w.tls.count_tls_handshakes(), 1, "{}", w.tls.counts());
}
