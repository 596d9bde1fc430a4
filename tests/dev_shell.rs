//! Dev shells: `examples/direnv/.envrc` (`eval "$(kmsenv export --format shell)"`)
//! sourced by sh and by bash gives back hostile values byte for byte and runs
//! nothing that is inside them.

mod support;

use std::path::Path;

use support::*;

const HOSTILE: &[(&str, &[u8])] = &[
    ("SINGLE_QUOTES", b"it's 'quoted' ''"),
    ("DOUBLE_QUOTES", b"say \"hi\" \\\" done"),
    ("SUBSHELL", b"$(touch pwned-subshell)"),
    ("BACKTICKS", b"`touch pwned-backticks`"),
    ("NEWLINES", b"line1\nline2\n\nexport EVIL=1\n"),
    ("DOLLARS", b"$HOME ${PATH} $0 $$ \\$"),
    ("SEMICOLONS", b"; touch pwned-semicolon; echo"),
    ("NOT_UTF8", b"\xff\xfe\x80 bytes"),
    ("GLOB", b"* ? [a-z] ~"),
];

/// Source the example `.envrc` in `shell` with kmsenv on PATH, then print the
/// environment NUL-separated.
fn source_envrc(sandbox: &Sandbox, shell: &str, file: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let envrc = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/direnv/.envrc");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kmsenv"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let out = std::process::Command::new(shell)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("KMSENV_FILE", file)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KMS", moto().endpoint())
        .current_dir(sandbox.dir.path())
        .arg("-c")
        .arg(". \"$0\" && exec /usr/bin/env -0")
        .arg(&envrc)
        .output()
        .unwrap_or_else(|e| panic!("run {shell}: {e}"));
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_env0(&out.stdout)
}

fn check_shell(shell: &str) {
    let sandbox = Sandbox::new();
    let (file, _) = sandbox.new_file("kmsenv.toml");
    for (name, value) in HOSTILE {
        sandbox.set(&file, name, value);
    }
    let env = source_envrc(&sandbox, shell, &file);
    for (name, value) in HOSTILE {
        assert_eq!(env.get(*name).map(Vec::as_slice), Some(*value), "{shell}: {name}");
    }
    assert!(
        !env.contains_key("EVIL"),
        "{shell}: a newline in a value started a new statement"
    );
    for marker in ["pwned-subshell", "pwned-backticks", "pwned-semicolon"] {
        assert!(
            !sandbox.path(marker).exists(),
            "{shell}: {marker}: code inside a value ran"
        );
    }
}

#[test]
fn the_envrc_example_gives_back_hostile_values_exactly_in_sh() {
    check_shell("/bin/sh");
}

#[test]
fn the_envrc_example_gives_back_hostile_values_exactly_in_bash() {
    check_shell("/bin/bash");
}
