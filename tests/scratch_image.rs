//! The `FROM scratch` image without Docker: the static binary, a static target
//! and the file in an otherwise empty root (`chroot`), against moto. And TLS
//! trust there: with no system certificate store, the embedded roots are used;
//! `SSL_CERT_FILE` still wins.
//!
//! Needs the static binary (`make static`, which `make test` runs first) and
//! `musl-gcc` (installed by `make static`) to build a static target program.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// An empty root holding only /kmsenv, /printenv (a static program that prints
/// its environment, NUL-separated) and /kmsenv.toml.
fn scratch_root(sandbox: &Sandbox, file: &Path) -> PathBuf {
    let root = sandbox.path("root");
    std::fs::create_dir_all(&root).expect("create root");
    std::fs::copy(static_kmsenv(), root.join("kmsenv")).expect("copy kmsenv");
    std::fs::copy(file, root.join("kmsenv.toml")).expect("copy file");
    static_printenv(sandbox.dir.path(), &root.join("printenv"));
    let entries: Vec<String> = std::fs::read_dir(&root)
        .expect("read root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries.len(),
        3,
        "the root holds only the binary, the target and the file: {entries:?}"
    );
    root
}

/// `chroot ROOT /kmsenv ARGS…` with only the given environment.
fn in_root(root: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("/usr/sbin/chroot");
    cmd.env_clear().arg(root).arg("/kmsenv").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run chroot (we run as root)")
}

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ENDPOINT_URL_KMS", endpoint.into()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn the_static_binary_runs_in_an_empty_root_and_execs_the_target() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "DATABASE_URL", b"postgres://scratch");
    sandbox.set_with(&file, &["--plain"], "LOG_LEVEL", b"info");
    let root = scratch_root(&sandbox, &file);

    let env = aws_env(&moto().endpoint());
    let out = in_root(
        &root,
        &borrowed(&env),
        &["exec", "-f", "/kmsenv.toml", "--", "/printenv"],
    );

    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = parse_env0(&out.stdout);
    assert_eq!(seen["DATABASE_URL"], b"postgres://scratch");
    assert_eq!(seen["LOG_LEVEL"], b"info");
}

#[test]
fn without_a_system_certificate_store_the_embedded_roots_are_used() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"t");
    let root = scratch_root(&sandbox, &file);
    // An https endpoint that refuses connections: the TLS client is built (and
    // says which roots it uses) before the connection fails.
    let env = aws_env(&format!("https://127.0.0.1:{}", free_port()));
    let out = in_root(
        &root,
        &borrowed(&env),
        &[
            "-v",
            "--timeout",
            "5",
            "exec",
            "-f",
            "/kmsenv.toml",
            "--",
            "/printenv",
        ],
    );

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(
        stderr.contains("no system certificate store found; using the"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("embedded Mozilla roots"), "stderr: {stderr}");
}

#[test]
fn ssl_cert_file_wins_over_the_embedded_roots() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "TOKEN", b"t");
    let root = scratch_root(&sandbox, &file);
    // A CA bundle of our own inside the root, named by SSL_CERT_FILE.
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", root.join("ca.pem"))
        .expect("copy the system CA bundle");
    // Port 1: nothing listens there, and no other test can take it.
    let mut env = aws_env("https://127.0.0.1:1");
    env.push(("SSL_CERT_FILE", "/ca.pem".into()));
    let out = in_root(
        &root,
        &borrowed(&env),
        &[
            "-v",
            "--timeout",
            "5",
            "exec",
            "-f",
            "/kmsenv.toml",
            "--",
            "/printenv",
        ],
    );

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(stderr.contains("ConnectionError"), "stderr: {stderr}");
    assert!(!stderr.contains("embedded"), "SSL_CERT_FILE must win: {stderr}");
}
