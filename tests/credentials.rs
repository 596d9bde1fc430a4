//! Every credential source of the AWS SDK's default chain, each against a local
//! stand-in, each proven by *who signed the KMS call*: the fault proxy
//! (tests/support/kms_fault_proxy.py) in front of moto records, per request, the
//! access key id of the SigV4 `Authorization` header and the
//! `X-Amz-Security-Token`, and every test asserts they are exactly the ones its
//! source handed out — and that the value was really decrypted.
//!
//! Files are made with the fixture's static credentials against moto directly
//! (moto does not check signatures); the run under test has no AWS variables but
//! the ones of its source, HOME / AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE in
//! its own temp dir, and IMDS disabled unless IMDS is the source under test.
//!
//! Sources: static environment keys; profiles (credentials file, config file,
//! `--profile` and `AWS_PROFILE`, the profile's region); `credential_process`;
//! a profile that assumes a role (STS `AssumeRole` in moto); IAM Identity
//! Center (SSO) with a cached token; web identity / EKS IRSA (STS
//! `AssumeRoleWithWebIdentity` in moto); container credentials (ECS with a
//! token, EKS Pod Identity with a token file); IMDSv2. And: with credentials and
//! region in the environment, IMDS is never asked.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const NAME: &str = "API_TOKEN";
const VALUE: &[u8] = b"decrypted-through-kms";
const NONE: &str = "(none)";
const ACCOUNT: &str = "123456789012";

/// A file with one sealed value, made with static credentials against moto directly.
const SEALED_FILE: &[Entry] = &[sealed(NAME, VALUE)];

/// kmsenv without any AWS configuration but a KMS endpoint: HOME and the two
/// AWS files in the sandbox (absent unless the test writes them), IMDS off.
fn bare(sandbox: &Sandbox, kms_endpoint: &str) -> Kmsenv {
    sandbox
        .kmsenv_without_aws()
        .env("AWS_CONFIG_FILE", sandbox.path("aws/config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", sandbox.path("aws/credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .endpoint(kms_endpoint)
}

/// Writes `aws/config` (and `aws/credentials` when given) in the sandbox.
fn aws_files(sandbox: &Sandbox, config: &str, credentials: Option<&str>) {
    std::fs::create_dir_all(sandbox.path("aws")).expect("create aws dir");
    sandbox.write(&sandbox.path("aws/config"), config);
    if let Some(credentials) = credentials {
        sandbox.write(&sandbox.path("aws/credentials"), credentials);
    }
}

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

/// The KMS `Decrypt` requests the proxy saw.
fn decrypts(proxy: &Proxy) -> Vec<BTreeMap<String, String>> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r["op"] == "Decrypt")
        .collect()
}

/// Asserts that every request the proxy saw was a `Decrypt` signed with access
/// key id `akid` and carrying session token `token` (`None`: no token header).
#[track_caller]
fn assert_signed_by(proxy: &Proxy, akid: &str, token: Option<&str>) {
    let token = token.unwrap_or(NONE);
    let n = decrypts(proxy).len() as u64;
    assert!(n >= 1, "no Decrypt reached the proxy: {}", proxy.counts());
    assert_eq!(
        proxy.akids(),
        BTreeMap::from([(akid.to_string(), n)]),
        "every KMS call should be signed by {akid}"
    );
    assert_eq!(
        proxy.tokens(),
        BTreeMap::from([(token.to_string(), n)]),
        "every KMS call should carry session token {token}"
    );
}

/// The single request of operation `op` the proxy saw.
#[track_caller]
fn only_request(proxy: &Proxy, op: &str) -> BTreeMap<String, String> {
    let found: Vec<_> = proxy.requests().into_iter().filter(|r| r["op"] == op).collect();
    assert_eq!(found.len(), 1, "expected one {op}: {found:#?}");
    found.into_iter().next().expect("one")
}

/// `tests/support/aws_standins.py` log lines, for failure messages.
fn show(log: &[String]) -> String {
    log.join("\n")
}

// ---------------------------------------------------------------------------
// Environment, profiles, credential_process

#[test]
fn static_keys_from_the_environment() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let proxy = Proxy::start();

    let env_keys = |run: Kmsenv| {
        run.env("AWS_ACCESS_KEY_ID", "AKIDENVSTATIC0001")
            .env("AWS_SECRET_ACCESS_KEY", "env-static-secret")
    };
    assert_decrypts(
        env_keys(bare(&sandbox, &proxy.endpoint())).env("AWS_SESSION_TOKEN", "TOKEN-ENV-STATIC-0001"),
        &file,
    );
    assert_signed_by(&proxy, "AKIDENVSTATIC0001", Some("TOKEN-ENV-STATIC-0001"));

    // Long-term keys: no session token header at all.
    proxy.reset();
    assert_decrypts(env_keys(bare(&sandbox, &proxy.endpoint())), &file);
    assert_signed_by(&proxy, "AKIDENVSTATIC0001", None);

    // Without them, the chain has nothing (IMDS is off): exit 125, nothing sent.
    proxy.reset();
    bare(&sandbox, &proxy.endpoint())
        .file(&file)
        .args(["exec", "--", "true"])
        .run()
        .kmsenv_error(&["CredentialsError"]);
    assert_eq!(proxy.total(), 0, "{}", proxy.counts());
}

const PROFILE_CREDENTIALS: &str = "\
[default]
aws_access_key_id = AKIDDEFAULTDECOY01
aws_secret_access_key = default-secret

[kmsenv-ci]
aws_access_key_id = AKIDPROFILECI00001
aws_secret_access_key = profile-ci-secret
aws_session_token = TOKEN-PROFILE-CI-0001
";

const PROFILE_CONFIG: &str = "\
[default]
region = us-east-1

[profile kmsenv-ci]
region = us-east-1

[profile from-config]
aws_access_key_id = AKIDCONFIGFILE0001
aws_secret_access_key = config-file-secret
aws_session_token = TOKEN-CONFIG-FILE-0001
";

#[test]
fn profile_chosen_with_profile_flag_or_aws_profile() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    aws_files(&sandbox, PROFILE_CONFIG, Some(PROFILE_CREDENTIALS));
    let proxy = Proxy::start();

    // --profile NAME, keys in AWS_SHARED_CREDENTIALS_FILE.
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint()).args(["--profile", "kmsenv-ci"]),
        &file,
    );
    assert_signed_by(&proxy, "AKIDPROFILECI00001", Some("TOKEN-PROFILE-CI-0001"));

    // The same profile chosen with AWS_PROFILE.
    proxy.reset();
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint()).env("AWS_PROFILE", "kmsenv-ci"),
        &file,
    );
    assert_signed_by(&proxy, "AKIDPROFILECI00001", Some("TOKEN-PROFILE-CI-0001"));

    // --profile wins over AWS_PROFILE.
    proxy.reset();
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint())
            .env("AWS_PROFILE", "default")
            .args(["--profile", "kmsenv-ci"]),
        &file,
    );
    assert_signed_by(&proxy, "AKIDPROFILECI00001", Some("TOKEN-PROFILE-CI-0001"));

    // Keys in AWS_CONFIG_FILE itself.
    proxy.reset();
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint()).args(["--profile", "from-config"]),
        &file,
    );
    assert_signed_by(&proxy, "AKIDCONFIGFILE0001", Some("TOKEN-CONFIG-FILE-0001"));

    // Control: with no profile named, [default] signs — so the files are read
    // and the choice above is what picked the keys.
    proxy.reset();
    assert_decrypts(bare(&sandbox, &proxy.endpoint()), &file);
    assert_signed_by(&proxy, "AKIDDEFAULTDECOY01", None);

    // A profile that does not exist is an error, not a fallback to [default].
    proxy.reset();
    bare(&sandbox, &proxy.endpoint())
        .args(["--profile", "no-such-profile"])
        .file(&file)
        .args(["exec", "--", "true"])
        .run()
        .kmsenv_error(&[]);
    assert_eq!(proxy.total(), 0, "{}", proxy.counts());
}

/// The key id of a key ARN (`arn:aws:kms:R:A:key/ID` → `ID`).
fn key_id(arn: &str) -> String {
    arn.rsplit_once("key/")
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| panic!("not a key ARN: {arn}"))
}

/// A keyless file whose value is a raw KMS ciphertext pinned to a *bare* key id:
/// the region must come from the configuration.
fn bare_key_file(sandbox: &Sandbox, name: &str, region: &str) -> PathBuf {
    let arn = create_key(region);
    let blob = encrypt(region, &arn, VALUE, &[]);
    let file = sandbox.path(name);
    let entry = format!("{NAME} = {{ kms = \"{blob}\", key = \"{}\" }}", key_id(&arn));
    sandbox.write(&file, &keyless_file(&[&entry]));
    file
}

#[test]
fn a_profiles_region_is_used_for_a_bare_key_id_and_region_overrides_it() {
    const EU: &str = "eu-west-1";
    const WEST: &str = "us-west-2";
    let sandbox = Sandbox::new();
    let eu_file = bare_key_file(&sandbox, "eu.toml", EU);
    let west_file = bare_key_file(&sandbox, "west.toml", WEST);
    aws_files(
        &sandbox,
        "[profile regional]\n\
         region = eu-west-1\n\
         aws_access_key_id = AKIDREGIONAL000001\n\
         aws_secret_access_key = regional-secret\n",
        None,
    );
    let proxy = Proxy::start();

    for choose in [
        bare(&sandbox, &proxy.endpoint()).args(["--profile", "regional"]),
        bare(&sandbox, &proxy.endpoint()).env("AWS_PROFILE", "regional"),
    ] {
        proxy.reset();
        assert_decrypts(choose, &eu_file);
        assert_signed_by(&proxy, "AKIDREGIONAL000001", None);
        assert_eq!(
            proxy.regions(),
            BTreeMap::from([(EU.to_string(), 1)]),
            "the bare key id should be used in the profile's region"
        );
    }

    // --region overrides the profile's region.
    proxy.reset();
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint()).args(["--profile", "regional", "--region", WEST]),
        &west_file,
    );
    assert_eq!(
        proxy.regions(),
        BTreeMap::from([(WEST.to_string(), 1)]),
        "--region should win over the profile's region"
    );

    // Control: the same file without --region is looked up in eu-west-1, where
    // moto has no such key — so the region really decides.
    proxy.reset();
    bare(&sandbox, &proxy.endpoint())
        .args(["--profile", "regional"])
        .file(&west_file)
        .args(["exec", "--", "true"])
        .run()
        .kmsenv_error(&["NotFoundException"]);
    assert!(proxy.count_region(EU) >= 1, "{}", proxy.counts());
    assert_eq!(proxy.count_region(WEST), 0, "{}", proxy.counts());
}

#[test]
fn credential_process_in_a_profile() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let ran = sandbox.path("credential-process-ran");
    let helper = sandbox.write_executable(
        "bin/credentials-helper",
        &format!(
            "#!/bin/sh\n\
             printf '%s\\n' \"$*\" >> '{}'\n\
             printf '%s' '{{\"Version\": 1, \"AccessKeyId\": \"AKIDPROCESS0000001\", \
             \"SecretAccessKey\": \"process-secret\", \"SessionToken\": \"TOKEN-PROCESS-0001\"}}'\n",
            ran.display()
        ),
    );
    aws_files(
        &sandbox,
        &format!(
            "[profile tooling]\ncredential_process = {} --role kmsenv-ci\n",
            helper.display()
        ),
        None,
    );
    let proxy = Proxy::start();

    assert_decrypts(
        bare(&sandbox, &proxy.endpoint()).args(["--profile", "tooling"]),
        &file,
    );
    assert_signed_by(&proxy, "AKIDPROCESS0000001", Some("TOKEN-PROCESS-0001"));
    assert_eq!(
        sandbox.read(&ran),
        "--role kmsenv-ci\n",
        "the credential process should have run exactly once, with its arguments"
    );

    proxy.reset();
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint()).env("AWS_PROFILE", "tooling"),
        &file,
    );
    assert_signed_by(&proxy, "AKIDPROCESS0000001", Some("TOKEN-PROCESS-0001"));
    assert_eq!(sandbox.read(&ran).lines().count(), 2);
}

#[test]
fn profile_that_assumes_a_role_through_sts() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/kmsenv-deployer");
    aws_files(
        &sandbox,
        &format!(
            "[profile base]\n\
             aws_access_key_id = AKIDSOURCEPROFILE1\n\
             aws_secret_access_key = source-secret\n\
             \n\
             [profile deploy]\n\
             role_arn = {role}\n\
             source_profile = base\n\
             role_session_name = kmsenv-assume-test\n\
             region = us-east-1\n"
        ),
        None,
    );
    // STS and KMS both go through the proxy, to moto.
    let proxy = Proxy::start();
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint())
            .env("AWS_ENDPOINT_URL_STS", proxy.endpoint())
            .args(["--profile", "deploy"]),
        &file,
    );

    let assume = only_request(&proxy, "AssumeRole");
    assert_eq!(
        assume["akid"], "AKIDSOURCEPROFILE1",
        "AssumeRole is signed by the source profile"
    );
    assert_eq!(assume["form.RoleArn"], role);
    assert_eq!(assume["form.RoleSessionName"], "kmsenv-assume-test");
    assert_eq!(assume["status"], "200");
    let (akid, token) = (&assume["issued_akid"], &assume["issued_token"]);
    assert!(
        akid.starts_with("ASIA"),
        "moto should issue temporary keys: {assume:#?}"
    );
    for decrypt in decrypts(&proxy) {
        assert_eq!(&decrypt["akid"], akid, "Decrypt must use the assumed role's keys");
        assert_eq!(
            &decrypt["token"], token,
            "Decrypt must carry the assumed role's token"
        );
    }
    assert!(!decrypts(&proxy).is_empty());
}

/// SHA-1 of `text` in hex (the SSO token cache's file name), via Python.
fn sha1_hex(text: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib, sys; print(hashlib.sha1(sys.argv[1].encode()).hexdigest())",
            text,
        ])
        .output()
        .expect("run python3");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("hex").trim().to_string()
}

#[test]
fn sso_profile_with_a_cached_token() {
    const START_URL: &str = "https://kmsenv-test.awsapps.com/start";
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let sso = StandIn::start(
        "sso",
        &[
            "--akid",
            "ASIASSOROLE0000001",
            "--token",
            "TOKEN-SSO-0001",
            "--role",
            "KmsenvReader",
            "--account",
            ACCOUNT,
            "--bearer",
            "kmsenv-cached-sso-access-token",
        ],
    );
    aws_files(
        &sandbox,
        &format!(
            "[profile sso]\n\
             sso_start_url = {START_URL}\n\
             sso_region = us-east-1\n\
             sso_account_id = {ACCOUNT}\n\
             sso_role_name = KmsenvReader\n\
             region = us-east-1\n"
        ),
        None,
    );
    // What `aws sso login` leaves behind: ~/.aws/sso/cache/<sha1(start URL)>.json.
    let cache = sandbox.path(".aws/sso/cache");
    std::fs::create_dir_all(&cache).expect("create sso cache");
    sandbox.write(
        &cache.join(format!("{}.json", sha1_hex(START_URL))),
        &format!(
            "{{\"startUrl\": \"{START_URL}\", \"region\": \"us-east-1\", \
             \"accessToken\": \"kmsenv-cached-sso-access-token\", \"expiresAt\": \"2099-01-01T00:00:00Z\"}}"
        ),
    );
    let proxy = Proxy::start();

    assert_decrypts(
        bare(&sandbox, &proxy.endpoint())
            .env("AWS_ENDPOINT_URL_SSO", sso.url(""))
            .args(["--profile", "sso"]),
        &file,
    );
    assert_signed_by(&proxy, "ASIASSOROLE0000001", Some("TOKEN-SSO-0001"));
    let log = sso.log();
    assert_eq!(log.len(), 1, "one GetRoleCredentials:\n{}", show(&log));
    assert!(
        log[0].starts_with("GET /federation/credentials?")
            && log[0].contains("role_name=KmsenvReader")
            && log[0].contains(&format!("account_id={ACCOUNT}"))
            && log[0].ends_with(" bearer=kmsenv-cached-sso-access-token -> 200"),
        "the portal should get the cached token:\n{}",
        show(&log)
    );
}

// ---------------------------------------------------------------------------
// Web identity (EKS IRSA)

#[test]
fn web_identity_token_file_and_role_arn() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let token_file = sandbox.path("eks/token");
    std::fs::create_dir_all(sandbox.path("eks")).expect("create dir");
    // Moto does not check the JWT; its content only has to arrive.
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a21zZW52In0.c2lnbmF0dXJl";
    sandbox.write(&token_file, jwt);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/kmsenv-irsa");

    // STS and KMS both go through the proxy, to moto.
    let proxy = Proxy::start();
    assert_decrypts(
        bare(&sandbox, &proxy.endpoint())
            .env("AWS_ENDPOINT_URL_STS", proxy.endpoint())
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
            .env("AWS_ROLE_ARN", &role)
            .env("AWS_ROLE_SESSION_NAME", "kmsenv-irsa-session")
            .env("AWS_REGION", REGION)
            .env("AWS_DEFAULT_REGION", REGION),
        &file,
    );

    let sts = only_request(&proxy, "AssumeRoleWithWebIdentity");
    assert_eq!(sts["akid"], NONE, "AssumeRoleWithWebIdentity is not signed");
    assert_eq!(sts["form.RoleArn"], role);
    assert_eq!(sts["form.RoleSessionName"], "kmsenv-irsa-session");
    assert_eq!(
        sts["form.WebIdentityToken"], jwt,
        "the token file's content is sent"
    );
    assert_eq!(sts["status"], "200");
    let (akid, token) = (&sts["issued_akid"], &sts["issued_token"]);
    assert!(
        akid.starts_with("ASIA") && !token.is_empty(),
        "moto should issue temporary credentials: {sts:#?}"
    );
    let decrypts = decrypts(&proxy);
    assert!(!decrypts.is_empty(), "{}", proxy.counts());
    for decrypt in &decrypts {
        assert_eq!(&decrypt["akid"], akid, "Decrypt must use the keys STS issued");
        assert_eq!(
            &decrypt["token"], token,
            "Decrypt must carry the token STS issued"
        );
    }
    assert_eq!(proxy.count_op("AssumeRoleWithWebIdentity"), 1);
}

// ---------------------------------------------------------------------------
// Container credentials (ECS, EKS Pod Identity)

#[test]
fn container_credentials_full_uri_with_authorization_token() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let ecs = StandIn::start(
        "container",
        &[
            "--akid",
            "ASIACONTAINERECS01",
            "--token",
            "TOKEN-ECS-0001",
            "--path",
            "/v2/credentials/kmsenv-task",
        ],
    );
    let proxy = Proxy::start();

    assert_decrypts(
        bare(&sandbox, &proxy.endpoint())
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                ecs.url("/v2/credentials/kmsenv-task"),
            )
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "kmsenv-ecs-auth-token"),
        &file,
    );
    assert_signed_by(&proxy, "ASIACONTAINERECS01", Some("TOKEN-ECS-0001"));
    let log = ecs.log();
    assert_eq!(
        log,
        ["GET /v2/credentials/kmsenv-task authorization=kmsenv-ecs-auth-token -> 200"],
        "one credentials request, with the authorization token"
    );
}

#[test]
fn container_credentials_with_authorization_token_file_as_eks_pod_identity() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let agent = StandIn::start(
        "container",
        &[
            "--akid",
            "ASIAPODIDENTITY001",
            "--token",
            "TOKEN-POD-IDENTITY-0001",
            "--path",
            "/v1/credentials",
        ],
    );
    let token_file = sandbox.path("eks-pod-identity-token");
    sandbox.write(&token_file, "kmsenv-pod-identity-jwt");
    let proxy = Proxy::start();

    assert_decrypts(
        bare(&sandbox, &proxy.endpoint())
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url("/v1/credentials"))
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file),
        &file,
    );
    assert_signed_by(&proxy, "ASIAPODIDENTITY001", Some("TOKEN-POD-IDENTITY-0001"));
    assert_eq!(
        agent.log(),
        ["GET /v1/credentials authorization=kmsenv-pod-identity-jwt -> 200"],
        "one credentials request, with the token file's content"
    );
}

// ---------------------------------------------------------------------------
// IMDS

const IMDS_TOKEN: &str = "kmsenv-imds-session-token";

#[test]
fn imds_v2_instance_role() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    let imds = StandIn::start(
        "imds",
        &[
            "--akid",
            "ASIAIMDSROLE000001",
            "--token",
            "TOKEN-IMDS-0001",
            "--role",
            "kmsenv-node-role",
        ],
    );
    let proxy = Proxy::start();

    assert_decrypts(
        bare(&sandbox, &proxy.endpoint())
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url("")),
        &file,
    );
    assert_signed_by(&proxy, "ASIAIMDSROLE000001", Some("TOKEN-IMDS-0001"));

    let log = imds.log();
    let first = log.first().map(String::as_str).unwrap_or_default();
    let token_fetch = |l: &str| l.starts_with("PUT /latest/api/token ttl=") && l.ends_with(" token=- -> 200");
    assert!(
        token_fetch(first),
        "the session token must be fetched first:\n{}",
        show(&log)
    );
    let with_token = format!(" ttl=- token={IMDS_TOKEN} -> 200");
    let list = format!("GET /latest/meta-data/iam/security-credentials/{with_token}");
    let role = format!("GET /latest/meta-data/iam/security-credentials/kmsenv-node-role{with_token}");
    // The SDK's IMDS client waits 1 s for an answer and tries again: on a loaded
    // machine a token fetch may be repeated.
    for line in &log[1..] {
        assert!(
            *line == list || *line == role || token_fetch(line),
            "after the token, only the credentials paths, with the token:\n{}",
            show(&log)
        );
    }
    let at_list = log.iter().position(|l| *l == list);
    let at_role = log.iter().position(|l| *l == role);
    assert!(
        matches!((at_list, at_role), (Some(a), Some(b)) if a < b),
        "the role name is listed, then its credentials fetched:\n{}",
        show(&log)
    );
}

#[test]
fn with_credentials_and_region_in_the_environment_imds_is_never_asked() {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.file_with("app.toml", SEALED_FILE);
    aws_files(&sandbox, PROFILE_CONFIG, Some(PROFILE_CREDENTIALS));
    let imds = StandIn::start("imds", &["--akid", "ASIAIMDSSHOULDNOT1"]);
    let proxy = Proxy::start();
    let with_imds = || {
        bare(&sandbox, &proxy.endpoint())
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url(""))
    };

    // Keys and region from the environment.
    assert_decrypts(
        with_imds()
            .env("AWS_ACCESS_KEY_ID", "AKIDENVNOIMDS00001")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_REGION", REGION),
        &file,
    );
    assert_signed_by(&proxy, "AKIDENVNOIMDS00001", None);
    assert_eq!(imds.log(), Vec::<String>::new(), "IMDS must not be contacted");

    // Keys and region from a profile.
    proxy.reset();
    assert_decrypts(with_imds().args(["--profile", "kmsenv-ci"]), &file);
    assert_signed_by(&proxy, "AKIDPROFILECI00001", Some("TOKEN-PROFILE-CI-0001"));
    assert_eq!(imds.log(), Vec::<String>::new(), "IMDS must not be contacted");

    // Control: without keys (no credentials file either) the same setup does
    // reach the stand-in, so the silence above is not an unreachable IMDS.
    proxy.reset();
    assert_decrypts(
        with_imds()
            .env("AWS_SHARED_CREDENTIALS_FILE", sandbox.path("aws/absent"))
            .env("AWS_REGION", REGION),
        &file,
    );
    assert_signed_by(&proxy, "ASIAIMDSSHOULDNOT1", Some("standin-session-token"));
    assert!(!imds.log().is_empty());
}
