//! One run of kmsenv: the files, the deadline, what is printed, the trust pin,
//! and the one AWS session and key service, started lazily and shared.
//!
//! Every command gets a [`Run`]; nothing else reaches AWS. A reading command
//! loads its files here ([`Run::load_all`]) and opens them ([`Run::open`]); a
//! writing command opens its one file through a `Writer` built on the run. The
//! key service is generic ([`Connect`]), so every command also runs against the
//! in-memory one of the unit tests.

use std::cell::{OnceCell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::aws::{AwsOptions, Service};
use crate::cli::Global;
use crate::document::Document;
use crate::early;
use crate::envelope::DataKey;
use crate::error::{Class, Error, Result};
use crate::kms::{AwsKms, KeyService};
use crate::resolve::{self, OpenedFile, Selection};
use crate::s3;
use crate::session::Session;
use crate::template;
use crate::terminal::escape;
use crate::trust::{TRUST_ENV, TrustPin};
use crate::unlock;

/// How a key service is started on the run's session: the AWS one from the
/// session's configuration, the unit tests' one up front ([`Run::offline`]).
pub trait Connect: KeyService + crate::refs::RefService + Sized {
    /// The service for the run's files; `fallback_region` is their first key
    /// ARN's region, for keys given without an ARN when none is configured.
    fn connect(session: &Session, opts: &AwsOptions, fallback_region: Option<String>) -> Result<Self>;
}

impl Connect for AwsKms {
    fn connect(session: &Session, opts: &AwsOptions, fallback_region: Option<String>) -> Result<Self> {
        Ok(AwsKms::new(session.aws()?.clone(), opts, fallback_region))
    }
}

/// Everything a command needs from the global options, and the session.
pub struct Run<K = AwsKms> {
    pub files: Vec<PathBuf>,
    pub deadline: Instant,
    pub verbose: bool,
    pub quiet: bool,
    /// `--trust-key` / `KMSENV_TRUST_KEYS`: the keys every file must open through.
    pub pin: Option<TrustPin>,
    aws: AwsOptions,
    /// Started on first need (an S3 file, a KMS call), then shared, so
    /// credentials are resolved once.
    session: OnceCell<Session>,
    /// Built once, on the session, for the files' keys.
    kms: OnceCell<K>,
    /// The first key ARN region of every file loaded (the fallback region).
    loaded_region: OnceCell<Option<String>>,
    /// The data key of the one file [`Run::load_all_to_open`] opened while it
    /// parsed the file, with the header it was opened from: taken by the next
    /// [`Run::open_each`] of a file with that header.
    early: RefCell<Option<(Document, early::Opened)>>,
}

impl Run<AwsKms> {
    pub fn new(g: &Global) -> Result<Run<AwsKms>> {
        if !(g.timeout.is_finite() && g.timeout > 0.0 && g.timeout <= 86_400.0) {
            return Err(Error::usage(format!(
                "--timeout {}: give a number of seconds between 0 and 86400",
                g.timeout
            )));
        }
        let files = if !g.files.is_empty() {
            g.files.clone()
        } else {
            match std::env::var_os("KMSENV_FILE") {
                Some(list) if !list.is_empty() => s3::split_file_list(&list),
                _ => vec![PathBuf::from("kmsenv.toml")],
            }
        };
        Ok(Run {
            files,
            deadline: Instant::now() + Duration::from_secs_f64(g.timeout),
            verbose: g.verbose,
            quiet: g.quiet,
            pin: TrustPin::from_sources(&g.trust_keys, std::env::var_os(TRUST_ENV))?,
            aws: AwsOptions {
                region: g.region.clone(),
                profile: g.profile.clone(),
                endpoint_url: g.endpoint_url.clone(),
                verbose: g.verbose,
            },
            session: OnceCell::new(),
            kms: OnceCell::new(),
            loaded_region: OnceCell::new(),
            early: RefCell::new(None),
        })
    }
}

impl<K: Connect> Run<K> {
    /// A run on `files` whose key service is `kms`, with an offline session:
    /// how unit tests run commands against the in-memory service.
    pub fn offline(files: Vec<PathBuf>, kms: K, pin: Option<TrustPin>) -> Result<Run<K>> {
        Ok(Run {
            files,
            deadline: Instant::now() + Duration::from_secs(30),
            verbose: false,
            quiet: true,
            pin,
            aws: AwsOptions::default(),
            session: OnceCell::from(Session::offline()?),
            kms: OnceCell::from(kms),
            loaded_region: OnceCell::new(),
            early: RefCell::new(None),
        })
    }

    /// The session, started now if need be.
    fn session(&self, fallback_region: Option<String>) -> Result<&Session> {
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        let started = Session::start(&self.aws, self.deadline, fallback_region)?;
        Ok(self.session.get_or_init(|| started))
    }

    /// The session and the key service for `docs`, started on first use.
    pub fn kms(&self, docs: &[Document]) -> Result<(&Session, &K)> {
        let fallback = match self.loaded_region.get() {
            Some(r) => r.clone(),
            None => resolve::first_arn_region(docs),
        };
        let session = self.session(fallback.clone())?;
        if let Some(k) = self.kms.get() {
            return Ok((session, k));
        }
        let k = K::connect(session, &self.aws, fallback)?;
        Ok((session, self.kms.get_or_init(|| k)))
    }

    /// Stop the session (its runtime, its connections, what it started) before
    /// exec. With `join`, wait (briefly) for the runtime's threads to end, for a
    /// caller that forks next (`exec --init`): a fork child may allocate only in a
    /// single-threaded process. A plain exec does not wait: execve ends them.
    pub fn end_session(&mut self, join: bool) {
        drop(self.kms.take());
        if let Some(session) = self.session.take() {
            session.end(join);
        }
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
                docs.push(Some(Document::load(p, self.deadline)?));
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
            let session = self.session(resolve::first_arn_region(docs.iter().flatten()))?;
            let aws = session.aws()?;
            let fetched = session.block_on(futures_util::future::join_all(
                remote.iter().map(|(_, _, url)| s3::fetch(aws, url)),
            ));
            for ((i, path, _), got) in remote.into_iter().zip(fetched) {
                let bytes = got.map_err(|e| e.into_error(path.display(), "S3 GetObject", Service::S3))?;
                self.info(format!(
                    "{}: read from S3 ({} bytes)",
                    path.display(),
                    bytes.len()
                ));
                docs[i] = Some(Document::from_bytes(path, bytes)?);
            }
        }
        self.accept(docs.into_iter().flatten().collect())
    }

    /// What every loaded file goes through once parsed: the pin's offline
    /// checks, the format-1 warning, and the fallback region.
    fn accept(&self, docs: Vec<Document>) -> Result<Vec<Document>> {
        for doc in &docs {
            self.admit(doc, false)?;
            self.warn_legacy(doc);
        }
        let _ = self.loaded_region.set(resolve::first_arn_region(&docs));
        Ok(docs)
    }

    /// [`Run::load_all`] for a command that opens every file next (`exec`,
    /// `export`, `get`), with `check`, the command's own test of the files (a
    /// name that must exist), run before anything waits for KMS. One big local
    /// file has its data key opened while the rest of it is parsed ([`early`]).
    /// Not under a trust pin: there nothing is asked of KMS before the whole
    /// file passed the pin's checks. Not when the header has no key ARN with a
    /// region: the fallback region then comes from the whole file.
    pub fn load_all_to_open(&self, check: &dyn Fn(&[Document]) -> Result<()>) -> Result<Vec<Document>> {
        let checked = |docs: Vec<Document>| check(&docs).map(|()| docs);
        let path = match self.files.as_slice() {
            [path] if self.pin.is_none() && !s3::is_url(path) => path,
            _ => return checked(self.load_all()?),
        };
        let text = Document::read(path, self.deadline)?;
        let head = (text.len() >= early::MIN_BYTES)
            .then(|| early::head(&text))
            .flatten()
            .and_then(|h| Document::parse(path, h.to_string()).ok())
            .filter(|h| h.has_keys() && resolve::first_arn_region(std::slice::from_ref(h)).is_some());
        let Some(head) = head else {
            return checked(self.accept(vec![Document::parse(path, text)?])?);
        };
        let (session, kms) = self.kms(std::slice::from_ref(&head))?;
        let unwrap = unlock::unwrap_data_key(kms, &head, self.deadline, None);
        let ready = |doc: Document| {
            let docs = checked(self.accept(vec![doc])?)?;
            let same = early::same_head(&head, &docs[0]);
            Ok((docs, same))
        };
        let (key, docs) = early::parse_while(session, path, text, unwrap, ready);
        let docs = docs?;
        if let Some(key) = key {
            *self.early.borrow_mut() = Some((head, key));
        }
        Ok(docs)
    }

    /// Open `docs`, calling KMS only when something needs it, and resolve
    /// their templates across all of them (`template`). With `sel.only`, what
    /// the selected templates use is opened too, and only the selection returned.
    pub fn open(&self, docs: &[Document], sel: Selection<'_>) -> Result<Vec<OpenedFile>> {
        let Some(only) = sel.only else {
            let mut files = self.open_each(docs, sel)?;
            template::expand(docs, &mut files)?;
            return Ok(files);
        };
        let needed = template::closure(docs, only);
        let wide = Selection {
            only: Some(&needed),
            ..sel
        };
        let mut files = self.open_each(docs, wide)?;
        template::expand(docs, &mut files)?;
        for f in &mut files {
            f.values.retain(|v| only.contains(&v.name));
        }
        Ok(files)
    }

    /// Open `docs` each on its own (`check` reports each file), templates not
    /// yet resolved: [`Run::open`] is the way for a command that uses values.
    pub fn open_each(&self, docs: &[Document], sel: Selection<'_>) -> Result<Vec<OpenedFile>> {
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
        let (session, kms) = self.kms(docs)?;
        let early = match (self.early.take(), docs) {
            (Some((head, key)), [doc]) if early::same_head(&head, doc) => Some(key),
            _ => None,
        };
        session.block_on(resolve::open_with(
            kms,
            docs,
            sel,
            self.deadline,
            self.pin.as_ref(),
            early,
        ))
    }

    /// The data key of `doc` (and the key that opened it), MAC verified;
    /// `None` for a file without keys. With [`Run::open_unlocked`], for a
    /// command that needs the key again later (`edit`).
    pub fn unlock(&self, doc: &Document) -> Result<Option<(DataKey, String)>> {
        if !doc.has_keys() {
            return Ok(None);
        }
        let (session, kms) = self.kms(std::slice::from_ref(doc))?;
        let (dk, arn) = session.block_on(unlock::unwrap_data_key(
            kms,
            doc,
            self.deadline,
            self.pin.as_ref(),
        ))?;
        unlock::verify_mac(doc, &dk)?;
        Ok(Some((dk, arn)))
    }

    /// Open `doc` under a data key the caller holds (`unlock`, or a writer's).
    pub fn open_unlocked(
        &self,
        doc: &Document,
        dk: Option<&DataKey>,
        opened_by: Option<String>,
        sel: Selection<'_>,
    ) -> Result<OpenedFile> {
        let (session, kms) = self.kms(std::slice::from_ref(doc))?;
        session.block_on(resolve::open_unlocked(
            kms,
            doc,
            dk,
            opened_by,
            sel,
            self.pin.as_ref(),
        ))
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
