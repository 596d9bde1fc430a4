//! One file per subcommand, and what they share: which files to use, the
//! deadline, the AWS options, and the read-modify-write cycle of writers.

mod check;
mod edit;
mod exec;
mod export;
mod get;
mod import;
mod init;
mod keys;
mod list;
mod rotate;
mod set;
mod unset;

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{Cli, Command, Global};
use crate::document::Document;
use crate::envelope::DataKey;
use crate::error::{Class, Error, Result};
use crate::kms::{AwsKms, AwsOptions, Session};
use crate::resolve::{self, OpenedFile, Selection};
use crate::s3;
use crate::store::{self, Editor, Lock, Mode};
use crate::terminal::escape;

/// Everything a command needs from the global options.
pub struct Ctx {
    pub files: Vec<PathBuf>,
    pub aws: AwsOptions,
    pub deadline: Instant,
    pub verbose: bool,
    pub quiet: bool,
    /// The AWS session of a reading command: started on first need (an S3
    /// file, a KMS call), then shared, so credentials are resolved once.
    session: OnceCell<Session>,
}

impl Ctx {
    fn new(g: &Global) -> Result<Ctx> {
        if !(g.timeout.is_finite() && g.timeout > 0.0 && g.timeout <= 86_400.0) {
            return Err(Error::usage(format!(
                "--timeout {}: give a number of seconds between 0 and 86400",
                g.timeout
            )));
        }
        let deadline = Instant::now() + Duration::from_secs_f64(g.timeout);
        let files = if !g.files.is_empty() {
            g.files.clone()
        } else {
            match std::env::var_os("KMSENV_FILE") {
                Some(list) if !list.is_empty() => s3::split_file_list(&list),
                _ => vec![PathBuf::from("kmsenv.toml")],
            }
        };
        let endpoint_url = g.endpoint_url.clone();
        Ok(Ctx {
            files,
            aws: AwsOptions {
                region: g.region.clone(),
                profile: g.profile.clone(),
                endpoint_url,
                verbose: g.verbose,
            },
            deadline,
            verbose: g.verbose,
            quiet: g.quiet,
            session: OnceCell::new(),
        })
    }

    /// Parse and validate every file before anything else happens: local files
    /// first (no network for a typo), then the `s3://` ones, fetched at once.
    pub fn load_all(&self) -> Result<Vec<Document>> {
        let mut docs: Vec<Option<Document>> = Vec::with_capacity(self.files.len());
        let mut remote = Vec::new();
        for p in &self.files {
            if s3::is_url(p) {
                remote.push((docs.len(), p, s3::parse(p)?));
                docs.push(None);
            } else {
                docs.push(Some(Document::load_by(p, self.deadline)?));
            }
        }
        if !remote.is_empty() {
            if !s3::ENABLED {
                return Err(Error::usage(format!(
                    "{}: this kmsenv was built without S3 support",
                    remote[0].1.display()
                ))
                .with_hint(
                    "use a build with the `s3` cargo feature (`make static-full`), or `aws s3 cp` the file",
                ));
            }
            // The local files' key region, for the SDK's own calls (STS).
            let session = self.shared_session(resolve::first_arn_region(docs.iter().flatten()))?;
            let aws = session.kms.aws();
            let fetched = session.block_on(futures_util::future::join_all(
                remote.iter().map(|(_, _, url)| s3::fetch(aws, url)),
            ));
            for ((i, path, _), got) in remote.into_iter().zip(fetched) {
                let bytes = got.map_err(|e| {
                    let hint = s3::hint(&e);
                    aws_error(&format!("{}:", path.display()), "S3 GetObject", e, hint)
                })?;
                self.info(format!(
                    "{}: read from S3 ({} bytes)",
                    path.display(),
                    bytes.len()
                ));
                docs[i] = Some(Document::from_bytes(path, bytes)?);
            }
        }
        Ok(docs.into_iter().flatten().collect())
    }

    /// Open `docs`, calling KMS only when something needs it.
    pub fn open(&self, docs: &[Document], sel: Selection<'_>) -> Result<Vec<OpenedFile>> {
        if !resolve::needs_kms(docs, sel) {
            return resolve::open_local(docs, sel);
        }
        let fallback = resolve::first_arn_region(docs);
        let session = self.shared_session(fallback.clone())?;
        // The session may have started before these files were known (to read
        // them from S3): KMS gets their key region on the shared configuration.
        let kms = AwsKms::new(session.kms.aws().clone(), &self.aws, fallback);
        session.block_on(resolve::open_with(&kms, docs, sel, self.deadline))
    }

    /// Stop the shared session (its runtime, its connections) before exec.
    pub fn end_session(&mut self) {
        drop(self.session.take());
    }

    fn shared_session(&self, fallback_region: Option<String>) -> Result<&Session> {
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        let started = self.start_session(fallback_region)?;
        Ok(self.session.get_or_init(|| started))
    }

    /// The one file a writing command works on (local: S3 files are read-only).
    pub fn single_file(&self, command: &str) -> Result<&Path> {
        match self.files.as_slice() {
            [one] if s3::is_url(one) => Err(Error::usage(format!(
                "`{command}` writes a local file, and {} is in S3",
                one.display()
            ))
            .with_hint("change a local copy, then upload it: `aws s3 cp kmsenv.toml s3://BUCKET/KEY`")),
            [one] => Ok(one),
            _ => Err(Error::usage(format!(
                "`{command}` writes one file, but {} were given; pass exactly one -f PATH",
                self.files.len()
            ))),
        }
    }

    /// Progress for people: stderr, unless -q. Escaped: it names files and keys.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("kmsenv: {}", escape(msg.as_ref()));
        }
    }

    /// Details for -v: stderr, escaped. Callers pass names, never values.
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("kmsenv: {}", escape(msg.as_ref()));
        }
    }

    /// Start an AWS session of its own, for a command that calls KMS.
    pub fn session(&self, docs: &[Document]) -> Result<Session> {
        self.start_session(resolve::first_arn_region(docs))
    }

    fn start_session(&self, fallback_region: Option<String>) -> Result<Session> {
        crate::tls::check_env().map_err(Error::usage)?;
        Session::start(&self.aws, self.deadline, fallback_region)
            .map_err(|e| Error::new(Class::Io, format!("cannot start the async runtime: {e}")))
    }
}

/// Run the parsed command line. Returns only when there is nothing to exec.
pub fn run(cli: Cli) -> Result<()> {
    // Every command may hold plaintext or a data key: keep them out of core dumps
    // and from ptrace by other users; execve makes the target dumpable again.
    let _ = nix::sys::prctl::set_dumpable(false);
    let mut ctx = Ctx::new(&cli.global)?;
    match cli.command {
        Command::Exec(a) => exec::run(&mut ctx, a),
        Command::Init(a) => init::run(&ctx, a),
        Command::Set(a) => set::run(&ctx, a),
        Command::Unset(a) => unset::run(&ctx, a),
        Command::Get(a) => get::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Rotate(a) => rotate::run(&ctx, a),
        Command::Keys(c) => keys::run(&ctx, c),
        Command::Edit => edit::run(&ctx),
        Command::Check(a) => check::run(&ctx, a),
        Command::Export(a) => export::run(&ctx, a),
        Command::Import(a) => import::run(&ctx, a),
    }
}

/// Write command output to stdout. An error (a closed pipe, a full disk) is a
/// failure like any other, never a panic as with `print!`.
pub fn write_stdout(parts: &[&[u8]]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    parts
        .iter()
        .try_for_each(|p| out.write_all(p))
        .and_then(|()| out.flush())
        .map_err(|e| Error::new(Class::Io, format!("cannot write to stdout: {e}")))
}

/// `K=V` pairs from `--context`; `kmsenv:` keys are reserved.
pub fn parse_context(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Error::usage(format!("--context {p:?}: expected KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(Error::usage(format!("--context {p:?}: the key is empty")));
        }
        if k.starts_with("kmsenv:") {
            return Err(Error::usage(format!(
                "--context {k}: keys starting with `kmsenv:` are reserved"
            )));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// A failed KMS call of a writing command, with the hint for its code.
pub fn kms_error(path: &Path, key: &str, op: &str, e: crate::kms::AwsError) -> Error {
    kms_error_for(path, None, key, op, e)
}

/// The same, for a call about one variable.
pub fn kms_error_for(path: &Path, name: Option<&str>, key: &str, op: &str, e: crate::kms::AwsError) -> Error {
    let name = name.map(|n| format!(" {n}:")).unwrap_or_default();
    let hint = e.hint();
    aws_error(
        &format!("{}:{name}", path.display()),
        &format!("KMS {op} with key {key}"),
        e,
        hint,
    )
}

/// `PLACE: CALL failed: CODE: message`, with what to do about it.
fn aws_error(place: &str, call: &str, e: crate::kms::AwsError, hint: Option<&str>) -> Error {
    let err = Error::kms(format!("{place} {call} failed: {e}"));
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// A file opened for writing: locked, loaded, and — when it has keys — its data
/// key unwrapped and its MAC verified, so we never re-MAC a tampered file.
pub struct Writer {
    _lock: Lock,
    pub doc: Document,
    pub editor: Editor,
    pub data_key: Option<DataKey>,
    pub session: Option<Session>,
}

impl Writer {
    /// Lock and load `path`. With `need_data_key`, unwrap it (if the file has keys).
    pub fn open(ctx: &Ctx, path: &Path, need_data_key: bool) -> Result<Writer> {
        let lock = store::lock(path)?;
        let doc = Document::load_by(path, ctx.deadline)?;
        let editor = Editor::new(&doc)?;
        let mut w = Writer {
            _lock: lock,
            doc,
            editor,
            data_key: None,
            session: None,
        };
        if need_data_key && w.doc.has_keys() {
            w.unwrap_data_key(ctx, true)?;
        }
        Ok(w)
    }

    /// The AWS session, started on first use.
    pub fn session(&mut self, ctx: &Ctx) -> Result<&Session> {
        if self.session.is_none() {
            self.session = Some(ctx.session(std::slice::from_ref(&self.doc))?);
        }
        self.session
            .as_ref()
            .ok_or_else(|| Error::new(Class::Io, "no AWS session"))
    }

    /// Take the AWS session out (started if need be), for commands that edit
    /// while they call KMS.
    pub fn take_session(&mut self, ctx: &Ctx) -> Result<Session> {
        match self.session.take() {
            Some(s) => Ok(s),
            None => ctx.session(std::slice::from_ref(&self.doc)),
        }
    }

    /// Unwrap the data key; with `verify`, check the MAC under it.
    pub fn unwrap_data_key(&mut self, ctx: &Ctx, verify: bool) -> Result<()> {
        let deadline = ctx.deadline;
        let doc = self.doc.clone();
        let session = self.session(ctx)?;
        let (dk, arn) = session.block_on(resolve::unwrap_data_key(&session.kms, &doc, deadline))?;
        if verify {
            resolve::verify_mac(&doc, &dk)?;
        }
        ctx.info(format!("{}: data key opened with {arn}", doc.path.display()));
        self.data_key = Some(dk);
        Ok(())
    }

    /// Re-validate the edited text, rewrite the MAC if the file has keys, and
    /// replace the file atomically.
    pub fn save(mut self) -> Result<Document> {
        let mut doc = self.editor.finish()?;
        match (&self.data_key, doc.has_keys()) {
            (Some(dk), true) => {
                let mac = dk.mac(&doc.mac_input());
                self.editor.set_mac(&mac)?;
                doc = self.editor.finish()?;
            }
            // Only direct `kms` entries changed: they are outside the MAC, which
            // is what lets a contributor with only kms:Encrypt add one.
            (None, true) if doc.mac_input() == self.doc.mac_input() => {}
            (None, true) => {
                return Err(Error::new(
                    Class::Io,
                    "internal: a MAC-covered change without the data key",
                ));
            }
            (_, false) => {}
        }
        store::write_atomic(&doc.path, &doc.text, Mode::Replace)?;
        Ok(doc)
    }
}
