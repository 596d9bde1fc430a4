//! kmsenv as a container's ENTRYPOINT, on a real Docker engine (DESIGN §6): images
//! `FROM scratch` holding the static kmsenv, the static test app
//! (tests/support/app.c) and the file; containers on `--network host`, talking to
//! moto_server on loopback. The engine is started by the test support when none
//! runs; without `dockerd` these tests fail, saying so.
//!
//! Needs the static binary (`make static`) and gcc with a static libc.

mod support;

use std::path::Path;

use support::docker::{Container, Image, build_image, docker, static_app};
use support::*;

const SECRET: &str = "sealed-secret-value";
const TLS_KEY: &str = "-----BEGIN KEY-----tls-file-value";

/// A file with a sealed value, a `file = true` value and a plain one; its key ARN.
fn secrets_file(sandbox: &Sandbox) -> (std::path::PathBuf, String) {
    let (file, key) = sandbox.new_file("kmsenv.toml");
    sandbox.set(&file, "SECRET", SECRET.as_bytes());
    sandbox.set_with(&file, &["--as-file"], "TLS_KEY", TLS_KEY.as_bytes());
    sandbox.set_with(&file, &["--plain"], "PLAIN", b"plain-value");
    (file, key)
}

/// `FROM scratch` with /kmsenv, /app and /kmsenv.toml, and the ENTRYPOINT
/// `/kmsenv exec --trust-key KEY -f /kmsenv.toml EXEC_FLAGS… --`.
fn image(file: &Path, key: &str, exec_flags: &[&str]) -> Image {
    let mut entrypoint = vec!["/kmsenv", "exec", "--trust-key", key, "-f", "/kmsenv.toml"];
    entrypoint.extend_from_slice(exec_flags);
    entrypoint.push("--");
    let dockerfile = format!(
        "FROM scratch\nCOPY kmsenv /kmsenv\nCOPY app /app\nCOPY kmsenv.toml /kmsenv.toml\nENTRYPOINT {}\n",
        serde_json::Value::from(entrypoint)
    );
    build_image(
        &dockerfile,
        &[
            ("kmsenv", &static_kmsenv()),
            ("app", static_app()),
            ("kmsenv.toml", file),
        ],
    )
}

/// `-e` options with test credentials and moto's endpoint on loopback.
fn aws_env() -> Vec<String> {
    [
        "AWS_ACCESS_KEY_ID=testing".to_string(),
        "AWS_SECRET_ACCESS_KEY=testing".to_string(),
        format!("AWS_REGION={REGION}"),
        "AWS_EC2_METADATA_DISABLED=true".to_string(),
        format!("AWS_ENDPOINT_URL_KMS={}", moto().endpoint()),
    ]
    .into_iter()
    .flat_map(|e| ["-e".to_string(), e])
    .collect()
}

/// `docker run --rm --network host [OPTIONS…] -e AWS… IMAGE ARGS…` to completion.
fn run(image: &Image, options: &[&str], args: &[&str]) -> Output {
    let mut all: Vec<String> = vec!["run".into(), "--rm".into(), "--network".into(), "host".into()];
    all.extend(options.iter().map(|s| s.to_string()));
    all.extend(aws_env());
    all.push(image.tag.clone());
    all.extend(args.iter().map(|s| s.to_string()));
    docker(all)
}

/// Starts a container in the background with the AWS settings.
fn start(image: &Image, options: &[&str], args: &[&str]) -> Container {
    let env = aws_env();
    let mut all: Vec<&str> = options.to_vec();
    all.extend(env.iter().map(String::as_str));
    all.push(&image.tag);
    all.extend_from_slice(args);
    Container::start(&all)
}

/// `key=value` lines of the app's output.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in the output:\n{text}"))
        .to_string()
}

#[test]
fn the_app_is_pid_1_with_its_secrets_and_a_file_value() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &[]);
    let out = run(&image, &[], &["/app", "report", "SECRET", "TLS_KEY", "PLAIN"]);
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "{}\n{}", text, out.stderr);
    assert_eq!(field(&text, "pid"), "1", "the app should be PID 1 itself");
    assert_eq!(field(&text, "SECRET"), SECRET);
    assert!(field(&text, "TLS_KEY").starts_with("/proc/self/fd/"), "{text}");
    assert_eq!(field(&text, "TLS_KEY:file"), TLS_KEY);
    assert_eq!(field(&text, "PLAIN"), "plain-value");
}

#[test]
fn docker_inspect_shows_the_file_and_aws_settings_never_a_value() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &[]);
    let container = start(&image, &[], &["/app", "wait-term", "0"]);
    container.wait_for_line("ready");
    let out = docker(["inspect", &container.id]);
    let text = out.stdout_text();
    assert!(
        text.contains("/kmsenv.toml") && text.contains("AWS_ENDPOINT_URL_KMS"),
        "{text}"
    );
    assert!(
        !text.contains(SECRET) && !text.contains("tls-file-value"),
        "a value in docker inspect"
    );
    let image_text = docker(["image", "inspect", &image.tag]).stdout_text();
    assert!(!image_text.contains(SECRET));
}

#[test]
fn read_only_root_no_capabilities_and_an_unprivileged_user_work() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &[]);
    let out = run(
        &image,
        &["--read-only", "--cap-drop", "ALL", "--user", "65534:65534"],
        &["/app", "report", "SECRET", "TLS_KEY"],
    );
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "{}\n{}", text, out.stderr);
    assert_eq!(field(&text, "uid"), "65534");
    assert_eq!(field(&text, "SECRET"), SECRET);
    assert_eq!(field(&text, "TLS_KEY:file"), TLS_KEY);
}

/// `docker stop` (SIGTERM to PID 1, SIGKILL after -t seconds): the app's handler
/// exits 42 at once, so the container's code is 42; a lost signal would end in
/// SIGKILL (137).
fn docker_stop_reaches_the_app(exec_flags: &[&str]) {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, exec_flags);
    let container = start(&image, &[], &["/app", "wait-term", "42"]);
    container.wait_for_line("ready");
    let stop = docker(["stop", "-t", "300", &container.id]);
    assert!(stop.status.success(), "docker stop: {}", stop.stderr);
    let code = container.wait();
    let logs = container.logs();
    assert_eq!(
        code, 42,
        "the container's code should be the app's; logs:\n{logs}"
    );
    assert!(
        logs.lines().any(|l| l == "term"),
        "the app's TERM handler did not run:\n{logs}"
    );
}

#[test]
fn docker_stop_runs_the_apps_term_handler_and_its_code_is_the_containers() {
    docker_stop_reaches_the_app(&[]);
}

#[test]
fn docker_stop_runs_the_apps_term_handler_through_init_and_its_code_is_the_containers() {
    docker_stop_reaches_the_app(&["--init"]);
}

#[test]
fn with_init_orphans_are_reaped() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &["--init"]);
    let out = run(&image, &[], &["/app", "orphans", "3", "reaped"]);
    let text = out.stdout_text();
    assert_eq!(
        out.code(),
        Some(0),
        "the orphans were never reaped:\n{}\n{}",
        text,
        out.stderr
    );
    assert_eq!(field(&text, "reaped"), "3");
    assert_eq!(field(&text, "zombies"), "0", "{text}");
}

#[test]
fn without_init_the_apps_orphans_stay_zombies() {
    // What --init is for: an app that is PID 1 and does not reap.
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &[]);
    let out = run(&image, &[], &["/app", "orphans", "3", "zombies"]);
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "{}\n{}", text, out.stderr);
    assert_eq!(field(&text, "zombies"), "3", "{text}");
}

#[test]
fn with_init_a_signal_storm_while_children_exit_loses_no_exit_code() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &["--init"]);
    let container = start(&image, &[], &["/app", "storm"]);
    container.wait_for_line("ready");
    // 500 SIGUSR1 to kmsenv (PID 1), from inside the container, while the app forks
    // and reaps children whose orphans kmsenv reaps.
    let storm = docker(["exec", &container.id, "/app", "kill-storm", "1", "10", "500"]);
    assert_eq!(
        storm.code(),
        Some(0),
        "kill-storm: {}{}",
        storm.stdout_text(),
        storm.stderr
    );
    let stop = docker(["stop", "-t", "300", &container.id]);
    assert!(stop.status.success(), "docker stop: {}", stop.stderr);
    let code = container.wait();
    let logs = container.logs();
    assert_eq!(code, 42, "the app's exit code was lost; logs:\n{logs}");
    assert_eq!(field(&logs, "bad"), "0", "{logs}");
    let usr1: u32 = field(&logs, "usr1").parse().expect("usr1 count");
    assert!(usr1 > 0, "no SIGUSR1 was forwarded:\n{logs}");
    assert!(field(&logs, "rounds").parse::<u64>().expect("rounds") > 0);
}

#[test]
fn user_with_numeric_ids_switches_as_root_and_the_file_value_stays_readable() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &["--user", "65534:65534"]);
    let out = run(&image, &["--read-only"], &["/app", "report", "SECRET", "TLS_KEY"]);
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "{}\n{}", text, out.stderr);
    assert_eq!(
        (field(&text, "uid"), field(&text, "gid")),
        ("65534".into(), "65534".into())
    );
    assert_eq!(field(&text, "groups"), "1");
    assert_eq!(field(&text, "pid"), "1");
    assert_eq!(field(&text, "SECRET"), SECRET);
    assert_eq!(field(&text, "TLS_KEY:file"), TLS_KEY);
}

#[test]
fn user_with_init_switches_the_child() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &["--init", "--user", "1000:2000"]);
    let out = run(&image, &[], &["/app", "report", "SECRET", "TLS_KEY"]);
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "{}\n{}", text, out.stderr);
    assert_eq!(
        (field(&text, "uid"), field(&text, "gid")),
        ("1000".into(), "2000".into())
    );
    assert_ne!(
        field(&text, "pid"),
        "1",
        "with --init kmsenv is PID 1, the app its child"
    );
    assert_eq!(field(&text, "TLS_KEY:file"), TLS_KEY);
}

#[test]
fn user_is_refused_with_125_when_the_container_does_not_start_as_root() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let image = image(&file, &key, &["--user", "65534"]);
    let out = run(&image, &["--user", "1000:1000"], &["/app", "report", "SECRET"]);
    assert_eq!(out.code(), Some(125), "{}\n{}", out.stdout_text(), out.stderr);
    assert!(out.stdout.is_empty(), "the app ran: {}", out.stdout_text());
    assert!(
        out.stderr.contains("--user 65534: setgroups failed"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(SECRET));
}

#[test]
fn a_secret_that_cannot_be_decrypted_fails_the_container_with_125_and_the_cause_in_the_logs() {
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    // A direct value encrypted for another name: KMS refuses it under this one.
    let blob = encrypt(REGION, &key, b"other-value", &[("kmsenv:var", "OTHER")]);
    let text = sandbox.read(&file);
    sandbox.write(
        &file,
        &insert_in_env(
            &text,
            &format!("API_TOKEN = {{ kms = \"{blob}\", key = \"{key}\", context = {{ \"kmsenv:var\" = \"API_TOKEN\" }} }}"),
        ),
    );
    let image = image(&file, &key, &[]);
    let container = start(&image, &[], &["/app", "report", "SECRET"]);
    let code = container.wait();
    let logs = container.logs();
    assert_eq!(code, 125, "logs:\n{logs}");
    assert!(
        logs.contains("API_TOKEN"),
        "the cause should name the variable:\n{logs}"
    );
    assert!(
        logs.contains("InvalidCiphertextException"),
        "and the AWS error code:\n{logs}"
    );
    assert!(!logs.contains("pid="), "the app must not have run:\n{logs}");
    assert!(!logs.contains(SECRET) && !logs.contains("other-value"));
}

/// The last stage of examples/docker/Dockerfile, with the binary built here
/// instead of in the `build` stage (nothing can be pulled) and the test's key as
/// the pin: the shape users copy must run as written.
#[test]
fn the_example_dockerfile_shape_runs_with_the_prebuilt_binary() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/docker/Dockerfile"))
            .expect("read examples/docker/Dockerfile");
    let last_stage = &example[example.rfind("\nFROM scratch").expect("a FROM scratch stage") + 1..];
    let example_key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    assert!(
        last_stage.contains(example_key),
        "the example pins its key:\n{last_stage}"
    );
    let sandbox = Sandbox::new();
    let (file, key) = secrets_file(&sandbox);
    let dockerfile = last_stage
        .replace(
            "COPY --from=build /src/target/x86_64-unknown-linux-musl/release/kmsenv /kmsenv",
            "COPY kmsenv /kmsenv",
        )
        .replace(example_key, &key);
    assert!(
        !dockerfile.contains("--from="),
        "the example's last stage changed shape:\n{last_stage}"
    );
    let image = build_image(
        &dockerfile,
        &[
            ("kmsenv", &static_kmsenv()),
            ("app", static_app()),
            ("kmsenv.toml", &file),
        ],
    );
    // CMD ["/app"]: the app prints its PID and environment.
    let out = run(&image, &[], &[]);
    let text = out.stdout_text();
    assert_eq!(out.code(), Some(0), "{}\n{}", text, out.stderr);
    assert_eq!(field(&text, "pid"), "1");
    assert_eq!(field(&text, "SECRET"), SECRET);
    assert_eq!(field(&text, "PLAIN"), "plain-value");
}
