//! examples/kubernetes/ and examples/ecs/ cannot run here (no cluster, no ECS), so
//! they are parsed and the fields that decide whether they work are checked: the
//! binary's path where the app's command finds it, the command wrapped by
//! `kmsenv exec --init --trust-key … --`, the roles, the environment. The Kubernetes
//! manifests are written as JSON (which kubectl accepts) so that serde_json parses
//! them exactly; no YAML parser is involved.

use serde_json::Value;
use std::path::Path;

fn load(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect()
}

/// `kmsenv exec --init --trust-key <key ARN> -f <file> --`, as the examples wrap the app.
fn assert_wrapped(entry: &[&str], binary: &str) {
    assert_eq!(entry[..3], [binary, "exec", "--init"], "{entry:?}");
    let pin = entry
        .iter()
        .position(|a| *a == "--trust-key")
        .expect("a trust pin");
    assert!(
        entry[pin + 1].starts_with("arn:aws:kms:") && entry[pin + 1].contains(":key/"),
        "{entry:?}"
    );
    assert_eq!(
        entry.last(),
        Some(&"--"),
        "the app's command comes after --: {entry:?}"
    );
    assert!(
        entry
            .windows(2)
            .any(|w| w[0] == "-f" && w[1].ends_with("kmsenv.toml")),
        "{entry:?}"
    );
}

#[test]
fn the_kubernetes_deployment_copies_kmsenv_into_an_empty_dir_and_wraps_the_app() {
    let d = load("examples/kubernetes/deployment.json");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "billing");
    let volume = &pod["volumes"][0];
    assert!(volume["emptyDir"].is_object(), "{volume}");
    let name = volume["name"].as_str().expect("volume name");

    let init = &pod["initContainers"][0];
    let copy = strings(&init["command"]);
    assert_eq!(copy[0], "cp");
    let mount = init["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == name)
        .expect("the init container mounts the emptyDir");
    let dir = mount["mountPath"].as_str().expect("mountPath");
    let installed = copy.last().expect("cp target");
    assert!(
        installed.starts_with(&format!("{dir}/")),
        "{installed} is not in {dir}"
    );

    let app = &pod["containers"][0];
    let app_mount = app["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == name)
        .expect("the app mounts the emptyDir");
    assert_eq!(app_mount["mountPath"].as_str(), Some(dir));
    assert_eq!(app_mount["readOnly"], true);
    let command = strings(&app["command"]);
    assert_wrapped(&command, installed);
    assert!(
        !strings(&app["args"]).is_empty(),
        "the app's own command is in args"
    );
    assert!(
        app["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "AWS_REGION")
    );
    assert_eq!(app["securityContext"]["readOnlyRootFilesystem"], true);
}

#[test]
fn the_kubernetes_examples_show_irsa_and_pod_identity_for_the_same_service_account() {
    let sa = load("examples/kubernetes/serviceaccount.json");
    let role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .expect("IRSA annotation");
    assert!(role.starts_with("arn:aws:iam::"));
    let association = load("examples/kubernetes/pod-identity-association.json");
    assert_eq!(association["serviceAccount"], sa["metadata"]["name"]);
    assert_eq!(association["roleArn"].as_str(), Some(role));
}

#[test]
fn the_ecs_task_definition_has_the_task_role_and_the_entry_point() {
    let t = load("examples/ecs/task-definition.json");
    assert!(
        t["taskRoleArn"]
            .as_str()
            .expect("taskRoleArn")
            .starts_with("arn:aws:iam::")
    );
    let c = &t["containerDefinitions"][0];
    assert_wrapped(&strings(&c["entryPoint"]), "/kmsenv");
    assert!(!strings(&c["command"]).is_empty());
    assert!(
        c["environment"]
            .as_array()
            .expect("environment")
            .iter()
            .any(|e| e["name"] == "AWS_REGION")
    );
    assert_eq!(c["readonlyRootFilesystem"], true);
}

/// The statements of `examples/iam/references-policy.json` with `action`.
fn statements_with<'a>(policy: &'a Value, action: &str) -> Vec<&'a Value> {
    policy["Statement"]
        .as_array()
        .expect("Statement array")
        .iter()
        .filter(|s| s["Action"] == action)
        .collect()
}

/// A statement's `Resource` as a list (a string is a list of one).
fn resources(statement: &Value) -> Vec<&str> {
    match &statement["Resource"] {
        Value::String(one) => vec![one.as_str()],
        many => strings(many),
    }
}

/// The IAM policy for references (README, "Secrets that AWS rotates"): what
/// kmsenv calls, each on as little as the API allows; KMS only through the two
/// services, for the referenced secrets and parameters.
#[test]
fn the_references_policy_grants_each_read_on_what_is_referenced_and_kms_only_via_the_services() {
    let policy = load("examples/iam/references-policy.json");
    assert_eq!(policy["Version"], "2012-10-17");
    for statement in policy["Statement"].as_array().expect("Statement array") {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        assert!(
            statement["Sid"].is_string(),
            "every statement says why: {statement}"
        );
    }

    // BatchGetSecretValue has no resource type: "*" is the only form IAM accepts.
    let batch = statements_with(&policy, "secretsmanager:BatchGetSecretValue");
    assert_eq!(batch.len(), 1);
    assert_eq!(resources(batch[0]), ["*"]);
    // The batch call checks GetSecretValue per secret: that one names each secret.
    let get = statements_with(&policy, "secretsmanager:GetSecretValue");
    assert_eq!(get.len(), 1);
    let secrets = resources(get[0]);
    assert!(!secrets.is_empty());
    for arn in &secrets {
        assert!(
            arn.starts_with("arn:aws:secretsmanager:") && arn.contains(":secret:"),
            "{arn}"
        );
        assert!(
            !arn.contains('*'),
            "one secret per ARN, its suffix as ??????: {arn}"
        );
    }
    let params = statements_with(&policy, "ssm:GetParameters");
    assert_eq!(params.len(), 1);
    for arn in resources(params[0]) {
        assert!(
            arn.starts_with("arn:aws:ssm:") && arn.contains(":parameter/"),
            "{arn}"
        );
        assert!(!arn.contains('*'), "no path or prefix: {arn}");
    }

    let decrypt = statements_with(&policy, "kms:Decrypt");
    let via: Vec<&str> = decrypt
        .iter()
        .map(|s| {
            assert!(
                resources(s)
                    .iter()
                    .all(|r| r.starts_with("arn:aws:kms:") && r.contains(":key/")),
                "a key ARN, not *: {s}"
            );
            s["Condition"]["StringEquals"]["kms:ViaService"]
                .as_str()
                .unwrap_or_else(|| panic!("kms:Decrypt only via a service: {s}"))
        })
        .collect();
    assert_eq!(
        via,
        [
            "secretsmanager.us-east-1.amazonaws.com",
            "ssm.us-east-1.amazonaws.com"
        ]
    );
    // The services' own encryption contexts, as CloudTrail records them.
    assert_eq!(
        strings(&decrypt[0]["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]),
        secrets
    );
    assert!(decrypt[1]["Condition"]["StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"].is_string());
}
