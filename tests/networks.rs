//! The network paths of DESIGN §5: `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY`, a
//! TLS endpoint trusted through `SSL_CERT_FILE`, HTTPS through a CONNECT proxy,
//! and the FIPS / dual-stack endpoint settings handed to the SDK.
//!
//! The forward proxy is `aws_standins.py forward-proxy`: it logs every request
//! and CONNECT, and forwards or tunnels only to loopback (there is no network
//! here; anything else gets 403 without a DNS lookup). The TLS endpoint is the
//! fault proxy (`kms_fault_proxy.py --tls-cert/--tls-key`) in front of moto, with
//! a CA and certificate made by the `openssl` CLI for `localhost`/`127.0.0.1`.
//!
//! Loopback and proxies: hyper-util's proxy matcher (0.1.21, what
//! aws-smithy-http-client uses through `ProxyConfig::from_env()`) does *not*
//! bypass localhost or 127.0.0.1 by itself; only `NO_PROXY` entries bypass
//! (IPs and CIDRs compared as addresses, names as domain suffixes). So the
//! plain `http://127.0.0.1:MOTO` endpoint can be sent through `HTTP_PROXY`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::tls::make_test_ca;
use support::*;

const NAME: &str = "API_TOKEN";
const VALUE: &[u8] = b"decrypted-over-the-network";

/// A file with one sealed value, made against moto directly.
const SEALED_FILE: &[Entry] = &[sealed(NAME, VALUE)];

/// `kmsenv … -f FILE exec -- env -0`, asserted to succeed with the value decrypted.
#[track_caller]
fn assert_decrypts(run: Kmsenv, file: &Path) {
    let env = run.file(file).args(["exec", "--", "env", "-0"]).run().ok().env0();
    assert_eq!(
        env.get(NAME).map(|v| String::from_utf8_lossy(v).into_owned()),
        Some(String::from_utf8_lossy(VALUE).into_owned()),
        "the command should get the decrypted value"
    );
}

fn show(log: &[String]) -> String {
    log.join("\n")
}

#[test]
fn http_proxy_carries_a_plain_http_endpoint_and_no_proxy_bypasses_it() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let proxy = StandIn::start("forward-proxy", &[]);
    let through = format!("FORWARD POST {}/ op=Decrypt -> 200", moto().endpoint());

    // The fixture's runner points KMS at http://127.0.0.1:MOTO.
    assert_decrypts(sandbox.kmsenv().env("HTTP_PROXY", proxy.url("")), &file);
    let log = proxy.log();
    assert!(!log.is_empty(), "the proxy should have carried the KMS call");
    assert!(
        log.iter().all(|l| *l == through),
        "only Decrypts to moto, forwarded:\n{}",
        show(&log)
    );

    // The lower-case spelling works too.
    let before = proxy.log().len();
    assert_decrypts(sandbox.kmsenv().env("http_proxy", proxy.url("")), &file);
    assert!(
        proxy.log().len() > before,
        "http_proxy should be used:\n{}",
        show(&proxy.log())
    );

    // ALL_PROXY is the fallback for both schemes.
    let before = proxy.log().len();
    assert_decrypts(sandbox.kmsenv().env("ALL_PROXY", proxy.url("")), &file);
    assert!(
        proxy.log().len() > before,
        "ALL_PROXY should be used:\n{}",
        show(&proxy.log())
    );

    // NO_PROXY=127.0.0.1: straight to moto.
    let before = proxy.log().len();
    assert_decrypts(
        sandbox
            .kmsenv()
            .env("HTTP_PROXY", proxy.url(""))
            .env("NO_PROXY", "127.0.0.1"),
        &file,
    );
    assert_eq!(
        proxy.log().len(),
        before,
        "NO_PROXY=127.0.0.1 must bypass the proxy"
    );

    // A CIDR in NO_PROXY, among other entries, bypasses too.
    assert_decrypts(
        sandbox
            .kmsenv()
            .env("HTTP_PROXY", proxy.url(""))
            .env("NO_PROXY", "example.com, 127.0.0.0/8"),
        &file,
    );
    assert_eq!(
        proxy.log().len(),
        before,
        "NO_PROXY=127.0.0.0/8 must bypass the proxy"
    );

    // HTTPS_PROXY is for https:// destinations only.
    assert_decrypts(sandbox.kmsenv().env("HTTPS_PROXY", proxy.url("")), &file);
    assert_eq!(
        proxy.log().len(),
        before,
        "HTTPS_PROXY must not carry http:// requests"
    );
}

#[test]
fn tls_endpoint_is_trusted_through_ssl_cert_file_only() {
    let sandbox = Sandbox::new();
    let Some(ca) = make_test_ca(sandbox.dir.path()) else {
        return;
    };
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let tls = Proxy::start_tls(&ca.server_cert, &ca.server_key);

    for host in ["localhost", "127.0.0.1"] {
        tls.reset();
        assert_decrypts(
            sandbox
                .kmsenv()
                .endpoint(&tls.https_endpoint(host))
                .env("SSL_CERT_FILE", &ca.ca_cert),
            &file,
        );
        let decrypts = tls.count_op("Decrypt");
        assert!(decrypts >= 1, "{}", tls.counts());
        assert_eq!(
            tls.count_tls(),
            tls.total(),
            "every request over TLS: {}",
            tls.counts()
        );
    }

    // Without the CA: the system roots do not know it; nothing is sent, nothing runs.
    tls.reset();
    let out = sandbox
        .kmsenv()
        .endpoint(&tls.https_endpoint("localhost"))
        .args(["--timeout", "10"])
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&[]);
    assert!(
        out.stderr.contains("UnknownIssuer") || out.stderr.contains("invalid peer certificate"),
        "stderr should name the certificate problem:\n{}",
        out.stderr
    );
    sandbox.assert_command_did_not_run();
    assert_eq!(tls.total(), 0, "no request may get through: {}", tls.counts());
}

#[test]
fn https_through_a_connect_proxy() {
    let sandbox = Sandbox::new();
    let Some(ca) = make_test_ca(sandbox.dir.path()) else {
        return;
    };
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let tls = Proxy::start_tls(&ca.server_cert, &ca.server_key);
    let proxy = StandIn::start("forward-proxy", &[]);
    let with_ca = || {
        sandbox
            .kmsenv()
            .endpoint(&tls.https_endpoint("localhost"))
            .env("SSL_CERT_FILE", &ca.ca_cert)
    };

    assert_decrypts(with_ca().env("HTTPS_PROXY", proxy.url("")), &file);
    let log = proxy.log();
    let connect = format!("CONNECT localhost:{} -> 200", tls.port);
    assert!(
        !log.is_empty() && log.iter().all(|l| *l == connect),
        "the proxy should only have tunnelled to the endpoint:\n{}",
        show(&log)
    );
    assert!(tls.count_op("Decrypt") >= 1, "{}", tls.counts());
    assert_eq!(tls.count_tls(), tls.total(), "{}", tls.counts());

    // NO_PROXY=localhost: a direct TLS connection.
    let before = proxy.log().len();
    assert_decrypts(
        with_ca()
            .env("HTTPS_PROXY", proxy.url(""))
            .env("NO_PROXY", "localhost"),
        &file,
    );
    assert_eq!(
        proxy.log().len(),
        before,
        "NO_PROXY=localhost must bypass the proxy"
    );
}

/// `kmsenv --timeout 5 exec` of a keyless file with one raw KMS value, with
/// static keys, region us-east-1, AWS's own endpoint, `HTTPS_PROXY` at `proxy`
/// and `extra` variables; returns the CONNECT lines the proxy logged for it.
fn connects_for(sandbox: &Sandbox, proxy: &StandIn, extra: &[(&str, &str)]) -> Vec<String> {
    let file = sandbox.path("aws.toml");
    sandbox.write(
        &file,
        &keyless_file(&[&format!("{NAME} = {{ kms = \"{}\" }}", b64(&[7u8; 120]))]),
    );
    let before = proxy.log().len();
    let mut run = sandbox
        .kmsenv_without_aws()
        .env("AWS_ACCESS_KEY_ID", "AKIDNETWORKTEST001")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HTTPS_PROXY", proxy.url(""));
    for (name, value) in extra {
        run = run.env(name, value);
    }
    let start = Instant::now();
    run.args(["--timeout", "5"])
        .file(&file)
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&[]);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "a refused CONNECT should fail within the deadline, took {took:?}"
    );
    sandbox.assert_command_did_not_run();
    proxy.log()[before..].to_vec()
}

#[test]
fn fips_and_dual_stack_settings_reach_the_sdk() {
    let sandbox = Sandbox::new();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "kms.us-east-1.amazonaws.com:443"),
        (
            &[("AWS_USE_FIPS_ENDPOINT", "true")],
            "kms-fips.us-east-1.amazonaws.com:443",
        ),
        (
            &[("AWS_USE_DUALSTACK_ENDPOINT", "true")],
            "kms.us-east-1.api.aws:443",
        ),
        (
            &[
                ("AWS_USE_FIPS_ENDPOINT", "true"),
                ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
            ],
            "kms-fips.us-east-1.api.aws:443",
        ),
    ];
    for (settings, host) in cases {
        // A proxy each: a CONNECT sent just before one case's deadline may be
        // logged after the next case has begun.
        let proxy = StandIn::start("forward-proxy", &[]);
        let log = connects_for(&sandbox, &proxy, settings);
        let expected = format!("CONNECT {host} -> 403");
        assert!(
            !log.is_empty() && log.iter().all(|l| *l == expected),
            "with {settings:?} every attempt should CONNECT to {host}:\n{}",
            show(&log)
        );
    }
}

#[test]
fn an_ssl_cert_file_without_certificates_fails_closed_naming_it() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"t");
    let empty = sandbox.path("empty.pem");
    sandbox.write(&empty, "");
    sandbox
        .kmsenv()
        .endpoint(&format!("https://127.0.0.1:{}", free_port()))
        .env("SSL_CERT_FILE", &empty)
        .file(&file)
        .args(["--timeout", "5", "exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .code_is(125)
        .kmsenv_error(&["SSL_CERT_FILE", "no PEM certificate"]);
    sandbox.assert_command_did_not_run();
}

/// The TLS settings are checked when an HTTPS client is built, not at every
/// start: a stale `SSL_CERT_FILE` (a `FROM scratch` image that names a bundle it
/// does not have) does not stop a run whose KMS is a local `http://` endpoint.
#[test]
fn an_ssl_cert_file_without_certificates_does_not_stop_a_plain_http_kms() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"over-plain-http");
    let empty = sandbox.path("empty.pem");
    sandbox.write(&empty, "");
    let out = sandbox
        .kmsenv()
        .env("SSL_CERT_FILE", &empty)
        .file(&file)
        .args(["exec", "--", "env", "-0"])
        .run()
        .ok();
    assert_values(&out.env0(), &[("TOKEN", b"over-plain-http")]);
}
