//! Command-line definitions: every flag is declared once, here, with its help text.
//!
//! Nothing in this module does work; `main.rs` hands the parsed [`Cli`] to
//! `commands::run`. Secret values are deliberately never accepted as arguments
//! (argv is visible to every user of the machine through `/proc/PID/cmdline`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Secrets from an encrypted, committable TOML file, decrypted through AWS KMS
/// into the environment of a program that kmsenv then becomes (execve).
#[derive(Debug, Parser)]
#[command(
    name = "kmsenv",
    version = crate::version::line(),
    max_term_width = 100,
    after_help = "Examples:
  kmsenv init --key alias/billing --context app=billing
  printf %s \"$DB_PASSWORD\" | kmsenv set DATABASE_PASSWORD
  kmsenv exec -- ./server --port 8080

Exit codes: 125 kmsenv failed (nothing was run), 126 command not executable,
127 command not found; otherwise the command's own code."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct Global {
    /// File to read (repeatable; later files override earlier ones): a path, or
    /// s3://BUCKET/KEY in a build with S3 (read-only).
    /// Default: $KMSENV_FILE (a ':'-separated list), else ./kmsenv.toml
    #[arg(short = 'f', long = "file", global = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,

    /// AWS region for keys given without an ARN (ARNs carry their own region).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// AWS profile from ~/.aws/config to take credentials and region from.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// KMS endpoint to use instead of AWS's (also: $AWS_ENDPOINT_URL_KMS).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Accept only files wrapped by this KMS key ARN (repeatable), given where the
    /// command line is fixed (an image, a unit) so a writer of the file cannot
    /// swap in a file of their own. Also: $KMSENV_TRUST_KEYS (comma-separated),
    /// which the flag replaces. Under a pin every file needs keys and a MAC
    /// (format 2), its data key opens only through a trusted key, and every
    /// direct value must decrypt under one.
    #[arg(long = "trust-key", global = true, value_name = "KEY_ARN")]
    pub trust_keys: Vec<String>,

    /// One deadline, in seconds, for everything kmsenv does before it execs or exits.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,

    /// Print, to stderr, the files, keys and variable names used (never values).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decrypt the files into the environment and exec a command.
    #[command(after_help = "Examples:
  kmsenv exec -- ./server --port 8080
  kmsenv -f base.toml -f prod.toml exec --only DATABASE_URL -- psql
  ENTRYPOINT [\"/kmsenv\", \"exec\", \"-f\", \"/app/kmsenv.toml\", \"--\"]   (Dockerfile)
  kmsenv -f s3://config-bucket/billing/kmsenv.toml exec -- ./server   (build with S3)
  kmsenv --trust-key arn:aws:kms:us-east-1:111122223333:key/1234abcd-... exec -- ./server
  kmsenv exec --init --trust-key arn:aws:kms:us-east-1:111122223333:key/1234abcd-... -- ./server
  kmsenv exec --user 65534:65534 -- ./server   (decrypt as root, run as nobody)

The command replaces kmsenv (same PID, signals and exit code); with --init
kmsenv stays as its parent instead. If anything
cannot be decrypted, nothing is run and kmsenv exits 125.")]
    Exec(ExecArgs),

    /// Create a new file with a fresh data key wrapped by one or more KMS keys.
    #[command(after_help = "Examples:
  kmsenv init --key alias/billing
  kmsenv init --key arn:aws:kms:us-east-1:111122223333:key/1234abcd-... \\
              --key arn:aws:kms:us-west-2:111122223333:key/5678efgh-... \\
              --context app=billing --context stage=prod

The encryption context is sent with every KMS call, recorded by CloudTrail and
usable in IAM conditions (kms:EncryptionContext:app).")]
    Init(InitArgs),

    /// Seal a value into the file (from stdin, a no-echo prompt or a file; never argv).
    #[command(after_help = "Examples:
  printf %s \"$TOKEN\" | kmsenv set API_TOKEN
  kmsenv set DATABASE_URL                      (prompts twice, without echo)
  kmsenv set TLS_KEY --from-file key.pem --as-file
  printf %s 'postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/app' | kmsenv set --template DATABASE_URL
  kmsenv set --plain LOG_LEVEL=info            (not secret: stored in clear)
  printf %s \"$TOKEN\" | kmsenv set --kms API_TOKEN  (needs only kms:Encrypt)
  aws kms encrypt --key-id alias/app --plaintext fileb://tok \\
      --query CiphertextBlob --output text | kmsenv set --ciphertext API_TOKEN
  kmsenv set --secret DB_PASSWORD prod/db --json-key password
                                     (a Secrets Manager secret, read at every start)
  kmsenv set --secret OLD_PASSWORD prod/db --json-key password --version-stage AWSPREVIOUS
  kmsenv set --secret TLS_KEY arn:aws:secretsmanager:eu-west-1:111122223333:secret:tls-AbCdEf --as-file
  kmsenv set --ssm API_URL /prod/app/api_url --type String
  kmsenv set --ssm DB_PASSWORD /prod/app/db_password:3   (a Parameter Store SecureString, version 3)

Values are taken byte for byte: use printf %s, not echo, or the value ends in
a newline. A template (--template) uses only ${NAME}, a variable of the files,
and $$ for a literal $; it is resolved after decryption, never re-expanded,
and covered by the MAC.

A reference (--secret, --ssm) stores no value: the file names the secret or
parameter (under the MAC), and every start reads it, so a rotated secret is
picked up without touching the file. The secret is written as its full ARN
(from a test read unless --no-verify); a parameter by name is read in the
configured region (under a trust pin, give its ARN). Parameter Store needs
the kmsenv-full binary (cargo feature `ssm`).")]
    Set(SetArgs),

    /// Remove entries from the file.
    #[command(after_help = "Example:\n  kmsenv unset OLD_TOKEN LEGACY_URL")]
    Unset(UnsetArgs),

    /// Print one decrypted value (exactly its bytes; a newline only on a terminal).
    #[command(after_help = "Examples:\n  kmsenv get DATABASE_URL\n  kmsenv get TLS_KEY > key.pem")]
    Get(GetArgs),

    /// List names, kinds and keys — never values.
    #[command(after_help = "Examples:
  kmsenv -f prod.toml list
  kmsenv list --values-hash -f kmsenv.toml   (git textconv: which names changed, no values)")]
    List(ListArgs),

    /// Open every file, verify its MAC and decrypt every value; for CI.
    #[command(after_help = "Examples:
  kmsenv check
  kmsenv check --fix-mac     (after a hand merge: re-verify every value, write a new MAC)")]
    Check(CheckArgs),

    /// Print decrypted values as dotenv, POSIX shell or JSON, or hand them to later GitHub Actions steps.
    #[command(after_help = "Examples:
  eval \"$(kmsenv export --format shell)\"
  kmsenv export --format json | jq .DATABASE_URL
  kmsenv -f ci.toml export --format github      (in a GitHub Actions step)

--format github prints ::add-mask:: for every line of every secret value
(sealed, kms, and templates that use one; never plain values), then appends
every variable to the file named by $GITHUB_ENV as NAME<<DELIMITER with a
random delimiter. Without $GITHUB_ENV it writes nothing and exits 125.")]
    Export(ExportArgs),

    /// Check files offline for plaintext secrets and weak protection (no AWS, no credentials).
    #[command(after_help = "Examples:
  kmsenv lint                                  (./kmsenv.toml, or $KMSENV_FILE)
  kmsenv lint kmsenv.toml config/kmsenv.prod.toml
  kmsenv lint --format json kmsenv.toml
  kmsenv lint --trust-key arn:aws:kms:us-east-1:111122223333:key/1234abcd-... prod.toml
  API_URL = \"https://x.example/?k=AKIA...\"   # kmsenv:allow-plain   (silences that line)

Reports a plain value that looks like a secret (AWS, GitHub, Slack and Stripe
live keys, private keys, JWTs, URLs with a password, long random strings), a
kms value not bound to its name, a keyless file mixing plain and kms values, a
format-1 file, keys without a MAC and, with --trust-key, a file no trusted key
wraps. Never prints a value. Exit 0 clean, 1 findings, 125 a file unreadable.
For a commit hook: .pre-commit-hooks.yaml, or examples/git-hooks/pre-commit.")]
    Lint(LintArgs),

    /// New data key: every sealed value re-sealed, the MAC rewritten.
    #[command(after_help = "Examples:
  kmsenv rotate
  kmsenv rotate --kms-values   (also ReEncrypt direct kms values to the file's first key)

Old ciphertexts in git history stay readable by whoever could read them before:
rotate after someone leaves, and rotate the secrets themselves when they matter.")]
    Rotate(RotateArgs),

    /// Add, remove or list the KMS keys that wrap the data key.
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Edit the decrypted values in $EDITOR; only changed values are re-sealed.
    #[command(after_help = "Example:
  EDITOR=vim kmsenv edit

The values are shown as dotenv text in a private tmpfs folder (mode 0700, file
0600) that is removed on every exit path. New names are sealed; existing entries
keep their kind; a deleted line removes the entry; unchanged values keep their
exact ciphertext, so the git diff shows only what changed.")]
    Edit,

    /// Rewrite a format-1 file as format 2, whose MAC also covers the wrapping keys.
    #[command(after_help = "Example:
  kmsenv -f prod.toml upgrade

Needs kms:Decrypt on every wrapping key: each must open the same data key
before the new MAC vouches for the key list. Direct values delivered as files
are re-encrypted with \"kmsenv:file\" = \"true\" in their context (kms:ReEncrypt*).
Any other writing command upgrades the file too.")]
    Upgrade,

    /// Seal every entry of a dotenv file into the file.
    #[command(after_help = "Examples:
  kmsenv import < .env
  kmsenv import --plain config.env     (not secret: stored in clear)")]
    Import(ImportArgs),

    /// Print the shell completion script for bash, zsh or fish.
    #[command(after_help = "Examples:
  kmsenv completions bash > /etc/bash_completion.d/kmsenv
  kmsenv completions zsh > \"${fpath[1]}/_kmsenv\"
  kmsenv completions fish > ~/.config/fish/completions/kmsenv.fish")]
    Completions(CompletionsArgs),

    /// Print the kmsenv(1) man page, a subcommand's page, or write them all.
    #[command(after_help = "Examples:
  kmsenv man | man -l -
  kmsenv man keys add | man -l -
  kmsenv man --out-dir /usr/local/share/man/man1")]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells whose completion scripts are tested (tests/release.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The subcommand whose page to print (e.g. `exec`, `keys add`); none: kmsenv(1).
    #[arg(value_name = "SUBCOMMAND", conflicts_with = "out_dir")]
    pub command: Vec<String>,

    /// Write kmsenv.1 and one kmsenv-SUBCOMMAND.1 per subcommand into this folder.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print `NAME kind hash` per entry, where hash is a SHA-256 of the stored
    /// text (ciphertext or plain value): changes show, values do not, no KMS call.
    #[arg(long)]
    pub values_hash: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Also ReEncrypt direct kms values to the file's first key (same context).
    #[arg(long)]
    pub kms_values: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Wrap the current data key under another KMS key (another region or account).
    #[command(after_help = "Example:\n  kmsenv keys add arn:aws:kms:us-west-2:111122223333:key/5678efgh-...")]
    Add {
        /// KMS key: ARN, key id or alias.
        key: String,
    },
    /// Remove a wrapping (never the last; the file must still open without it).
    #[command(
        after_help = "Example:\n  kmsenv keys remove arn:aws:kms:us-west-2:111122223333:key/5678efgh-..."
    )]
    Remove {
        /// The key's ARN as listed by `kmsenv keys list`.
        key: String,
    },
    /// List the wrapping keys with their regions.
    #[command(after_help = "Example:\n  kmsenv keys list")]
    List,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Variables already in the environment win over the file's.
    #[arg(long)]
    pub no_override: bool,

    /// Start from an empty environment instead of the inherited one.
    #[arg(long)]
    pub pristine: bool,

    /// Set only these variables from the files (repeatable, or comma-separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',', num_args = 1..)]
    pub only: Vec<String>,

    /// Stay as the command's parent, as PID 1 must: reap every orphan, forward
    /// every signal, exit with the command's code (128+N if signal N killed it).
    /// For Kubernetes, ECS and any app that does not reap; not needed under
    /// `docker run --init`.
    #[arg(long)]
    pub init: bool,

    /// After decrypting, run the command as USER[:GROUP] (names, or numeric ids
    /// that need no /etc/passwd). kmsenv must start as root; 125 if it cannot
    /// switch, or if root could be regained after the switch.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// KMS key (ARN, key id or alias) that wraps the data key (repeatable).
    #[arg(long = "key", required = true, value_name = "KEY")]
    pub keys: Vec<String>,

    /// Encryption context pair sent with every KMS call (repeatable).
    #[arg(long = "context", value_name = "K=V")]
    pub context: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Variable name; with --plain, NAME=VALUE is accepted.
    pub name: String,

    /// Store the value in clear (for non-secrets); still covered by the MAC.
    #[arg(long, conflicts_with = "kms")]
    pub plain: bool,

    /// Store a direct KMS ciphertext (needs only kms:Encrypt, not the data key).
    #[arg(long)]
    pub kms: bool,

    /// Store a template: `${NAME}` (another variable of the files) and `$$`
    /// (a literal `$`), resolved after decryption; read from stdin like a value.
    #[arg(long, conflicts_with_all = ["plain", "kms", "ciphertext"])]
    pub template: bool,

    /// KMS key for --kms (default: the file's first key) or --ciphertext.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// Read the value from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,

    /// Deliver the value to the program as a file (memfd); the variable holds its path.
    #[arg(long, conflicts_with = "plain")]
    pub as_file: bool,

    /// stdin is a KMS CiphertextBlob made by another tool (raw bytes or base64):
    /// store it as a direct kms value after checking that it decrypts.
    #[arg(long, conflicts_with_all = ["plain", "kms"])]
    pub ciphertext: bool,

    /// With --ciphertext: the encryption context it was made with (repeatable).
    #[arg(long = "context", requires = "ciphertext", value_name = "K=V")]
    pub context: Vec<String>,

    /// With --ciphertext, --secret or --ssm: store it without a test read
    /// (--secret then needs the full ARN).
    #[arg(long)]
    pub no_verify: bool,

    /// Store a reference to a Secrets Manager secret, read at every start:
    /// `set --secret NAME SECRET_ID`. SECRET_ID may be a name or a partial ARN:
    /// the full ARN from a test read is written.
    #[arg(long, requires = "target", conflicts_with_all = ["plain", "kms", "template", "ciphertext", "ssm", "from_file", "key"])]
    pub secret: bool,

    /// Store a reference to a Parameter Store parameter, read at every start:
    /// `set --ssm NAME PARAM`, PARAM a name or ARN with an optional :VERSION or :LABEL.
    #[arg(long, requires = "target", conflicts_with_all = ["plain", "kms", "template", "ciphertext", "from_file", "key"])]
    pub ssm: bool,

    /// With --secret or --ssm: the secret id or parameter to reference.
    #[arg(value_name = "SECRET_ID|PARAM")]
    pub target: Option<String>,

    /// With --secret: take this exact top-level key of a JSON secret (its value must be a string).
    #[arg(long, requires = "secret", value_name = "KEY")]
    pub json_key: Option<String>,

    /// With --secret: read this staging label (e.g. AWSPREVIOUS) instead of AWSCURRENT.
    #[arg(
        long,
        requires = "secret",
        conflicts_with = "version_id",
        value_name = "STAGE"
    )]
    pub version_stage: Option<String>,

    /// With --secret: read this version id instead of AWSCURRENT.
    #[arg(long, requires = "secret", value_name = "ID")]
    pub version_id: Option<String>,

    /// With --ssm: the parameter's type, `SecureString` (the default) or `String`.
    #[arg(long = "type", requires = "ssm", value_name = "TYPE")]
    pub param_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// Names to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Variable to print.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Re-verify every value and write a new MAC (after a hand merge).
    #[arg(long)]
    pub fix_mac: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Dotenv)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// NAME='value' lines that sh and dotenv parsers read alike (else an error).
    Dotenv,
    /// export NAME='value' lines, POSIX single-quoted: safe for eval.
    Shell,
    /// One JSON object of names to values (values must be UTF-8).
    Json,
    /// GitHub Actions: ::add-mask:: every secret line, then append to $GITHUB_ENV.
    Github,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Files to check (default: the -f files, $KMSENV_FILE, or ./kmsenv.toml).
    #[arg(value_name = "FILE")]
    pub paths: Vec<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = LintFormat::Text)]
    pub format: LintFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintFormat {
    /// One `file:line:column: NAME: what` line per finding, and what to do.
    Text,
    /// `{"findings": [...], "errors": [...]}`, for tools.
    Json,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// dotenv file to read (default: stdin).
    pub path: Option<PathBuf>,

    /// Store the values in clear (for non-secrets).
    #[arg(long)]
    pub plain: bool,
}
