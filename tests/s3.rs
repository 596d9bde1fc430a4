//! `-f s3://BUCKET/KEY` (issue 6 point 7): the file read from S3, which moto
//! serves on the same port as KMS. Objects are put there with the real AWS CLI,
//! as a deploy pipeline would. What moto does not do (a bucket in another
//! region, a hang, a refusal) comes from the fault proxy in front of it.
//!
//! S3 support is the `s3` cargo feature (`make test` builds the tests with it).
//! Without it, `s3://` is refused with a message saying so: checked here with
//! the test build when the feature is off, and always with the shipped static
//! binary, which `make static` builds without it.

mod support;

use std::path::PathBuf;

use support::*;

fn url_path(url: &str) -> PathBuf {
    PathBuf::from(url)
}

#[cfg(feature = "s3")]
mod with_the_feature {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NAME: &str = "API_TOKEN";
    const VALUE: &[u8] = b"fetched-from-s3-then-decrypted";

    /// A bucket of its own for each test (moto is shared by the test binary).
    fn new_bucket(sandbox: &Sandbox) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let bucket = format!(
            "kmsenv-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut create = aws_cli(sandbox);
        create.args(["s3api", "create-bucket", "--bucket", &bucket]);
        run_aws_cli(create, "s3api create-bucket");
        bucket
    }

    /// `aws s3 cp FILE s3://BUCKET/KEY`; returns the URL.
    fn upload(sandbox: &Sandbox, file: &Path, bucket: &str, key: &str) -> String {
        let url = format!("s3://{bucket}/{key}");
        let mut cp = aws_cli(sandbox);
        cp.args(["s3", "cp", "--only-show-errors"]).arg(file).arg(&url);
        run_aws_cli(cp, "s3 cp");
        url
    }

    /// A sealed file made locally, uploaded, and the local copy removed, so only
    /// S3 can supply it.
    fn file_in_s3(sandbox: &Sandbox, bucket: &str) -> String {
        let (file, _key) = sandbox.new_file("app.toml");
        sandbox.set(&file, NAME, VALUE);
        sandbox.set_with(&file, &["--plain"], "LOG_LEVEL=debug", b"");
        let url = upload(sandbox, &file, bucket, "prod/app.toml");
        std::fs::remove_file(&file).expect("remove the local copy");
        url
    }

    /// kmsenv with S3 at `endpoint` (KMS stays on moto).
    fn with_s3(sandbox: &Sandbox, endpoint: &str) -> Kmsenv {
        sandbox.kmsenv().env("AWS_ENDPOINT_URL_S3", endpoint)
    }

    /// A sandbox and the URL of its sealed file in S3.
    fn sandbox_with_file_in_s3() -> (Sandbox, String) {
        let sandbox = Sandbox::new();
        let bucket = new_bucket(&sandbox);
        let url = file_in_s3(&sandbox, &bucket);
        (sandbox, url)
    }

    /// Makes the proxy answer GETs signed for `region` (any, if `None`) as S3
    /// does when it refuses one: an XML error, and the bucket's region if given.
    fn s3_answers(
        proxy: &Proxy,
        region: Option<&str>,
        status: u16,
        bucket_region: Option<&str>,
        code: &str,
        message: &str,
    ) {
        let region = serde_json::Value::from(region);
        let moved = bucket_region
            .map(|r| format!(", \"x-amz-bucket-region\": {}", serde_json::Value::from(r)))
            .unwrap_or_default();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        );
        proxy.rules(&format!(
            r#"[{{"op": "s3:GET", "region": {region}, "action": "answer", "status": {status},
                 "headers": {{"Content-Type": "application/xml"{moved}}}, "body": {}}}]"#,
            serde_json::Value::from(body)
        ));
    }

    /// `exec` of a marker command with the file at `url`: asserted to fail
    /// closed (125, `needles` in stderr) without running the command.
    #[track_caller]
    fn fails_closed(sandbox: &Sandbox, run: Kmsenv, url: &str, needles: &[&str]) -> Output {
        let out = run
            .file(&url_path(url))
            .args(["exec", "--"])
            .args(sandbox.touch_marker_command())
            .run()
            .kmsenv_error(needles);
        sandbox.assert_command_did_not_run();
        out
    }

    #[test]
    fn exec_runs_the_command_with_values_from_a_file_in_s3() {
        let (sandbox, url) = sandbox_with_file_in_s3();
        let env = with_s3(&sandbox, &moto().endpoint())
            .file(&url_path(&url))
            .args(["exec", "--", "env", "-0"])
            .run()
            .ok()
            .env0();
        assert_eq!(env.get(NAME).map(Vec::as_slice), Some(VALUE));
        assert_eq!(env.get("LOG_LEVEL").map(Vec::as_slice), Some(&b"debug"[..]));
    }

    #[test]
    fn the_reading_commands_take_an_s3_file() {
        let (sandbox, url) = sandbox_with_file_in_s3();
        let run = || with_s3(&sandbox, &moto().endpoint()).file(&url_path(&url));

        let got = run().args(["get", NAME]).run().ok();
        assert_eq!(got.stdout, VALUE, "get prints the value");
        let listed = run().arg("list").run().ok().stdout_text();
        assert!(
            listed.contains(NAME) && listed.contains("LOG_LEVEL"),
            "list names both: {listed}"
        );
        run().arg("check").run().ok();
        let exported = run()
            .args(["export", "--format", "json"])
            .run()
            .ok()
            .stdout_text();
        assert!(exported.contains("fetched-from-s3-then-decrypted"), "{exported}");
    }

    #[test]
    fn an_s3_file_and_a_local_file_merge_in_order_also_from_kmsenv_file() {
        let (sandbox, url) = sandbox_with_file_in_s3();
        // The local file comes second and so wins for LOG_LEVEL.
        let local = sandbox.path("local.toml");
        sandbox.write(&local, "[kmsenv]\nversion = 2\n\n[env]\nLOG_LEVEL = \"trace\"\n");

        let by_flags = with_s3(&sandbox, &moto().endpoint())
            .file(&url_path(&url))
            .file(&local)
            .args(["exec", "--", "env", "-0"])
            .run()
            .ok()
            .env0();
        assert_eq!(by_flags.get(NAME).map(Vec::as_slice), Some(VALUE));
        assert_eq!(by_flags.get("LOG_LEVEL").map(Vec::as_slice), Some(&b"trace"[..]));

        // KMSENV_FILE is split on `:`, which an s3:// URL contains.
        let by_env = with_s3(&sandbox, &moto().endpoint())
            .env("KMSENV_FILE", format!("{url}:{}", local.display()))
            .args(["exec", "--", "env", "-0"])
            .run()
            .ok()
            .env0();
        assert_eq!(by_env, by_flags);
    }

    #[test]
    fn a_missing_object_or_bucket_fails_closed_naming_the_url_and_code() {
        let sandbox = Sandbox::new();
        let bucket = new_bucket(&sandbox);
        let missing = format!("s3://{bucket}/no/such.toml");
        let out = fails_closed(
            &sandbox,
            with_s3(&sandbox, &moto().endpoint()),
            &missing,
            &[&format!("{missing}: S3 GetObject failed: NoSuchKey"), "hint:"],
        );
        assert_eq!(
            out.stderr.lines().count(),
            2,
            "one line and a hint: {}",
            out.stderr
        );

        let no_bucket = "s3://kmsenv-no-such-bucket-anywhere/app.toml";
        fails_closed(
            &sandbox,
            with_s3(&sandbox, &moto().endpoint()),
            no_bucket,
            &[&format!("{no_bucket}: S3 GetObject failed: NoSuchBucket")],
        );
    }

    #[test]
    fn a_tampered_object_fails_closed_like_a_tampered_local_file() {
        let sandbox = Sandbox::new();
        let bucket = new_bucket(&sandbox);
        let (file, _key) = sandbox.new_file("app.toml");
        sandbox.set(&file, NAME, VALUE);
        sandbox.set_with(&file, &["--plain"], "LOG_LEVEL=debug", b"");
        let text = sandbox.read(&file);
        sandbox.write(&file, &replace_once(&text, "\"debug\"", "\"trace\""));
        let url = upload(&sandbox, &file, &bucket, "app.toml");
        fails_closed(
            &sandbox,
            with_s3(&sandbox, &moto().endpoint()),
            &url,
            &[&url, "MAC"],
        );
    }

    #[test]
    fn a_file_that_is_not_a_kmsenv_file_is_refused_with_its_url_and_line() {
        let sandbox = Sandbox::new();
        let bucket = new_bucket(&sandbox);
        let local = sandbox.path("broken.toml");
        sandbox.write(&local, "[kmsenv]\nversion = 2\n\n[env]\nlower-case = \"x\"\n");
        let url = upload(&sandbox, &local, &bucket, "broken.toml");
        with_s3(&sandbox, &moto().endpoint())
            .file(&url_path(&url))
            .args(["exec", "--", "true"])
            .run()
            .kmsenv_error(&[&format!("{url}:5:")]);
    }

    #[test]
    fn an_object_over_the_size_limit_is_refused() {
        let sandbox = Sandbox::new();
        let bucket = new_bucket(&sandbox);
        let big = sandbox.path("big.toml");
        let mut text = String::from("[kmsenv]\nversion = 2\n\n[env]\n# ");
        text.push_str(&"x".repeat(16 * 1024 * 1024));
        sandbox.write(&big, &text);
        let url = upload(&sandbox, &big, &bucket, "big.toml");
        with_s3(&sandbox, &moto().endpoint())
            .file(&url_path(&url))
            .args(["exec", "--", "true"])
            .run()
            .kmsenv_error(&[&url, "larger than 16777216 bytes"]);
    }

    #[test]
    fn writing_commands_refuse_an_s3_file_before_any_request() {
        let sandbox = Sandbox::new();
        let proxy = Proxy::start();
        let key = sandbox.key();
        let import = sandbox.path("in.env");
        sandbox.write(&import, "A=b\n");
        let url = "s3://some-bucket/app.toml";
        let commands: Vec<Vec<String>> = vec![
            vec!["set".into(), "--plain".into(), "A=b".into()],
            vec!["unset".into(), "A".into()],
            vec!["init".into(), "--key".into(), key.clone()],
            vec!["rotate".into()],
            vec!["keys".into(), "add".into(), key.clone()],
            vec!["keys".into(), "remove".into(), key.clone()],
            vec!["import".into(), import.display().to_string()],
            vec!["check".into(), "--fix-mac".into()],
            vec!["edit".into()],
        ];
        for args in commands {
            with_s3(&sandbox, &proxy.endpoint())
                .endpoint(&proxy.endpoint())
                .env("EDITOR", "true")
                .file(&url_path(url))
                .args(&args)
                .run()
                .kmsenv_error(&[&format!("writes a local file, and {url} is in S3"), "aws s3 cp"]);
        }
        // Nor does `import` read its dotenv source from S3.
        let local = sandbox.path("local.toml");
        sandbox.write(&local, "[kmsenv]\nversion = 2\n\n[env]\n");
        sandbox
            .kmsenv()
            .endpoint(&proxy.endpoint())
            .file(&local)
            .args(["import", url])
            .run()
            .kmsenv_error(&[
                &format!("{url}: `import` reads a local dotenv file or stdin"),
                "aws s3 cp",
            ]);
        assert_eq!(proxy.total(), 0, "no request should be made: {}", proxy.counts());
    }

    #[test]
    fn a_bucket_in_another_region_is_followed_there() {
        let (sandbox, url) = sandbox_with_file_in_s3();
        let proxy = Proxy::start();
        // S3's answer to a request signed for the wrong region.
        s3_answers(
            &proxy,
            Some("us-east-1"),
            301,
            Some("eu-west-1"),
            "PermanentRedirect",
            "The bucket you are attempting to access must be addressed using the specified endpoint.",
        );
        // An empty AWS_REGION is no region: S3 is asked in us-east-1.
        let env = with_s3(&sandbox, &proxy.endpoint())
            .env("AWS_REGION", "")
            .file(&url_path(&url))
            .args(["exec", "--", "env", "-0"])
            .run()
            .ok()
            .env0();
        assert_eq!(env.get(NAME).map(Vec::as_slice), Some(VALUE));
        let gets: Vec<(String, String)> = proxy
            .requests()
            .into_iter()
            .filter(|r| r.get("op").map(String::as_str) == Some("s3:GET"))
            .map(|r| (r["region"].clone(), r["status"].clone()))
            .collect();
        assert_eq!(
            gets,
            [
                ("us-east-1".into(), "301".into()),
                ("eu-west-1".into(), "200".into())
            ],
            "asked in us-east-1, then in the bucket's region"
        );
    }

    #[test]
    fn the_configured_region_is_asked_first_and_a_loop_of_redirects_fails() {
        let (sandbox, url) = sandbox_with_file_in_s3();
        let proxy = Proxy::start();
        s3_answers(
            &proxy,
            None,
            301,
            Some("ap-south-1"),
            "PermanentRedirect",
            "elsewhere",
        );
        // An empty AWS_REGION does not hide AWS_DEFAULT_REGION.
        with_s3(&sandbox, &proxy.endpoint())
            .env("AWS_REGION", "")
            .env("AWS_DEFAULT_REGION", "eu-central-1")
            .file(&url_path(&url))
            .args(["exec", "--", "true"])
            .run()
            .kmsenv_error(&[&url, "PermanentRedirect"]);
        let regions: Vec<String> = proxy
            .requests()
            .into_iter()
            .map(|r| r["region"].clone())
            .collect();
        assert_eq!(
            regions,
            ["eu-central-1", "ap-south-1"],
            "one redirect is followed, not more"
        );
    }

    #[test]
    fn refused_or_silent_s3_fails_closed_within_the_deadline() {
        let (sandbox, url) = sandbox_with_file_in_s3();
        let proxy = Proxy::start();

        s3_answers(&proxy, None, 403, None, "AccessDenied", "Access Denied");
        fails_closed(
            &sandbox,
            with_s3(&sandbox, &proxy.endpoint()),
            &url,
            &[
                &format!("{url}: S3 GetObject failed: AccessDenied"),
                "s3:GetObject",
            ],
        );

        proxy.rules(r#"[{"op": "s3:GET", "action": "hang"}]"#);
        fails_closed(
            &sandbox,
            with_s3(&sandbox, &proxy.endpoint()).args(["--timeout", "2"]),
            &url,
            &[&url, "TimeoutError", "hint: no answer from S3 in time"],
        );

        // Nothing listening: the hint is about S3, not KMS.
        // Port 1: nothing listens there, and no other test can take it.
        let closed = "http://127.0.0.1:1".to_string();
        fails_closed(
            &sandbox,
            with_s3(&sandbox, &closed),
            &url,
            &[
                &format!("{url}: S3 GetObject failed: ConnectionError"),
                "hint: cannot reach S3",
            ],
        );
    }

    #[test]
    fn credentials_are_fetched_once_and_sign_both_the_s3_and_the_kms_request() {
        let (sandbox, url) = sandbox_with_file_in_s3();
        let ecs = StandIn::start(
            "container",
            &[
                "--akid",
                "ASIAS3ANDKMS0001",
                "--token",
                "TOKEN-S3-KMS",
                "--path",
                "/creds",
            ],
        );
        let proxy = Proxy::start();
        // No region and no keys in the environment: the task role's credentials,
        // S3 asked in us-east-1, KMS in the region of the key ARN.
        let env = sandbox
            .kmsenv_without_aws()
            .env("AWS_CONFIG_FILE", sandbox.path("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", sandbox.path("no-aws-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs.url("/creds"))
            .env("AWS_ENDPOINT_URL_S3", proxy.endpoint())
            .endpoint(&proxy.endpoint())
            .file(&url_path(&url))
            .args(["exec", "--", "env", "-0"])
            .run()
            .ok()
            .env0();
        assert_eq!(env.get(NAME).map(Vec::as_slice), Some(VALUE));
        assert_eq!(ecs.log().len(), 1, "one credentials request: {:?}", ecs.log());
        let signed: Vec<(String, String, String)> = proxy
            .requests()
            .into_iter()
            .map(|r| (r["op"].clone(), r["akid"].clone(), r["token"].clone()))
            .collect();
        let by = |op: &str| {
            (
                op.to_string(),
                "ASIAS3ANDKMS0001".to_string(),
                "TOKEN-S3-KMS".to_string(),
            )
        };
        assert_eq!(signed, [by("s3:GET"), by("Decrypt")]);
    }
}

#[cfg(not(feature = "s3"))]
#[test]
fn without_the_feature_an_s3_file_is_refused_with_a_way_out() {
    let sandbox = Sandbox::new();
    sandbox
        .kmsenv()
        .file(&url_path("s3://bucket/app.toml"))
        .args(["exec", "--"])
        .args(sandbox.touch_marker_command())
        .run()
        .kmsenv_error(&[
            "s3://bucket/app.toml: this kmsenv was built without S3 support",
            "make static-full",
        ]);
    sandbox.assert_command_did_not_run();
}

/// The static binary of `make static` is built without S3 and says so, before
/// any AWS configuration is loaded (the endpoint here is a closed port).
#[test]
fn the_default_static_binary_refuses_s3_files_and_names_the_full_build() {
    let sandbox = Sandbox::new();
    let out = std::process::Command::new(static_kmsenv())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{}", free_port()))
        .args(["-f", "s3://bucket/app.toml", "exec", "--"])
        .args(sandbox.touch_marker_command())
        .output()
        .expect("run the static binary");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("kmsenv: s3://bucket/app.toml: this kmsenv was built without S3 support"),
        "{stderr}"
    );
    assert!(stderr.contains("make static-full"), "{stderr}");
    sandbox.assert_command_did_not_run();
}
