//! One file per subcommand, and what they share: which files to use, the
//! deadline, the AWS options, and the read-modify-write cycle of writers.

mod check;
mod docs;
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
mod upgrade;

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{Cli, Command, Global};
use crate::document::{Document, FORMAT_VERSION};
use crate::envelope::DataKey;
use crate::error::{Class, Error, Result};
use crate::kms::{AwsKms, AwsOptions, Session};
use crate::resolve::{self, OpenedFile, Selection};
use crate::s3;
use crate::store::{self, Editor, Lock, Mode};
use crate::terminal::escape;
use crate::trust::{TRUST_ENV, TrustPin};

/// Everything a command needs from the global options.
pub struct Ctx {
    pub files: Vec<PathBuf>,
    pub aws: AwsOptions,
    pub deadline: Instant,
    pub verbose: bool,
    pub quiet: bool,
    /// `--trust-key` / `KMSENV_TRUST_KEYS`: the keys every file must open through.
    pub pin: Option<TrustPin>,
    /// The run's one AWS session: started on first need (an S3 file, a KMS
    /// call), then shared, so credentials are resolved once.
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
        let pin = TrustPin::from_sources(&g.trust_keys, std::env::var_os(TRUST_ENV))?;
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
            pin,
            session: OnceCell::new(),
        })
    }

    /// What every loaded file must pass before it is used: the trust pin's
    /// offline checks (`writing`: for a writer, which upgrades a format-1 file).
    pub fn admit(&self, doc: &Document, writing: bool) -> Result<()> {
        match &self.pin {
            Some(pin) => pin.admit(doc, writing),
            None => Ok(()),
        }
    }

    /// The one-line warning for a format-1 file that is read (not written:
    /// writers upgrade it).
    fn warn_legacy(&self, doc: &Document) {
        if doc.is_legacy() && doc.has_keys() {
            self.note(format!(
                "warning: {}: format version 1: its MAC does not cover the wrapping keys; upgrade it with `kmsenv upgrade`",
                doc.path.display()
            ));
        }
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
                docs.push(Some(Document::load(p)?));
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
        let docs: Vec<Document> = docs.into_iter().flatten().collect();
        for doc in &docs {
            self.admit(doc, false)?;
            self.warn_legacy(doc);
        }
        Ok(docs)
    }

    /// Open `docs`, calling KMS only when something needs it.
    pub fn open(&self, docs: &[Document], sel: Selection<'_>) -> Result<Vec<OpenedFile>> {
        if !resolve::needs_kms(docs, sel) {
            return resolve::open_local(docs, sel);
        }
        if let Some(pin) = &self.pin {
            for d in docs {
                for k in d.keys.iter().filter(|k| !pin.trusts(&k.arn)) {
                    self.info(format!(
                        "{}: skipping untrusted wrapping key {}",
                        d.path.display(),
                        k.arn
                    ));
                }
            }
        }
        let fallback = resolve::first_arn_region(docs);
        let session = self.shared_session(fallback.clone())?;
        // The session may have started before these files were known (to read
        // them from S3): KMS gets their key region on the shared configuration.
        let kms = AwsKms::new(session.kms.aws().clone(), &self.aws, fallback);
        session.block_on(resolve::open_with(
            &kms,
            docs,
            sel,
            self.deadline,
            self.pin.as_ref(),
        ))
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

    /// Progress for people: stderr, unless -q. Escaped: it may quote the file.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("kmsenv: {}", escape(msg.as_ref()));
        }
    }

    /// Details for -v: stderr. Callers pass names, never values.
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("kmsenv: {}", escape(msg.as_ref()));
        }
    }

    /// The run's AWS session, for a command that calls KMS about `docs`.
    pub fn session(&self, docs: &[Document]) -> Result<&Session> {
        self.shared_session(resolve::first_arn_region(docs))
    }

    fn start_session(&self, fallback_region: Option<String>) -> Result<Session> {
        crate::tls::check_env().map_err(Error::usage)?;
        Session::start(&self.aws, self.deadline, fallback_region)
            .map_err(|e| Error::new(Class::Io, format!("cannot start the async runtime: {e}")))
    }
}

/// Run the parsed command line. Returns only when there is nothing to exec.
pub fn run(cli: Cli) -> Result<()> {
    // Completions and man pages come from the command line's definition alone:
    // no file, no AWS, no KMSENV_* variable can make them fail.
    match &cli.command {
        Command::Completions(a) => return docs::completions(a),
        Command::Man(a) => return docs::man(a),
        _ => {}
    }
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
        Command::Upgrade => upgrade::run(&ctx),
        // Answered above, before the context.
        Command::Completions(_) | Command::Man(_) => Ok(()),
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

/// A file opened for writing: locked and loaded, with its data key opened and
/// checked on first need. The one way a command changes a file.
///
/// Nothing is encrypted, wrapped or MAC'd under a key list that was not
/// verified: the data key is handed out only after the MAC verified (format 2
/// covers the keys), or, where no MAC vouches for the keys (format 1, or
/// `check --fix-mac`), after every wrapping opened the same data key. Saving
/// writes format 2.
pub struct Writer<'c> {
    ctx: &'c Ctx,
    _lock: Lock,
    doc: Document,
    editor: Editor,
    /// Verified for `doc`, or the new one after `rotate`.
    data_key: Option<DataKey>,
}

/// How much the file's MAC is trusted when its data key is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MacCheck {
    /// The MAC must verify (format 2: it covers the keys; format 1: it does not,
    /// so every wrapping must also open the same data key).
    Verify,
    /// `check --fix-mac`: the MAC is not trusted; every wrapping must agree.
    Replace,
}

impl<'c> Writer<'c> {
    /// Lock and load `path`. Nothing is unwrapped yet.
    pub fn open(ctx: &'c Ctx, path: &Path) -> Result<Writer<'c>> {
        let lock = store::lock(path)?;
        let doc = Document::load(path)?;
        ctx.admit(&doc, true)?;
        let editor = Editor::new(&doc)?;
        Ok(Writer {
            ctx,
            _lock: lock,
            doc,
            editor,
            data_key: None,
        })
    }

    /// The file as it was loaded.
    pub fn doc(&self) -> &Document {
        &self.doc
    }

    /// The edits that `save` writes.
    pub fn editor(&mut self) -> &mut Editor {
        &mut self.editor
    }

    /// The run's AWS session.
    pub fn session(&self) -> Result<&'c Session> {
        self.ctx.session(std::slice::from_ref(&self.doc))
    }

    /// The file's data key, once the file verified; `None` for a file without keys.
    pub fn data_key(&mut self) -> Result<Option<&DataKey>> {
        self.open_data_key(MacCheck::Verify)
    }

    /// Seal `value` for `name` under the verified data key.
    pub fn seal(&mut self, name: &str, value: &[u8]) -> Result<String> {
        let path = self.doc.path.display().to_string();
        match self.data_key()? {
            Some(dk) => Ok(dk.seal(name, value)),
            None => Err(Error::usage(format!("{path}: has no [[kmsenv.keys]] to seal {name} with"))
                .with_hint(
                    "use --kms (one KMS ciphertext per value), or create a keyed file with `kmsenv init --key KEY`",
                )),
        }
    }

    /// The data key for `check --fix-mac`, which does not trust the old MAC:
    /// every wrapping must open the same data key.
    pub fn data_key_for_new_mac(&mut self) -> Result<&DataKey> {
        let path = self.doc.path.display().to_string();
        self.open_data_key(MacCheck::Replace)?
            .ok_or_else(|| Error::usage(format!("{path}: has no [[kmsenv.keys]], so it has no MAC to fix")))
    }

    /// The data key opened through every wrapping but the `index`-th, with the
    /// MAC of the file as it is verified: `keys remove` proves the file still
    /// opens without that key.
    pub fn data_key_without(&mut self, index: usize) -> Result<&DataKey> {
        if self.doc.is_legacy() {
            // No MAC vouches for a format-1 key list: every wrapping (so also
            // those that remain) must open the same data key first.
            let path = self.doc.path.display().to_string();
            return self
                .open_data_key(MacCheck::Verify)?
                .ok_or_else(|| Error::usage(format!("{path}: has no [[kmsenv.keys]]")));
        }
        let mut rest = self.doc.clone();
        rest.keys.remove(index);
        let session = self.session()?;
        let (dk, arn) = session
            .block_on(resolve::unwrap_data_key(
                &session.kms,
                &rest,
                self.ctx.deadline,
                self.ctx.pin.as_ref(),
            ))
            .map_err(|e| e.with_hint("the file would not open without this key; nothing was changed"))?;
        self.check_opened(&dk, &arn, MacCheck::Verify)?;
        Ok(self.data_key.insert(dk))
    }

    /// `rotate`: from now on the file is sealed and MAC'd under `dk`, whose
    /// wrappings the caller has put in the editor.
    pub fn replace_data_key(&mut self, dk: DataKey) {
        self.data_key = Some(dk);
    }

    /// The key a new direct value of this file is encrypted to when `--key` is
    /// not given: the first wrapping key, once the key list verified (needs
    /// kms:Decrypt), or the first trusted one under a pin (the pin vouches).
    pub fn direct_value_key(&mut self) -> Result<String> {
        if let Some(pin) = &self.ctx.pin
            && let Some(k) = self.doc.keys.iter().find(|k| pin.trusts(&k.arn))
        {
            return Ok(k.arn.clone());
        }
        let path = self.doc.path.display().to_string();
        let hint = "pass the key to encrypt to with --key ARN (or --trust-key ARN), so an unverified file cannot choose it";
        match self.data_key() {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(
                    Error::usage(format!("{path}: has no [[kmsenv.keys]]; name a key with --key"))
                        .with_hint("e.g. --kms --key arn:aws:kms:REGION:ACCOUNT:key/ID"),
                );
            }
            Err(e) => {
                return Err(Error::new(
                    e.class,
                    format!("cannot verify which key to encrypt to: {}", e.message()),
                )
                .with_hint(hint));
            }
        }
        self.doc
            .keys
            .first()
            .map(|k| k.arn.clone())
            .ok_or_else(|| Error::usage(format!("{path}: has no [[kmsenv.keys]]")))
    }

    /// Under a pin, a value may only be encrypted to a trusted key: `arn` is
    /// what KMS answered for the key the user named.
    pub fn check_trusted(&self, name: &str, arn: &str) -> Result<()> {
        match &self.ctx.pin {
            Some(pin) if !pin.trusts(arn) => Err(Error::usage(format!(
                "{}: {name}: key {arn} is not trusted (trusted: {}); nothing was changed",
                self.doc.path.display(),
                pin.describe()
            ))),
            _ => Ok(()),
        }
    }

    fn open_data_key(&mut self, check: MacCheck) -> Result<Option<&DataKey>> {
        if self.data_key.is_some() || !self.doc.has_keys() {
            return Ok(self.data_key.as_ref());
        }
        let session = self.session()?;
        let deadline = self.ctx.deadline;
        let every = check == MacCheck::Replace || self.doc.is_legacy();
        let (dk, arn) = if every {
            session.block_on(resolve::unwrap_every_key(&session.kms, &self.doc, deadline))?
        } else {
            session.block_on(resolve::unwrap_data_key(
                &session.kms,
                &self.doc,
                deadline,
                self.ctx.pin.as_ref(),
            ))?
        };
        self.check_opened(&dk, &arn, check)?;
        Ok(Some(self.data_key.insert(dk)))
    }

    fn check_opened(&self, dk: &DataKey, arn: &str, check: MacCheck) -> Result<()> {
        if check == MacCheck::Verify {
            resolve::verify_mac(&self.doc, dk)?;
        }
        self.ctx
            .info(format!("{}: data key opened with {arn}", self.doc.path.display()));
        Ok(())
    }

    /// Re-validate the edited text, write format 2 and, if the file has keys,
    /// the MAC under the verified data key; replace the file atomically.
    pub fn save(mut self) -> Result<Document> {
        let upgrade = self.doc.version != FORMAT_VERSION;
        if upgrade {
            if self.doc.has_keys() {
                let path = self.doc.path.display().to_string();
                self.open_data_key(MacCheck::Verify).map_err(|e| {
                    if e.class == Class::Kms {
                        Error::kms(format!(
                            "{path}: is format version 1, and a write upgrades it to version 2, which needs kms:Decrypt on every wrapping key; nothing was written: {}",
                            e.message()
                        ))
                        .with_hint("have someone with kms:Decrypt run `kmsenv upgrade` and commit the result, then try again")
                    } else {
                        e
                    }
                })?;
            }
            self.editor.set_version(FORMAT_VERSION)?;
        }
        let mut doc = self.editor.finish()?;
        // A change to what the MAC covers (or an upgrade) needs the verified
        // data key; with it the MAC is always written anew (`check --fix-mac`
        // changes nothing else). Without it only direct `kms` entries changed:
        // they are outside the MAC, which is what lets a contributor with only
        // kms:Encrypt add one.
        if doc.has_keys() {
            if doc.mac_input() != self.doc.mac_input() {
                self.open_data_key(MacCheck::Verify)?;
            }
            if let Some(dk) = &self.data_key {
                let mac = dk.mac(&doc.mac_input());
                self.editor.set_mac(&mac)?;
                doc = self.editor.finish()?;
            }
        }
        store::write_atomic(&doc.path, &doc.text, Mode::Replace)?;
        if upgrade {
            self.ctx.note(format!(
                "{}: upgraded to format version {FORMAT_VERSION} (its MAC now covers the wrapping keys)",
                doc.path.display()
            ));
        }
        Ok(doc)
    }
}
