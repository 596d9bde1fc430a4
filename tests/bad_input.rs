//! Bad input of every kind — broken files, wrong shapes, bad names, bad arguments,
//! bad commands — must fail closed: the documented exit code (125 unless noted), a
//! first stderr line `kmsenv: …` that names `file:line:column` or the variable, no
//! panic, the target command not run, and no file in the case's folder changed.
//!
//! The cases are one table; each row is a test of its own (`bad_input!`), named
//! after the case. Files that need keys are made for real (kmsenv + moto) once per
//! test binary, then corrupted as text by each case.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::libc;

use support::*;

/// How long a case may run unless it says otherwise ("never hang").
const DEFAULT_LIMIT: Duration = Duration::from_secs(30);

/// Address-space cap for every kmsenv run, so that a runaway read (a bug) fails the
/// case instead of eating the machine's memory.
const MEMORY_CAP: u64 = 2 << 30;

/// The 16 MiB file cap, as the error message states it.
const FILE_CAP: &str = "16777216";

/// One bad input.
struct Case {
    name: &'static str,
    setup: Setup,
    expect_code: i32,
    /// Each must occur in stderr. `{file}` is the case's file path, `{dir}` its
    /// folder, `{key}` the base file's key ARN. A needle `@TEXT` is a location: the
    /// *first* stderr line must hold `FILE:LINE:COLUMN` where LINE is the first line
    /// of the case's file containing TEXT; a bare `@` only requires the first line to
    /// name the file.
    expect_stderr_contains: &'static [&'static str],
}

enum Setup {
    /// The case's file gets this text; the run is `kmsenv -f FILE exec -- touch MARKER`.
    Exec(fn(&Base) -> String),
    /// Anything else: prepares the case's folder and returns the command line.
    Custom(fn(&Ctx) -> Run),
}

/// A further check of a case's outcome.
type Check = fn(&Ctx, &Output) -> Result<(), String>;

/// What one case runs.
struct Run {
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    /// Run kmsenv as nobody (65534) instead of root.
    as_nobody: bool,
    limit: Duration,
    /// Bytes that must appear in neither stdout nor stderr.
    secret: Option<&'static [u8]>,
    /// A further check of the outcome.
    check: Option<Check>,
    /// Why the case cannot run here (printed, counted as skipped).
    skip: Option<String>,
}

impl Run {
    fn new<I, S>(args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Run {
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            as_nobody: false,
            limit: DEFAULT_LIMIT,
            secret: None,
            check: None,
            skip: None,
        }
    }

    fn stdin(mut self, bytes: &[u8]) -> Run {
        self.stdin = Some(bytes.to_vec());
        self
    }

    fn limit(mut self, secs: u64) -> Run {
        self.limit = Duration::from_secs(secs);
        self
    }

    fn check(mut self, check: Check) -> Run {
        self.check = Some(check);
        self
    }
}

/// Made once with kmsenv and moto, shared by every case.
struct Base {
    key: String,
    /// A keyed file (context app=bad-input): SEC sealed, KMSV direct kms, FV sealed
    /// with `file = true`, P plain.
    keyed: String,
    /// A `kms` blob of `a\0b` for the variable NV (context `kmsenv:var = NV`).
    nul_blob: String,
}

impl Base {
    fn new() -> Base {
        let sandbox = Sandbox::new();
        let key = sandbox.key();
        let file = sandbox.path("kmsenv.toml");
        sandbox
            .kmsenv()
            .file(&file)
            .args(["init", "--key", &key, "--context", "app=bad-input"])
            .run()
            .ok();
        sandbox.set(&file, "SEC", b"sealed-value");
        sandbox.set_with(&file, &["--kms"], "KMSV", b"kms-value");
        sandbox.set_with(&file, &["--as-file"], "FV", b"file-value");
        sandbox.set_with(&file, &["--plain"], "P", b"plain-value");
        sandbox.assert_command_runs(&[&file]);
        let keyed = sandbox.read(&file);
        let nul_blob = encrypt(REGION, &key, b"a\0b", &[("kmsenv:var", "NV")]);
        Base { key, keyed, nul_blob }
    }

    /// The keyed file with the line of entry `name` passed through `edit`.
    fn keyed_entry(&self, name: &str, edit: impl FnOnce(&str) -> String) -> String {
        let line = entry_line(&self.keyed, name);
        replace_once(&self.keyed, line, &edit(line))
    }

    /// The keyed file with `line` inserted after the first line starting with `after`.
    fn keyed_after(&self, after: &str, line: &str) -> String {
        insert_after(&self.keyed, after, line)
    }
}

/// `text` with `line` inserted after its first line starting with `after`.
#[track_caller]
fn insert_after(text: &str, after: &str, line: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in text.split_inclusive('\n') {
        out.push_str(l);
        if !done && l.trim_start().starts_with(after) {
            out.push_str(line);
            out.push('\n');
            done = true;
        }
    }
    assert!(done, "no line starting with {after:?} in:\n{text}");
    out
}

/// `text` without its first line starting with `prefix`.
#[track_caller]
fn drop_line(text: &str, prefix: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"));
    replace_once(text, &format!("{line}\n"), "")
}

/// The folder and file of one case.
struct Ctx<'a> {
    base: &'a Base,
    sandbox: Sandbox,
    /// The file the case is about (`kmsenv.toml` in the case's folder).
    file: PathBuf,
}

impl Ctx<'_> {
    fn dir(&self) -> &Path {
        self.sandbox.dir.path()
    }

    fn write(&self, text: &str) {
        self.sandbox.write(&self.file, text);
    }

    fn f(&self) -> OsString {
        self.file.clone().into_os_string()
    }

    /// `-f FILE exec -- sh -c 'touch MARKER'`.
    fn exec_marker(&self) -> Vec<OsString> {
        let mut args = vec!["-f".into(), self.f(), "exec".into(), "--".into()];
        args.extend(self.sandbox.touch_marker_command());
        args
    }

    /// `-f FILE ARGS…`.
    fn on_file(&self, args: &[&str]) -> Vec<OsString> {
        let mut out = vec!["-f".into(), self.f()];
        out.extend(args.iter().map(OsString::from));
        out
    }
}

// ---------------------------------------------------------------------------
// The table: one #[test] per case

/// Makes each `test_name: Case { … }` row a `#[test] fn bad_input::test_name`, so
/// that one case runs, and fails, alone (`cargo test --test bad_input
/// name_with_dash`), as ripgrep's `rgtest!` does; and `cases()`, the whole table,
/// for the checks of the table itself.
macro_rules! bad_input {
    ($($test:ident: $case:expr),* $(,)?) => {
        mod bad_input {
            use super::*;
            $(
                #[test]
                fn $test() {
                    check(&$case);
                }
            )*
        }

        fn cases() -> Vec<Case> {
            vec![$($case),*]
        }
    };
}

/// Runs one case against the shared [`Base`] and fails with every problem found.
fn check(case: &Case) {
    static BASE: OnceLock<Base> = OnceLock::new();
    let base = BASE.get_or_init(Base::new);
    match run_case(base, case) {
        Outcome::Passed => {}
        Outcome::Skipped(why) => eprintln!("note: case {:?} skipped: {why}", case.name),
        Outcome::Failed(problems) => panic!("case {:?}:\n  - {}", case.name, problems.join("\n  - ")),
    }
}

bad_input! {
    // --- TOML and format version
    malformed_toml_unclosed_table_header: Case {
        name: "malformed TOML: unclosed table header",
        setup: Setup::Exec(|_| keyless_file(&["P = \"fine\""]).replace("[env]", "[env")),
        expect_code: 125,
        expect_stderr_contains: &["@[env", "TOML"],
    },
    malformed_toml_unterminated_string_in_a_real_file: Case {
        name: "malformed TOML: unterminated string in a real file",
        setup: Setup::Exec(|b| b.keyed_entry("P", |l| l.trim_end_matches('"').to_string())),
        expect_code: 125,
        expect_stderr_contains: &["@P = "],
    },
    version_3: Case {
        name: "version = 3",
        setup: Setup::Exec(|b| replace_once(&b.keyed, "version = 2", "version = 3")),
        expect_code: 125,
        expect_stderr_contains: &["@version = 3", "version"],
    },
    version_2_a_string: Case {
        name: "version = \"2\" (a string)",
        setup: Setup::Exec(|b| replace_once(&b.keyed, "version = 2", "version = \"2\"")),
        expect_code: 125,
        expect_stderr_contains: &["@version = \"2\"", "version"],
    },
    version_missing: Case {
        name: "version missing",
        setup: Setup::Exec(|b| replace_once(&b.keyed, "version = 2\n", "")),
        expect_code: 125,
        expect_stderr_contains: &["@[kmsenv]", "version"],
    },
    empty_file_0_bytes: Case {
        name: "empty file (0 bytes)",
        setup: Setup::Exec(|_| String::new()),
        expect_code: 125,
        expect_stderr_contains: &["@", "[kmsenv]"],
    },
    non_utf_8_file: Case {
        name: "non-UTF-8 file",
        setup: Setup::Custom(|ctx| {
            let mut bytes = keyless_file(&[]).into_bytes();
            bytes.extend_from_slice(b"P = \"\xff\xfe\"\n");
            std::fs::write(&ctx.file, bytes).expect("write");
            Run::new(ctx.exec_marker())
        }),
        expect_code: 125,
        expect_stderr_contains: &["@", "UTF-8"],
    },
    // --- unknown keys and tables
    unknown_key_in_kmsenv: Case {
        name: "unknown key in [kmsenv]",
        setup: Setup::Exec(|b| b.keyed_after("version = 2", "contxt = { app = \"bad-input\" }")),
        expect_code: 125,
        expect_stderr_contains: &["@contxt", "contxt"],
    },
    unknown_key_in_a_value_table: Case {
        name: "unknown key in a value table",
        setup: Setup::Exec(|b| b.keyed_entry("SEC", |l| l.replace(" }", ", flie = true }"))),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC", "flie"],
    },
    unknown_key_in_kmsenv_keys: Case {
        name: "unknown key in [[kmsenv.keys]]",
        setup: Setup::Exec(|b| b.keyed_after("data_key", "region = \"us-east-1\"")),
        expect_code: 125,
        expect_stderr_contains: &["@region = ", "region"],
    },
    unknown_top_level_table: Case {
        name: "unknown top-level table",
        setup: Setup::Exec(|b| format!("{}\n[enviroment]\nX = \"y\"\n", b.keyed)),
        expect_code: 125,
        expect_stderr_contains: &["@[enviroment]", "enviroment"],
    },
    top_level_env_that_is_a_string: Case {
        name: "top-level `env` that is a string",
        setup: Setup::Exec(|_| "env = \"x\"\n[kmsenv]\nversion = 2\n".to_string()),
        expect_code: 125,
        expect_stderr_contains: &["@env = ", "env"],
    },
    keys_that_is_not_an_array_of_tables: Case {
        name: "`keys` that is not an array of tables",
        setup: Setup::Exec(|_| "[kmsenv]\nversion = 2\nkeys = \"x\"\n\n[env]\n".to_string()),
        expect_code: 125,
        expect_stderr_contains: &["@keys = ", "keys"],
    },
    kmsenv_keys_without_data_key: Case {
        // Pointed at the first line of the incomplete table (its `arn`).
        name: "[[kmsenv.keys]] without data_key",
        setup: Setup::Exec(|b| drop_line(&b.keyed, "data_key")),
        expect_code: 125,
        expect_stderr_contains: &["@arn = ", "data_key"],
    },
    // --- context values
    non_string_file_context_value: Case {
        name: "non-string file context value",
        setup: Setup::Exec(|b| {
            replace_once(
                &b.keyed,
                "context = { app = \"bad-input\" }",
                "context = { app = 7 }",
            )
        }),
        expect_code: 125,
        expect_stderr_contains: &["@context = ", "app"],
    },
    file_context_that_is_a_string: Case {
        name: "file context that is a string",
        setup: Setup::Exec(|b| {
            replace_once(
                &b.keyed,
                "context = { app = \"bad-input\" }",
                "context = \"app=bad-input\"",
            )
        }),
        expect_code: 125,
        expect_stderr_contains: &["@context = ", "context"],
    },
    non_string_value_context_value: Case {
        name: "non-string value context value",
        setup: Setup::Exec(|b| b.keyed_entry("KMSV", |l| l.replace("app = \"bad-input\"", "app = true"))),
        expect_code: 125,
        expect_stderr_contains: &["@KMSV =", "KMSV", "app"],
    },
    file_context_with_a_kmsenv_key: Case {
        name: "file context with a `kmsenv:` key",
        setup: Setup::Exec(|b| {
            replace_once(
                &b.keyed,
                "context = { app = \"bad-input\" }",
                "context = { app = \"bad-input\", \"kmsenv:x\" = \"1\" }",
            )
        }),
        expect_code: 125,
        expect_stderr_contains: &["@context = ", "kmsenv:x"],
    },
    the_data_key_blob_pasted_as_a_kms_value: Case {
        name: "the data_key blob pasted as a value with \"kmsenv:purpose\"",
        setup: Setup::Exec(|b| {
            let blob = data_key_of(&b.keyed);
            insert_in_env(
                &b.keyed,
                &format!(
                    "STOLEN = {{ kms = \"{blob}\", context = {{ app = \"bad-input\", \"kmsenv:purpose\" = \"data-key\" }} }}"
                ),
            )
        }),
        expect_code: 125,
        expect_stderr_contains: &["@STOLEN =", "STOLEN", "kmsenv:purpose"],
    },
    value_context_kmsenv_var_naming_another_variable: Case {
        name: "value context \"kmsenv:var\" naming another variable",
        setup: Setup::Exec(|b| {
            let line = entry_line(&b.keyed, "KMSV").replacen("KMSV =", "OTHER =", 1);
            insert_in_env(&b.keyed, &line)
        }),
        expect_code: 125,
        expect_stderr_contains: &["@OTHER =", "OTHER", "kmsenv:var"],
    },
    // --- names
    name_with_dash: Case {
        name: "name with `-`",
        setup: Setup::Exec(|_| keyless_file(&["BAD-NAME = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@BAD-NAME", "BAD-NAME"],
    },
    name_with_equals_sign: Case {
        name: "name with `=`",
        setup: Setup::Exec(|_| keyless_file(&["\"A=B\" = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@\"A=B\"", "A=B"],
    },
    name_with_a_space: Case {
        name: "name with a space",
        setup: Setup::Exec(|_| keyless_file(&["\"A B\" = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@\"A B\"", "A B"],
    },
    name_with_a_leading_digit: Case {
        name: "name with a leading digit",
        setup: Setup::Exec(|_| keyless_file(&["9LIVES = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@9LIVES", "9LIVES"],
    },
    empty_name: Case {
        name: "empty name",
        setup: Setup::Exec(|_| keyless_file(&["\"\" = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@\"\" =", "\"\""],
    },
    non_ascii_name: Case {
        name: "non-ASCII name",
        setup: Setup::Exec(|_| keyless_file(&["\"ÜBER\" = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@\"ÜBER\"", "ÜBER"],
    },
    dotted_name_a_sub_table_in_toml: Case {
        name: "dotted name (a sub-table in TOML)",
        setup: Setup::Exec(|_| keyless_file(&["DB.HOST = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@DB.HOST", "DB"],
    },
    name_with_terminal_escapes_is_not_echoed_raw: Case {
        name: "name with terminal escapes is not echoed raw",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["\"EVIL\\u001b[2J\\u0007\" = \"x\""]));
            Run::new(ctx.exec_marker()).check(|_, out| {
                if out.stderr.contains('\u{1b}') || out.stderr.contains('\u{7}') {
                    Err(format!("stderr holds raw control characters: {:?}", out.stderr))
                } else {
                    Ok(())
                }
            })
        }),
        expect_code: 125,
        expect_stderr_contains: &["@EVIL", "EVIL"],
    },
    kmsenv_prefixed_name: Case {
        name: "KMSENV_ prefixed name",
        setup: Setup::Exec(|_| keyless_file(&["KMSENV_TOKEN = \"x\""])),
        expect_code: 125,
        expect_stderr_contains: &["@KMSENV_TOKEN", "KMSENV_TOKEN"],
    },
    duplicate_name_in_one_file: Case {
        name: "duplicate name in one file",
        setup: Setup::Exec(|_| keyless_file(&["DUP = \"first\"", "DUP = \"second\""])),
        expect_code: 125,
        expect_stderr_contains: &["@DUP = \"second\"", "duplicate"],
    },
    // --- ciphertext text
    invalid_base64_in_sealed: Case {
        name: "invalid base64 in `sealed`",
        setup: Setup::Exec(|b| {
            let sealed = sealed_of(&b.keyed, "SEC");
            replace_once(&b.keyed, &sealed, "!!!not-base64!!!")
        }),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC", "base64"],
    },
    invalid_base64_in_kms: Case {
        name: "invalid base64 in `kms`",
        setup: Setup::Exec(|b| {
            let kms = kms_of(&b.keyed, "KMSV");
            replace_once(&b.keyed, &kms, "%%%")
        }),
        expect_code: 125,
        expect_stderr_contains: &["@KMSV =", "KMSV", "base64"],
    },
    invalid_base64_in_data_key: Case {
        name: "invalid base64 in `data_key`",
        setup: Setup::Exec(|b| replace_once(&b.keyed, &data_key_of(&b.keyed), "@@@")),
        expect_code: 125,
        expect_stderr_contains: &["@data_key", "data_key"],
    },
    data_key_that_is_no_ciphertext_of_the_key: Case {
        // KMS answers InvalidCiphertextException; moto, which reads the key id from
        // the blob, answers AccessDeniedException to these bytes. Either way the
        // key and the AWS error code must be named.
        name: "`data_key` that is valid base64 but not a ciphertext of the key",
        setup: Setup::Exec(|b| replace_once(&b.keyed, &data_key_of(&b.keyed), &b64(&[7u8; 180]))),
        expect_code: 125,
        expect_stderr_contains: &["@", "{key}", "Exception"],
    },
    truncated_sealed_of_20_bytes: Case {
        name: "truncated `sealed` (valid base64, 20 bytes < 28)",
        setup: Setup::Exec(|b| replace_once(&b.keyed, &sealed_of(&b.keyed, "SEC"), &b64(&[1u8; 20]))),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC"],
    },
    over_long_garbage_sealed_fails_the_mac: Case {
        name: "over-long garbage `sealed` (exec: the MAC no longer matches)",
        setup: Setup::Exec(|b| replace_once(&b.keyed, &sealed_of(&b.keyed, "SEC"), &b64(&[9u8; 300]))),
        expect_code: 125,
        expect_stderr_contains: &["@", "modified outside kmsenv"],
    },
    over_long_garbage_sealed_is_not_opened_by_fix_mac: Case {
        name: "over-long garbage `sealed` (check --fix-mac: does not open)",
        setup: Setup::Custom(|ctx| {
            let b = ctx.base;
            ctx.write(&replace_once(
                &b.keyed,
                &sealed_of(&b.keyed, "SEC"),
                &b64(&[9u8; 300]),
            ));
            Run::new(ctx.on_file(&["check", "--fix-mac"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC"],
    },
    mac_that_is_not_base64: Case {
        name: "`mac` that is not base64",
        setup: Setup::Exec(|b| {
            let mac = quoted_field(b.keyed.lines().find(|l| l.starts_with("mac")).unwrap(), "mac");
            replace_once(&b.keyed, &mac, "%%")
        }),
        expect_code: 125,
        expect_stderr_contains: &["@", "MAC"],
    },
    sealed_value_in_a_file_without_keys: Case {
        name: "sealed value in a file without keys",
        setup: Setup::Exec(|_| {
            keyless_file(&[&format!("TOKEN = {{ sealed = \"{}\" }}", b64(&[0u8; 40]))])
        }),
        expect_code: 125,
        expect_stderr_contains: &["@TOKEN", "TOKEN"],
    },
    kms_blob_of_0_bytes: Case {
        name: "`kms` blob of 0 bytes",
        setup: Setup::Exec(|b| replace_once(&b.keyed, &kms_of(&b.keyed, "KMSV"), "")),
        expect_code: 125,
        expect_stderr_contains: &["@KMSV =", "KMSV"],
    },
    kms_blob_of_10_mb: Case {
        // base64 inflates 4/3: 10 MB → 13.3 MB, under the 16 MiB file cap, so it is
        // the ciphertext size limit that must refuse it.
        name: "`kms` blob of 10 MB",
        setup: Setup::Exec(|_| {
            keyless_file(&[&format!("BIG = {{ kms = \"{}\" }}", b64(&vec![0u8; 10_000_000]))])
        }),
        expect_code: 125,
        expect_stderr_contains: &["@BIG", "BIG"],
    },
    // --- value shapes
    both_sealed_and_kms: Case {
        name: "both `sealed` and `kms`",
        setup: Setup::Exec(|b| b.keyed_entry("SEC", |l| l.replace(" }", ", kms = \"AQID\" }"))),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC"],
    },
    neither_sealed_nor_kms: Case {
        name: "neither `sealed` nor `kms`",
        setup: Setup::Exec(|b| b.keyed_entry("SEC", |_| "SEC = { file = true }".to_string())),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC"],
    },
    integer_value: Case {
        name: "integer value",
        setup: Setup::Exec(|_| keyless_file(&["PORT = 8080"])),
        expect_code: 125,
        expect_stderr_contains: &["@PORT", "PORT"],
    },
    boolean_value: Case {
        name: "boolean value",
        setup: Setup::Exec(|_| keyless_file(&["DEBUG = true"])),
        expect_code: 125,
        expect_stderr_contains: &["@DEBUG", "DEBUG"],
    },
    array_value: Case {
        name: "array value",
        setup: Setup::Exec(|_| keyless_file(&["HOSTS = [\"a\", \"b\"]"])),
        expect_code: 125,
        expect_stderr_contains: &["@HOSTS", "HOSTS"],
    },
    file_is_the_string_yes: Case {
        name: "`file = \"yes\"`",
        setup: Setup::Exec(|b| b.keyed_entry("FV", |l| l.replace("file = true", "file = \"yes\""))),
        expect_code: 125,
        expect_stderr_contains: &["@FV =", "FV", "file"],
    },
    key_on_a_sealed_value: Case {
        name: "`key` on a sealed value",
        setup: Setup::Exec(|b| {
            let key = b.key.clone();
            b.keyed_entry("SEC", move |l| l.replace(" }", &format!(", key = \"{key}\" }}")))
        }),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC", "key"],
    },
    key_that_is_not_a_string: Case {
        name: "`key` that is not a string",
        setup: Setup::Exec(|b| {
            let key = b.key.clone();
            b.keyed_entry("KMSV", move |l| replace_once(l, &format!("\"{key}\""), "5"))
        }),
        expect_code: 125,
        expect_stderr_contains: &["@KMSV =", "KMSV", "key"],
    },
    sealed_that_is_not_a_string: Case {
        name: "`sealed` that is not a string",
        setup: Setup::Exec(|b| b.keyed_entry("SEC", |_| "SEC = { sealed = 5 }".to_string())),
        expect_code: 125,
        expect_stderr_contains: &["@SEC =", "SEC", "sealed"],
    },
    decrypted_value_with_a_nul_byte: Case {
        name: "decrypted value with a NUL byte",
        setup: Setup::Exec(|b| {
            keyless_file(&[&format!(
                "NV = {{ kms = \"{}\", context = {{ \"kmsenv:var\" = \"NV\" }} }}",
                b.nul_blob
            )])
        }),
        expect_code: 125,
        expect_stderr_contains: &["@", "NV", "NUL"],
    },
    // --- the file itself
    missing_file: Case {
        name: "missing file",
        setup: Setup::Custom(|ctx| Run::new(ctx.exec_marker())),
        expect_code: 125,
        expect_stderr_contains: &["@", "No such file"],
    },
    a_directory_as_the_file: Case {
        name: "a directory as the file",
        setup: Setup::Custom(|ctx| {
            std::fs::create_dir(&ctx.file).expect("mkdir");
            Run::new(ctx.exec_marker())
        }),
        expect_code: 125,
        expect_stderr_contains: &["@", "directory"],
    },
    mode_000_file_read_by_root_runs: Case {
        // We run as root, and root reads a mode-000 file (CAP_DAC_OVERRIDE): this
        // is not an error, so the command runs. Refusing it would break root-run
        // services whose files are 0400 root-owned. The permission error itself is
        // the next case, as a user who cannot reach the file.
        name: "mode 000 file read by root (root bypasses permissions: runs)",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            std::fs::set_permissions(&ctx.file, std::fs::Permissions::from_mode(0o000)).expect("chmod");
            let mut run = Run::new(ctx.exec_marker()).check(|ctx, _| {
                if ctx.sandbox.marker().exists() {
                    Ok(())
                } else {
                    Err("root should read a mode-000 file and run the command".into())
                }
            });
            if !is_root() {
                run.skip = Some("not root: a mode-000 file is just unreadable".into());
            }
            run
        }),
        expect_code: 0,
        expect_stderr_contains: &[],
    },
    file_in_a_folder_the_user_cannot_search_as_nobody: Case {
        name: "file in a folder the user cannot search (as nobody)",
        setup: Setup::Custom(|ctx| {
            // The case's file lives in a 0700 root folder; kmsenv runs as nobody.
            let private = ctx.dir().join("private");
            std::fs::create_dir(&private).expect("mkdir");
            std::fs::write(private.join("kmsenv.toml"), keyless_file(&["P = \"fine\""])).expect("write");
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
            let mut args: Vec<OsString> = vec!["-f".into(), private.join("kmsenv.toml").into()];
            args.extend(ctx.exec_marker().into_iter().skip(2));
            let mut run = Run::new(args);
            run.as_nobody = true;
            if !is_root() {
                run.skip = Some("not root: cannot run kmsenv as nobody".into());
            }
            run
        }),
        expect_code: 125,
        expect_stderr_contains: &["{dir}/private/kmsenv.toml", "Permission denied"],
    },
    a_50_mb_file_is_refused_by_the_size_cap_quickly: Case {
        name: "a 50 MB file is refused by the size cap, quickly",
        setup: Setup::Custom(|ctx| {
            let f = std::fs::File::create(&ctx.file).expect("create");
            f.set_len(50 * 1024 * 1024).expect("set_len");
            Run::new(ctx.exec_marker()).limit(10)
        }),
        expect_code: 125,
        expect_stderr_contains: &["@", FILE_CAP],
    },
    an_endless_file_dev_zero_is_refused_by_the_size_cap: Case {
        // A character device has no size: the cap must bound the read itself.
        name: "an endless file (/dev/zero) is refused by the size cap",
        setup: Setup::Custom(|ctx| {
            let mut args: Vec<OsString> = vec!["-f".into(), "/dev/zero".into()];
            args.extend(ctx.exec_marker().into_iter().skip(2));
            Run::new(args).limit(10)
        }),
        expect_code: 125,
        expect_stderr_contains: &["/dev/zero", FILE_CAP],
    },
    a_hundred_thousand_plain_variables_work: Case {
        name: "100 000 plain variables work",
        setup: Setup::Custom(|ctx| {
            let mut text = keyless_file(&[]);
            for i in 0..100_000 {
                text.push_str(&format!("V{i} = \"{}\"\n", i % 10));
            }
            ctx.write(&text);
            Run::new(ctx.on_file(&[
                "exec",
                "--",
                "sh",
                "-c",
                "test \"$V0\" = 0 && test \"$V54321\" = 1 && test \"$V99999\" = 9",
            ]))
            .limit(90)
        }),
        expect_code: 0,
        expect_stderr_contains: &[],
    },
    the_same_name_in_two_files_the_later_wins: Case {
        name: "the same name in two files: the later wins",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["DUP = \"first\""]));
            let second = ctx.dir().join("second.toml");
            std::fs::write(&second, keyless_file(&["DUP = \"second\""])).expect("write");
            let mut args = ctx.on_file(&[]);
            args.extend(["-f".into(), second.into_os_string()]);
            args.extend(["exec", "--", "sh", "-c", "printf %s \"$DUP\""].map(OsString::from));
            Run::new(args).check(|_, out| {
                if out.stdout == b"second" {
                    Ok(())
                } else {
                    Err(format!(
                        "the child saw DUP={:?}, not \"second\"",
                        out.stdout_text()
                    ))
                }
            })
        }),
        expect_code: 0,
        expect_stderr_contains: &[],
    },
    // --- exec's command line
    exec_without_double_dash: Case {
        name: "exec without `--`",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let mut args = ctx.on_file(&["exec"]);
            args.extend(ctx.sandbox.touch_marker_command());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["--"],
    },
    exec_with_an_empty_command: Case {
        name: "exec with an empty command",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            Run::new(ctx.on_file(&["exec", "--"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &[],
    },
    command_not_found_in_path: Case {
        name: "command not found in PATH",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            Run::new(ctx.on_file(&["exec", "--", "no-such-command-7c1e"]))
        }),
        expect_code: 127,
        expect_stderr_contains: &["no-such-command-7c1e"],
    },
    command_not_found_by_path: Case {
        name: "command not found by path",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let missing = ctx.dir().join("no-such-program");
            let mut args = ctx.on_file(&["exec", "--"]);
            args.push(missing.into_os_string());
            Run::new(args)
        }),
        expect_code: 127,
        expect_stderr_contains: &["{dir}/no-such-program"],
    },
    command_not_executable: Case {
        name: "command not executable",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let script = ctx.dir().join("not-executable");
            std::fs::write(&script, "#!/bin/sh\ntouch MARKER-command-ran\n").expect("write");
            let mut args = ctx.on_file(&["exec", "--"]);
            args.push(script.into_os_string());
            Run::new(args)
        }),
        expect_code: 126,
        expect_stderr_contains: &["{dir}/not-executable"],
    },
    a_directory_as_the_command: Case {
        name: "a directory as the command",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let dir = ctx.dir().join("a-directory");
            std::fs::create_dir(&dir).expect("mkdir");
            let mut args = ctx.on_file(&["exec", "--"]);
            args.push(dir.into_os_string());
            Run::new(args)
        }),
        expect_code: 126,
        expect_stderr_contains: &["{dir}/a-directory"],
    },
    only_naming_an_undefined_variable: Case {
        name: "--only naming an undefined variable",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let mut args = ctx.on_file(&["exec", "--only", "NOPE_7A", "--"]);
            args.extend(ctx.sandbox.touch_marker_command());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["NOPE_7A"],
    },
    timeout_0: Case {
        name: "--timeout 0",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let mut args = ctx.on_file(&["--timeout", "0", "exec", "--"]);
            args.extend(ctx.sandbox.touch_marker_command());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["--timeout"],
    },
    timeout_abc: Case {
        name: "--timeout abc",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let mut args = ctx.on_file(&["--timeout", "abc", "exec", "--"]);
            args.extend(ctx.sandbox.touch_marker_command());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["--timeout"],
    },
    timeout_beyond_the_maximum: Case {
        name: "--timeout beyond the maximum",
        setup: Setup::Custom(|ctx| {
            ctx.write(&keyless_file(&["P = \"fine\""]));
            let mut args = ctx.on_file(&["--timeout", "100000", "exec", "--"]);
            args.extend(ctx.sandbox.touch_marker_command());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["--timeout"],
    },
    f_with_an_empty_path: Case {
        name: "-f with an empty path",
        setup: Setup::Custom(|ctx| {
            let mut args: Vec<OsString> = vec!["-f".into(), "".into(), "exec".into(), "--".into()];
            args.extend(ctx.sandbox.touch_marker_command());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &[],
    },
    // --- set
    set_with_empty_stdin: Case {
        name: "set with empty stdin",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["set", "NEW_VALUE"])).stdin(b"")
        }),
        expect_code: 125,
        expect_stderr_contains: &["NEW_VALUE"],
    },
    set_name_equals_value_without_plain: Case {
        name: "set NAME=value without --plain (refused, value not echoed)",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            let mut run = Run::new(ctx.on_file(&["set", "NEW_VALUE=hunter2-from-argv"]));
            run.secret = Some(b"hunter2-from-argv");
            run
        }),
        expect_code: 125,
        expect_stderr_contains: &["NEW_VALUE"],
    },
    set_of_an_invalid_name: Case {
        name: "set of an invalid name",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["set", "BAD-NAME"])).stdin(b"value")
        }),
        expect_code: 125,
        expect_stderr_contains: &["BAD-NAME"],
    },
    set_plain_of_an_invalid_name: Case {
        name: "set --plain of an invalid name",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["set", "--plain", "BAD-NAME=1"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["BAD-NAME"],
    },
    set_of_a_kmsenv_name: Case {
        name: "set of a KMSENV_ name",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["set", "KMSENV_FILE"])).stdin(b"value")
        }),
        expect_code: 125,
        expect_stderr_contains: &["KMSENV_FILE"],
    },
    set_of_a_value_over_1_mib: Case {
        name: "set of a value over 1 MiB",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["set", "HUGE"])).stdin(&vec![b'a'; (1 << 20) + 1])
        }),
        expect_code: 125,
        expect_stderr_contains: &["HUGE"],
    },
    set_of_a_value_with_nul: Case {
        name: "set of a value with NUL (not --as-file)",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["set", "NUL_VALUE"])).stdin(b"a\0b")
        }),
        expect_code: 125,
        expect_stderr_contains: &["NUL_VALUE", "NUL"],
    },
    set_from_file_of_a_missing_file: Case {
        name: "set --from-file of a missing file",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            let missing = ctx.dir().join("no-such-input");
            let mut args = ctx.on_file(&["set", "FROM_FILE", "--from-file"]);
            args.push(missing.into_os_string());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["{dir}/no-such-input"],
    },
    set_plain_together_with_kms: Case {
        name: "set --plain together with --kms",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["set", "--plain", "--kms", "BOTH"])).stdin(b"value")
        }),
        expect_code: 125,
        expect_stderr_contains: &["--plain"],
    },
    f_twice_for_set: Case {
        name: "-f twice for set",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            let other = ctx.dir().join("other.toml");
            std::fs::write(&other, &ctx.base.keyed).expect("write");
            let mut args = ctx.on_file(&["-f"]);
            args.push(other.into_os_string());
            args.extend(["set", "TWICE"].map(OsString::from));
            Run::new(args).stdin(b"value")
        }),
        expect_code: 125,
        expect_stderr_contains: &["-f"],
    },
    set_on_a_file_whose_mac_does_not_match: Case {
        name: "set on a file whose MAC does not match",
        setup: Setup::Custom(|ctx| {
            ctx.write(&replace_once(
                &ctx.base.keyed,
                "\"plain-value\"",
                "\"edited-by-hand\"",
            ));
            Run::new(ctx.on_file(&["set", "NEW_VALUE"])).stdin(b"value")
        }),
        expect_code: 125,
        expect_stderr_contains: &["@", "modified outside kmsenv"],
    },
    // --- import
    import_of_a_malformed_dotenv_line: Case {
        name: "import of a malformed dotenv line",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            let env = ctx.dir().join("bad.env");
            std::fs::write(&env, "GOOD=1\nthis line is not dotenv\n").expect("write");
            let mut args = ctx.on_file(&["import"]);
            args.push(env.into_os_string());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["{dir}/bad.env:2"],
    },
    import_of_an_unterminated_quote: Case {
        name: "import of an unterminated quote",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            let env = ctx.dir().join("bad.env");
            std::fs::write(&env, "GOOD=1\nQUOTED=\"never closed\nNEXT=2\n").expect("write");
            let mut args = ctx.on_file(&["import"]);
            args.push(env.into_os_string());
            Run::new(args)
        }),
        expect_code: 125,
        expect_stderr_contains: &["{dir}/bad.env:2", "QUOTED"],
    },
    import_from_stdin_of_an_invalid_name: Case {
        name: "import from stdin of an invalid name",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["import"])).stdin(b"GOOD=1\nBAD-NAME=2\n")
        }),
        expect_code: 125,
        // The line and the rule, not the text: on a malformed dotenv line the
        // text before `=` may be a value (tests/secrets.rs checks with a canary).
        expect_stderr_contains: &["stdin:2: invalid variable name", "[A-Za-z_][A-Za-z0-9_]*"],
    },
    // --- init, unset, keys, get, export
    init_over_an_existing_file: Case {
        name: "init over an existing file",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            let key = ctx.base.key.clone();
            Run::new(ctx.on_file(&["init", "--key", &key]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["{file}", "exists"],
    },
    init_context_with_a_kmsenv_key: Case {
        name: "init --context kmsenv:x=1",
        setup: Setup::Custom(|ctx| {
            let key = ctx.base.key.clone();
            Run::new(ctx.on_file(&["init", "--key", &key, "--context", "kmsenv:x=1"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["kmsenv:x"],
    },
    init_context_without_equals_sign: Case {
        name: "init --context without `=`",
        setup: Setup::Custom(|ctx| {
            let key = ctx.base.key.clone();
            Run::new(ctx.on_file(&["init", "--key", &key, "--context", "app"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["--context"],
    },
    unset_of_a_missing_name: Case {
        name: "unset of a missing name",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["unset", "NOPE_7A"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["NOPE_7A"],
    },
    keys_remove_of_the_only_key: Case {
        name: "keys remove of the only key",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            let key = ctx.base.key.clone();
            Run::new(ctx.on_file(&["keys", "remove", &key]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["{file}", "{key}"],
    },
    keys_remove_of_a_key_the_file_does_not_have: Case {
        name: "keys remove of a key the file does not have",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&[
                "keys",
                "remove",
                "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
            ]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["{file}", "00000000-0000-0000-0000-000000000000"],
    },
    get_of_an_undefined_name: Case {
        name: "get of an undefined name",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["get", "NOPE_7A"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["NOPE_7A"],
    },
    export_format_yaml: Case {
        name: "export --format yaml",
        setup: Setup::Custom(|ctx| {
            ctx.write(&ctx.base.keyed);
            Run::new(ctx.on_file(&["export", "--format", "yaml"]))
        }),
        expect_code: 125,
        expect_stderr_contains: &["yaml"],
    },
}

// ---------------------------------------------------------------------------
// The table itself

#[test]
fn the_table_has_at_least_40_cases_with_unique_names() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "two cases share a name");
}

enum Outcome {
    Passed,
    Skipped(String),
    Failed(Vec<String>),
}

fn run_case(base: &Base, case: &Case) -> Outcome {
    let sandbox = Sandbox::new();
    let file = sandbox.path("kmsenv.toml");
    let ctx = Ctx { base, sandbox, file };
    let run = match case.setup {
        Setup::Exec(text) => {
            ctx.write(&text(base));
            Run::new(ctx.exec_marker())
        }
        Setup::Custom(prepare) => prepare(&ctx),
    };
    if let Some(why) = run.skip {
        return Outcome::Skipped(why);
    }
    let text_before = std::fs::read(&ctx.file)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let files_before = snapshot(ctx.dir());

    let (out, took) = run_kmsenv(&ctx, &run);
    let mut problems = Vec::new();
    let Some(out) = out else {
        return Outcome::Failed(vec![format!(
            "kmsenv did not finish within {:?} (killed): it hangs",
            run.limit
        )]);
    };
    let describe = || {
        format!(
            "exit {:?} (signal {:?}) after {took:?}\n    stderr: {}",
            out.status.code(),
            out.status.signal(),
            out.stderr.trim_end().replace('\n', "\n            ")
        )
    };

    if out.status.code() != Some(case.expect_code) {
        problems.push(format!("expected exit {}, got {}", case.expect_code, describe()));
    }
    let first = out.stderr.lines().next().unwrap_or("");
    if case.expect_code != 0 && !first.starts_with("kmsenv: ") {
        problems.push(format!(
            "the first stderr line should start with `kmsenv: `; {}",
            describe()
        ));
    }
    for needle in case.expect_stderr_contains {
        if let Some(at) = needle.strip_prefix('@') {
            if let Err(problem) = check_location(&ctx, &text_before, first, at) {
                problems.push(format!("{problem}; {}", describe()));
            }
        } else {
            let needle = expand(&ctx, needle);
            if !out.stderr.contains(&needle) {
                problems.push(format!("stderr should contain {needle:?}; {}", describe()));
            }
        }
    }
    for bad in ["panicked", "RUST_BACKTRACE"] {
        if out.stderr.contains(bad) {
            problems.push(format!("kmsenv panicked; {}", describe()));
        }
    }
    if case.expect_code != 0 && ctx.sandbox.marker().exists() {
        problems.push("the target command ran although kmsenv failed".into());
    }
    if let Some(secret) = run.secret
        && contains_bytes(&out.all_output(), secret)
    {
        problems.push(format!(
            "the value {:?} was echoed; {}",
            String::from_utf8_lossy(secret),
            describe()
        ));
    }
    let files_after = snapshot(ctx.dir());
    if files_after != files_before {
        problems.push(format!(
            "files in the case's folder changed: {}",
            diff_snapshots(&files_before, &files_after)
        ));
    }
    if took > run.limit {
        problems.push(format!("took {took:?}, more than {:?}", run.limit));
    }
    if let Some(check) = run.check
        && let Err(problem) = check(&ctx, &out)
    {
        problems.push(format!("{problem}; {}", describe()));
    }
    if problems.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed(problems)
    }
}

fn expand(ctx: &Ctx, needle: &str) -> String {
    needle
        .replace("{file}", &ctx.file.display().to_string())
        .replace("{dir}", &ctx.dir().display().to_string())
        .replace("{key}", &ctx.base.key)
}

/// `@TEXT`: the first stderr line holds `FILE:LINE:COLUMN`, LINE being the first line
/// of the file holding TEXT; `@`: the first line names the file.
fn check_location(ctx: &Ctx, text: &str, first: &str, at: &str) -> Result<(), String> {
    let path = ctx.file.display().to_string();
    if at.is_empty() {
        return if first.contains(&path) {
            Ok(())
        } else {
            Err(format!("the first stderr line should name {path}"))
        };
    }
    let line = text
        .lines()
        .position(|l| l.contains(at))
        .map(|i| i + 1)
        .ok_or_else(|| format!("test bug: no line holds {at:?} in the case's file"))?;
    let location = format!("{path}:{line}:");
    let column_follows = first
        .find(&location)
        .is_some_and(|i| first[i + location.len()..].starts_with(|c: char| c.is_ascii_digit()));
    if column_follows {
        Ok(())
    } else {
        Err(format!(
            "the first stderr line should point at {location}COLUMN (the line of {at:?})"
        ))
    }
}

/// Runs kmsenv for a case: clean environment with moto's endpoint, the case's
/// folder as HOME and working directory, a memory cap, and a deadline after which
/// it is killed (`None`).
fn run_kmsenv(ctx: &Ctx, run: &Run) -> (Option<Output>, Duration) {
    let kmsenv = Path::new(env!("CARGO_BIN_EXE_kmsenv"));
    // nobody may not reach the build's target folder (a clone in a 0700 home or
    // `mktemp -d` folder): it runs a copy in a folder of its own.
    let nobodys = run.as_nobody.then(temp_dir);
    let program = match &nobodys {
        Some(folder) => reachable_copy(kmsenv, folder.path()),
        None => kmsenv.to_path_buf(),
    };
    let mut command = Command::new(&program);
    test_env(&mut command, ctx.dir())
        .args(&run.args)
        .stdin(if run.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if run.as_nobody {
        // std drops the supplementary groups when a root parent sets a uid.
        command.uid(65534).gid(65534);
    }
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: MEMORY_CAP,
                rlim_max: MEMORY_CAP,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!(
        "kmsenv {}",
        run.args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let start = Instant::now();
    let mut child = command.spawn().expect("start kmsenv");
    if let (Some(bytes), Some(mut pipe)) = (run.stdin.clone(), child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let out = wait_within(child, &what, run.limit);
    (out, start.elapsed())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Every regular file under `dir` (symlinks not followed) with its bytes and mode;
/// the marker is left out (it has its own check).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                files.insert(path.clone(), (meta.permissions().mode(), Vec::new()));
                stack.push(path);
            } else if meta.is_file() && !path.ends_with("MARKER-command-ran") {
                let bytes = std::fs::read(&path).unwrap_or_default();
                files.insert(path, (meta.permissions().mode(), bytes));
            }
        }
    }
    files
}

fn diff_snapshots(
    before: &BTreeMap<PathBuf, (u32, Vec<u8>)>,
    after: &BTreeMap<PathBuf, (u32, Vec<u8>)>,
) -> String {
    let mut out = Vec::new();
    for (path, old) in before {
        match after.get(path) {
            None => out.push(format!("{} removed", path.display())),
            Some(new) if new != old => out.push(format!("{} changed", path.display())),
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{} created", path.display()));
    }
    out.join(", ")
}
