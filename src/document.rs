//! The kmsenv file: reading it and checking it against format version 2 (DESIGN §2).
//!
//! A [`Document`] exists only once the whole file has been validated: names,
//! shapes, base64, references (`reference`), the reserved `kmsenv:` context rule, the binding of a direct
//! value's `file` flag, and the no-downgrade rule of a file without keys (a
//! file that breaks it never becomes a `Document`). Every problem is reported
//! with `file:line:column`. Nothing here decrypts or talks to KMS; checking the MAC
//! needs the data key and happens in `resolve`. Writing the file lives in `store`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use toml_edit::{Item, Key, TableLike, Value as TomlValue};

use crate::envelope::{MacEntry, MacInput, MacKey};
use crate::error::{Error, Result};
use crate::reference::{self, ParamRef, ParamType, Reference, SecretRef, SecretVersion};

/// The format version every writer writes. Its MAC covers the wrapping keys.
pub const FORMAT_VERSION: i64 = 2;
/// The older version this build still reads (with a warning): its MAC leaves
/// the wrapping keys out (DESIGN §2.4).
pub const LEGACY_VERSION: i64 = 1;
/// Files larger than this are refused before parsing: a secrets file is small.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// KMS ciphertext blobs are at most 6144 bytes.
pub const MAX_KMS_BLOB: usize = 6144;
/// The context key that binds a direct value to its variable name (DESIGN §2.5).
pub const VAR_CONTEXT_KEY: &str = "kmsenv:var";
/// The context pair that binds a direct value's `file = true` (DESIGN §2.5):
/// dropping the flag would need a ciphertext made without it.
pub const FILE_CONTEXT_KEY: &str = "kmsenv:file";
pub const FILE_CONTEXT_VALUE: &str = "true";
/// The reserved prefix of context keys.
const RESERVED_PREFIX: &str = "kmsenv:";
/// Inherited variables with this prefix never reach the command.
pub const OWN_ENV_PREFIX: &str = "KMSENV_";

/// One wrapping of the data key (`[[kmsenv.keys]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappingKey {
    pub arn: String,
    /// The KMS `CiphertextBlob` of the data key.
    pub data_key: Vec<u8>,
    /// The base64 text it was read from (trimmed): what the MAC covers.
    pub data_key_text: String,
}

/// The value of one `[env]` entry, as written in the file (never plaintext secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Not secret; in clear, under the MAC.
    Plain(String),
    /// AES-256-GCM under the file's data key (base64 text, checked for shape).
    Sealed(String),
    /// A raw KMS ciphertext, decrypted with its own `Decrypt` call.
    Kms {
        blob: Vec<u8>,
        key: Option<String>,
        context: BTreeMap<String, String>,
    },
    /// `${NAME}` and `$$` over the other variables, resolved after decryption
    /// (`template`). Its text is under the MAC, and it counts as a plain value
    /// for the no-downgrade rule: it decides what the program gets.
    Template(String),
    /// A Secrets Manager secret or a Parameter Store parameter, read at start-up
    /// (`refs`). Under the MAC and a plain value for the no-downgrade rule, like
    /// a template: the reference decides what the program gets.
    Ref(Reference),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Plain(_) => "plain",
            Value::Sealed(_) => "sealed",
            Value::Kms { .. } => "kms",
            Value::Template(_) => "template",
            Value::Ref(r) => r.kind(),
        }
    }
}

/// One `[env]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: Value,
    /// Deliver as a memfd path instead of the value itself.
    pub file: bool,
    /// `line:column` of the name, for messages.
    pub at: Pos,
}

/// A 1-based line and column in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What `lint` sees of a file ([`Document::inspect`]). `doc` is valid only when
/// `refusal` is `None`: lint reads it, nothing opens it.
#[derive(Debug)]
pub struct Inspection {
    pub doc: Document,
    /// Why every reading command would refuse the file, if it would.
    pub refusal: Option<Error>,
    /// Where `version` and `[kmsenv]` are written, for lint's findings.
    pub version_at: Pos,
    pub head_at: Pos,
    /// Entries whose line ends in a `# kmsenv:allow-plain` comment.
    pub allow_plain: BTreeSet<String>,
}

/// The comment that tells `lint` a plain value is meant to be plain.
pub const ALLOW_PLAIN: &str = "kmsenv:allow-plain";

/// A validated kmsenv file.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: PathBuf,
    pub version: i64,
    pub context: BTreeMap<String, String>,
    pub mac: Option<String>,
    pub keys: Vec<WrappingKey>,
    /// In file order.
    pub entries: Vec<Entry>,
    /// The text it was parsed from; writers edit this, keeping comments and order.
    pub text: String,
}

impl Document {
    /// Read and validate the file at `path`, giving up at `deadline` (the run's
    /// `--timeout`): a FIFO or a hung mount must not hold kmsenv past it.
    pub fn load(path: &Path, deadline: Instant) -> Result<Document> {
        Document::parse(path, Document::read(path, deadline)?)
    }

    /// The text of the file at `path` ([`read_text`]), under `deadline`: a FIFO
    /// with no writer, or a hung mount, blocks in the kernel where no timeout
    /// reaches.
    pub fn read(path: &Path, deadline: Instant) -> Result<String> {
        let owned = path.to_path_buf();
        match crate::blocking::within(deadline, move || read_text(&owned)) {
            Ok(Some(read)) => read,
            Ok(None) => Err(Error::input(format!(
                "{}: cannot read: still waiting when the deadline passed (--timeout)",
                path.display()
            ))
            .with_hint("a FIFO with no writer, or a hung mount? check the path, or raise --timeout")),
            Err(e) => Err(Error::io("read", path, &e)),
        }
    }

    /// Read the file at `path` as `lint` does ([`Document::inspect`]).
    pub fn load_inspect(path: &Path, deadline: Instant) -> Result<Inspection> {
        Document::inspect(path, Document::read(path, deadline)?)
    }

    /// Validate `bytes`, read from elsewhere (S3), as the content of `path`.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Document> {
        let text = decode(path, bytes)?;
        Document::parse(path, text)
    }

    /// Validate `text` as the content of `path`.
    pub fn parse(path: &Path, text: String) -> Result<Document> {
        let seen = Document::inspect(path, text)?;
        match seen.refusal {
            Some(e) => Err(e),
            None => Ok(seen.doc),
        }
    }

    /// Read `text` as `lint` does: every shape is checked as for [`Document::parse`],
    /// but a file that breaks a rule between entries (a file without keys that
    /// mixes plain and kms values, or has a MAC) is returned with the reason
    /// instead of refused, so that lint can report it with the rest.
    pub fn inspect(path: &Path, text: String) -> Result<Inspection> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let mut seen = Parser {
            path,
            text: &text,
            line_starts,
        }
        .document()?;
        seen.doc.text = text;
        Ok(seen)
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The encryption context of every data-key operation: the file's context
    /// plus the reserved purpose pair (DESIGN §2.2).
    pub fn data_key_context(&self) -> BTreeMap<String, String> {
        let mut ctx = self.context.clone();
        ctx.insert("kmsenv:purpose".into(), "data-key".into());
        ctx
    }

    /// Whether opening this file needs its data key (it has wrapping keys: the MAC
    /// must be verified before any value is used).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// What the MAC covers: version, context, the wrapping keys (version 2),
    /// and every plain, sealed, template and reference entry. Templates and
    /// references are new kind strings in the same length-prefixed encoding (a
    /// reference's text is its own tagged, length-prefixed fields): no format
    /// change, and a value turned into another kind is a mismatch.
    pub fn mac_input(&self) -> MacInput<'_> {
        let entries = self
            .entries
            .iter()
            .filter_map(|e| {
                let (kind, text) = match &e.value {
                    Value::Plain(t) => ("plain", Cow::Borrowed(t.as_bytes())),
                    Value::Sealed(t) => ("sealed", Cow::Borrowed(t.as_bytes())),
                    Value::Template(t) => ("template", Cow::Borrowed(t.as_bytes())),
                    Value::Ref(r) => (r.kind(), Cow::Owned(r.mac_text())),
                    Value::Kms { .. } => return None,
                };
                Some(MacEntry {
                    name: &e.name,
                    kind,
                    text,
                    file: e.file,
                })
            })
            .collect();
        MacInput {
            version: self.version,
            context: &self.context,
            keys: self
                .keys
                .iter()
                .map(|k| MacKey {
                    arn: &k.arn,
                    data_key: &k.data_key_text,
                })
                .collect(),
            entries,
        }
    }

    /// The context a new direct value of `name` is encrypted with (DESIGN §2.5):
    /// bound to its name, and to its `file` flag when it is delivered as a file.
    pub fn direct_value_context(&self, name: &str, file: bool) -> BTreeMap<String, String> {
        let mut ctx = self.context.clone();
        ctx.insert(VAR_CONTEXT_KEY.into(), name.into());
        if file {
            ctx.insert(FILE_CONTEXT_KEY.into(), FILE_CONTEXT_VALUE.into());
        }
        ctx
    }

    /// Whether this is a version-1 file: its MAC does not cover the keys.
    pub fn is_legacy(&self) -> bool {
        self.version == LEGACY_VERSION
    }
}

fn read_text(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let err = Error::io("read", path, &e);
        if e.kind() == std::io::ErrorKind::NotFound {
            err.with_hint("create it with `kmsenv init --key KEY`, or pass -f PATH")
        } else {
            err
        }
    })?;
    if meta.is_dir() {
        return Err(Error::input(format!(
            "{}: is a directory, not a kmsenv file",
            path.display()
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big(path));
    }
    // Read at most one byte past the cap: a device or a growing file reports a
    // size that means nothing. Sized from the metadata so that a regular file
    // is read in one call, not in a dozen doubling ones that copy it each time.
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_FILE_BYTES + 1), &mut bytes))
        .map_err(|e| Error::io("read", path, &e))?;
    decode(path, bytes)
}

/// The text of a file read as bytes (from disk or S3), refused when over
/// [`MAX_FILE_BYTES`] or not UTF-8.
fn decode(path: &Path, bytes: Vec<u8>) -> Result<String> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(path));
    }
    String::from_utf8(bytes).map_err(|_| {
        Error::input(format!(
            "{}: is not UTF-8 text (TOML files must be)",
            path.display()
        ))
    })
}

fn too_big(path: &Path) -> Error {
    Error::input(format!(
        "{}: larger than {MAX_FILE_BYTES} bytes; a kmsenv file is small",
        path.display()
    ))
}

/// Whether `name` may be an environment variable name in the file.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The name rule (DESIGN §2.1), for the file, the command line and dotenv
/// files alike: what is wrong with `name`, if anything.
pub fn name_rule(name: &str) -> Option<String> {
    if !valid_name(name) {
        return Some(format!(
            "invalid variable name {name:?}: names must match [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    if name.starts_with(OWN_ENV_PREFIX) {
        return Some(format!(
            "{name}: names starting with {OWN_ENV_PREFIX} are reserved for kmsenv's own settings"
        ));
    }
    None
}

/// Check a name given on the command line or in a dotenv file.
pub fn check_name(name: &str) -> Result<()> {
    match name_rule(name) {
        Some(why) => Err(Error::usage(why)),
        None => Ok(()),
    }
}

/// The NUL rule (DESIGN §2.1): an environment string cannot hold a NUL byte; a
/// value delivered as a file (a memfd) may hold any bytes. What is wrong, if anything.
pub fn value_rule(name: &str, value: &[u8], file: bool) -> Option<String> {
    (!file && value.contains(&0))
        .then(|| format!("{name}: value contains a NUL byte, which an environment variable cannot hold"))
}

/// The reserved-context rule (DESIGN §2.5): keys starting with `kmsenv:` are
/// kmsenv's. The file's context may hold none; a direct value of `name` only
/// `"kmsenv:var" = name` and `"kmsenv:file" = "true"`.
pub fn context_rule(key: &str, value: &str, value_of: Option<&str>) -> Option<String> {
    if !key.starts_with(RESERVED_PREFIX) {
        return None;
    }
    match value_of {
        None => Some(format!(
            "context key `{key}`: keys starting with `{RESERVED_PREFIX}` are reserved"
        )),
        Some(name)
            if (key == VAR_CONTEXT_KEY && value == name)
                || (key == FILE_CONTEXT_KEY && value == FILE_CONTEXT_VALUE) =>
        {
            None
        }
        Some(name) => Some(format!(
            "{name}: context key `{key}` is reserved; a kms value may carry only \
             \"{VAR_CONTEXT_KEY}\" = \"{name}\" and \"{FILE_CONTEXT_KEY}\" = \"{FILE_CONTEXT_VALUE}\""
        )),
    }
}

/// `K=V` pairs from `--context`, under [`context_rule`] (`value_of`: the
/// variable whose direct value they are the context of).
pub fn parse_context(pairs: &[String], value_of: Option<&str>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Error::usage(format!("--context {p:?}: expected KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(Error::usage(format!("--context {p:?}: the key is empty")));
        }
        if let Some(why) = context_rule(k, v, value_of) {
            return Err(Error::usage(format!("--context {why}")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

struct Parser<'a> {
    path: &'a Path,
    text: &'a str,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl Parser<'_> {
    /// Line and column of a byte offset; a binary search over the line starts,
    /// so a file of 100 000 entries is not scanned once per entry.
    fn pos(&self, span: Option<Range<usize>>) -> Pos {
        let Some(span) = span else { return Pos::default() };
        let offset = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        Pos { line, column }
    }

    fn err(&self, span: Option<Range<usize>>, message: impl fmt::Display) -> Error {
        let p = self.pos(span);
        if p.line == 0 {
            Error::input(format!("{}: {message}", self.path.display()))
        } else {
            Error::input(format!("{}:{p}: {message}", self.path.display()))
        }
    }

    fn document(&self) -> Result<Inspection> {
        let doc = toml_edit::Document::parse(self.text)
            .map_err(|e| self.err(e.span(), format!("invalid TOML: {}", e.message().trim())))?;
        let root = doc.as_table();
        for (k, _) in root.iter() {
            if k != "kmsenv" && k != "env" {
                return Err(self.err(
                    root.key(k).and_then(Key::span),
                    format!("unknown table `{k}`: a kmsenv file has only [kmsenv] and [env]"),
                ));
            }
        }
        let Some(head) = root.get("kmsenv") else {
            return Err(self.err(
                Some(0..0),
                "missing [kmsenv] table with `version = 2` (is this a kmsenv file?)",
            ));
        };
        let head_span = root.key("kmsenv").and_then(Key::span);
        let head = head
            .as_table_like()
            .ok_or_else(|| self.err(head_span.clone(), "`kmsenv` must be a table"))?;

        let mut version = None;
        let mut context = BTreeMap::new();
        let mut mac = None;
        let mut keys = Vec::new();
        for (k, item) in head.iter() {
            let span = head.key(k).and_then(Key::span);
            match k {
                "version" => {
                    let v = item
                        .as_integer()
                        .ok_or_else(|| self.err(span.clone(), "`version` must be an integer"))?;
                    if v != FORMAT_VERSION && v != LEGACY_VERSION {
                        return Err(self.err(
                            span,
                            format!(
                                "unsupported format version {v}: this kmsenv reads versions {LEGACY_VERSION} and {FORMAT_VERSION}"
                            ),
                        ));
                    }
                    version = Some(v);
                }
                "context" => {
                    context = self.string_table(item, "context", span.clone())?;
                    if let Some(why) = context.iter().find_map(|(k, v)| context_rule(k, v, None)) {
                        return Err(self.err(span, why));
                    }
                }
                "mac" => {
                    let m = item
                        .as_str()
                        .ok_or_else(|| self.err(span.clone(), "`mac` must be a string"))?;
                    mac = Some(m.to_string());
                }
                "keys" => keys = self.keys(item, span)?,
                other => {
                    return Err(self.err(
                        span,
                        format!("unknown key `{other}` in [kmsenv] (expected version, context, mac, keys)"),
                    ));
                }
            }
        }
        let Some(version) = version else {
            return Err(self.err(head_span, format!("[kmsenv] needs `version = {FORMAT_VERSION}`")));
        };

        let version_at = self.pos(head.key("version").and_then(Key::span));
        let head_at = self.pos(head_span);
        let mut entries = Vec::new();
        let mut allow_plain = BTreeSet::new();
        if let Some(env) = root.get("env") {
            let span = root.key("env").and_then(Key::span);
            let env = env
                .as_table_like()
                .ok_or_else(|| self.err(span, "`env` must be a table"))?;
            entries.reserve_exact(env.len());
            for (name, item) in env.iter() {
                entries.push(self.entry(env, name, item, Some(version))?);
                if self
                    .trailing_comment(item)
                    .is_some_and(|c| c.contains(ALLOW_PLAIN))
                {
                    allow_plain.insert(name.to_string());
                }
            }
        }
        let doc = Document {
            path: self.path.to_path_buf(),
            version,
            context,
            mac,
            keys,
            entries,
            text: String::new(),
        };
        Ok(Inspection {
            refusal: self.keyless_rule(&doc).err(),
            doc,
            version_at,
            head_at,
            allow_plain,
        })
    }

    /// The comment after a value on its last line (toml_edit keeps it in the
    /// value's decoration), if any. Not a search of the line's text: a `#` inside
    /// a string is part of the value.
    fn trailing_comment<'t>(&'t self, item: &'t Item) -> Option<&'t str> {
        let suffix = item.as_value()?.decor().suffix()?;
        suffix
            .as_str()
            .or_else(|| suffix.span().and_then(|r| self.text.get(r)))
    }

    /// What a file without keys must not do (DESIGN §2.4): hold sealed values,
    /// carry a MAC, or mix plain values (templates and references count as
    /// plain) with kms ones.
    fn keyless_rule(&self, doc: &Document) -> Result<()> {
        let Document {
            keys, entries, mac, ..
        } = doc;
        if keys.is_empty() {
            if let Some(e) = entries.iter().find(|e| matches!(e.value, Value::Sealed(_))) {
                return Err(self.err_at(
                    e.at,
                    format!(
                        "{}: a sealed value needs the file's data key, but the file has no [[kmsenv.keys]]",
                        e.name
                    ),
                ));
            }
            if mac.is_some() {
                return Err(Error::integrity(format!(
                    "{}: file has a `mac` but no [[kmsenv.keys]]: file was modified outside kmsenv (keys removed?)",
                    self.path.display()
                )));
            }
            // No silent downgrade (DESIGN §2.4): without keys there is no MAC, so
            // plain values next to secrets that still decrypt could be anyone's.
            let plain = entries
                .iter()
                .find(|e| matches!(e.value, Value::Plain(_) | Value::Template(_) | Value::Ref(_)));
            let direct = entries.iter().find(|e| matches!(e.value, Value::Kms { .. }));
            if let (Some(p), Some(d)) = (plain, direct) {
                return Err(Error::integrity(format!(
                    "{}: has no [[kmsenv.keys]] (so no MAC) but holds both plain values ({} at line {}) and kms values ({} at line {}): \
                     a writer who removed the keys and the MAC could have put the plain ones there",
                    self.path.display(),
                    p.name,
                    p.at.line,
                    d.name,
                    d.at.line
                ))
                .with_hint(
                    "restore the file from a trusted copy; keep plain settings in a file of their own, or in a file with keys",
                ));
            }
        }
        Ok(())
    }

    fn err_at(&self, at: Pos, message: impl fmt::Display) -> Error {
        Error::input(format!("{}:{at}: {message}", self.path.display()))
    }

    fn keys(&self, item: &Item, span: Option<Range<usize>>) -> Result<Vec<WrappingKey>> {
        let tables: Vec<&dyn TableLike> = if let Some(aot) = item.as_array_of_tables() {
            aot.iter().map(|t| t as &dyn TableLike).collect()
        } else if let Some(arr) = item.as_array() {
            arr.iter()
                .map(|v| {
                    v.as_inline_table()
                        .map(|t| t as &dyn TableLike)
                        .ok_or_else(|| self.err(v.span(), "each entry of `keys` must be a table"))
                })
                .collect::<Result<_>>()?
        } else {
            return Err(self.err(span, "`keys` must be an array of tables ([[kmsenv.keys]])"));
        };
        let mut keys = Vec::new();
        for t in tables {
            let mut arn = None;
            let mut data_key = None;
            for (k, v) in t.iter() {
                let span = t.key(k).and_then(Key::span);
                match k {
                    "arn" => {
                        let s = v
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| self.err(span, "`arn` must be a non-empty string"))?;
                        arn = Some(s.to_string());
                    }
                    "data_key" => {
                        let s = v
                            .as_str()
                            .ok_or_else(|| self.err(span.clone(), "`data_key` must be a string"))?;
                        let blob = B64
                            .decode(s.trim())
                            .ok()
                            .filter(|b| !b.is_empty() && b.len() <= MAX_KMS_BLOB)
                            .ok_or_else(|| self.err(span, "`data_key` is not a base64 KMS ciphertext"))?;
                        data_key = Some((blob, s.trim().to_string()));
                    }
                    other => {
                        return Err(self.err(
                            span,
                            format!("unknown key `{other}` in [[kmsenv.keys]] (expected arn, data_key)"),
                        ));
                    }
                }
            }
            let at = self.pos(t.iter().next().and_then(|(k, _)| t.key(k)).and_then(Key::span));
            match (arn, data_key) {
                (Some(arn), Some((data_key, data_key_text))) => keys.push(WrappingKey {
                    arn,
                    data_key,
                    data_key_text,
                }),
                _ => return Err(self.err_at(at, "[[kmsenv.keys]] needs both `arn` and `data_key`")),
            }
        }
        Ok(keys)
    }

    fn string_table(
        &self,
        item: &Item,
        what: &str,
        span: Option<Range<usize>>,
    ) -> Result<BTreeMap<String, String>> {
        let t = item
            .as_table_like()
            .ok_or_else(|| self.err(span, format!("{} must be a table of strings", quoted(what))))?;
        let mut out = BTreeMap::new();
        for (k, v) in t.iter() {
            let s = v.as_str().ok_or_else(|| {
                self.err(
                    t.key(k).and_then(Key::span),
                    format!("{} value for `{k}` must be a string", quoted(what)),
                )
            })?;
            out.insert(k.to_string(), s.to_string());
        }
        Ok(out)
    }

    fn entry(&self, env: &dyn TableLike, name: &str, item: &Item, version: Option<i64>) -> Result<Entry> {
        let span = env.key(name).and_then(Key::span);
        let at = self.pos(span.clone());
        if let Some(why) = name_rule(name) {
            return Err(self.err_at(at, why));
        }
        if let Some(s) = item.as_str() {
            if let Some(why) = value_rule(name, s.as_bytes(), false) {
                return Err(self.err_at(at, why));
            }
            return Ok(Entry {
                name: name.into(),
                value: Value::Plain(s.into()),
                file: false,
                at,
            });
        }
        let Some(t) = item.as_table_like() else {
            let what = match item {
                Item::Value(TomlValue::Integer(_) | TomlValue::Float(_) | TomlValue::Boolean(_)) => {
                    " (quote it: environment values are strings)"
                }
                _ => "",
            };
            return Err(self.err_at(
                at,
                format!("{name}: value must be a string, {{ sealed = \"…\" }}, {{ kms = \"…\" }}, {{ template = \"…\" }}, {{ secret = \"…\" }} or {{ ssm = \"…\" }}{what}"),
            ));
        };
        if t.contains_key("secret") || t.contains_key("ssm") {
            let (value, file) = self.reference(name, t)?;
            return Ok(Entry {
                name: name.into(),
                value: Value::Ref(value),
                file,
                at,
            });
        }
        let mut sealed = None;
        let mut kms = None;
        let mut template = None;
        let mut key = None;
        let mut context = None;
        let mut file = false;
        for (k, v) in t.iter() {
            let fspan = t.key(k).and_then(Key::span);
            match k {
                "sealed" | "kms" | "key" | "template" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| self.err(fspan.clone(), format!("{name}: `{k}` must be a string")))?;
                    match k {
                        "sealed" => sealed = Some((s.to_string(), fspan)),
                        "kms" => kms = Some((s.to_string(), fspan)),
                        "template" => template = Some((s.to_string(), fspan)),
                        _ => key = Some(s.to_string()),
                    }
                }
                "context" => {
                    let what = format!("{name}: `context`");
                    context = Some((self.string_table(v, &what, fspan.clone())?, fspan));
                }
                "file" => {
                    file = v
                        .as_bool()
                        .ok_or_else(|| self.err(fspan, format!("{name}: `file` must be true or false")))?;
                }
                other => {
                    return Err(self.err(
                        fspan,
                        format!("{name}: unknown key `{other}` (expected sealed, template, secret, ssm, or kms with optional key and context; and file)"),
                    ));
                }
            }
        }
        if let Some((text, fspan)) = template {
            if sealed.is_some() || kms.is_some() || key.is_some() || context.is_some() {
                return Err(self.err_at(
                    at,
                    format!("{name}: a template table holds only `template` (and `file`)"),
                ));
            }
            if let Some(why) = value_rule(name, text.as_bytes(), false) {
                return Err(self.err(fspan, why));
            }
            let pieces = crate::template::parse(&text)
                .map_err(|why| self.err(fspan.clone(), format!("{name}: {why}")))?;
            if pieces.contains(&crate::template::Piece::Ref(name)) {
                return Err(self.err(fspan, format!("{name}: the template uses ${{{name}}}, itself")));
            }
            return Ok(Entry {
                name: name.into(),
                value: Value::Template(text),
                file,
                at,
            });
        }
        let value = match (sealed, kms) {
            (Some((text, fspan)), None) => {
                if key.is_some() || context.is_some() {
                    return Err(self.err_at(
                        at,
                        format!("{name}: `key` and `context` apply to kms values only"),
                    ));
                }
                check_sealed_shape(&text).map_err(|why| self.err(fspan, format!("{name}: {why}")))?;
                Value::Sealed(text)
            }
            (None, Some((text, fspan))) => {
                let blob = B64
                    .decode(text.trim())
                    .map_err(|_| self.err(fspan.clone(), format!("{name}: `kms` is not valid base64")))?;
                if blob.is_empty() {
                    return Err(self.err(fspan, format!("{name}: `kms` ciphertext is empty")));
                }
                if blob.len() > MAX_KMS_BLOB {
                    return Err(self.err(
                        fspan,
                        format!(
                            "{name}: `kms` is {} bytes; KMS ciphertexts are at most {MAX_KMS_BLOB}",
                            blob.len()
                        ),
                    ));
                }
                let (context, cspan) = context.unwrap_or_default();
                if let Some(why) = context.iter().find_map(|(k, v)| context_rule(k, v, Some(name))) {
                    return Err(self.err(cspan, why));
                }
                // The flag is not under the MAC; the context binds it, so that
                // dropping it makes KMS refuse the ciphertext (DESIGN §2.5).
                // A value made with the pair must keep the flag in every version:
                // no format-1 writer wrote the pair, and the version line of a
                // file without keys is not authenticated. The other way round
                // (a flag without the pair) is what format 1 wrote.
                let bound = context.contains_key(FILE_CONTEXT_KEY);
                if bound != file && (bound || version != Some(LEGACY_VERSION)) {
                    let why = if file {
                        format!(
                            "`file = true` needs \"{FILE_CONTEXT_KEY}\" = \"{FILE_CONTEXT_VALUE}\" in its context \
                             (encrypt it with that pair: `kmsenv set --kms --as-file {name}`)"
                        )
                    } else {
                        format!(
                            "its context has \"{FILE_CONTEXT_KEY}\" = \"{FILE_CONTEXT_VALUE}\" but `file = true` is missing \
                             (the value was made to be delivered as a file)"
                        )
                    };
                    return Err(Error::integrity(format!(
                        "{}:{at}: {name}: {why}",
                        self.path.display()
                    )));
                }
                Value::Kms { blob, key, context }
            }
            (Some(_), Some(_)) => {
                return Err(self.err_at(at, format!("{name}: has both `sealed` and `kms`; keep one")));
            }
            (None, None) => {
                return Err(self.err_at(
                    at,
                    format!("{name}: a value table needs `sealed`, `kms`, `template`, `secret` or `ssm`"),
                ));
            }
        };
        Ok(Entry {
            name: name.into(),
            value,
            file,
            at,
        })
    }
}

impl Parser<'_> {
    /// A `secret` or `ssm` table: only its own keys and `file`; every field
    /// checked (`reference`). A binary secret needs `file = true`, which is
    /// known only from the answer (`refs`).
    fn reference(&self, name: &str, t: &dyn TableLike) -> Result<(Reference, bool)> {
        let mut fields: BTreeMap<&str, (String, Option<Range<usize>>)> = BTreeMap::new();
        let mut file = false;
        let secret = t.contains_key("secret");
        let allowed: &[&str] = if secret {
            &["secret", "json_key", "version_stage", "version_id"]
        } else {
            &["ssm", "type"]
        };
        let expected = if secret {
            "a secret table holds secret, json_key, version_stage or version_id, and file"
        } else {
            "an ssm table holds ssm and type, and file"
        };
        for (k, v) in t.iter() {
            let fspan = t.key(k).and_then(Key::span);
            if k == "file" {
                file = v
                    .as_bool()
                    .ok_or_else(|| self.err(fspan, format!("{name}: `file` must be true or false")))?;
                continue;
            }
            let Some(&key) = allowed.iter().find(|a| **a == k) else {
                let both = if secret && k == "ssm" {
                    " (it has both `secret` and `ssm`; keep one)"
                } else {
                    ""
                };
                return Err(self.err(fspan, format!("{name}: unknown key `{k}`: {expected}{both}")));
            };
            let s = v
                .as_str()
                .ok_or_else(|| self.err(fspan.clone(), format!("{name}: `{k}` must be a string")))?;
            fields.insert(key, (s.to_string(), fspan));
        }
        let bad =
            |fspan: &Option<Range<usize>>, why: String| self.err(fspan.clone(), format!("{name}: {why}"));
        let reference = if secret {
            let (arn, span) = fields.remove("secret").unwrap_or_default();
            reference::check_secret_arn(&arn).map_err(|why| bad(&span, why))?;
            let json_key = match fields.remove("json_key") {
                Some((k, span)) if k.is_empty() => return Err(bad(&span, "`json_key` is empty".into())),
                Some((k, _)) => Some(k),
                None => None,
            };
            let version = match (fields.remove("version_stage"), fields.remove("version_id")) {
                (Some(_), Some((_, span))) => {
                    return Err(bad(
                        &span,
                        "give `version_stage` or `version_id`, not both".into(),
                    ));
                }
                (Some((st, span)), None) => {
                    reference::check_version_field("version_stage", &st).map_err(|why| bad(&span, why))?;
                    SecretVersion::Stage(st)
                }
                (None, Some((id, span))) => {
                    reference::check_version_field("version_id", &id).map_err(|why| bad(&span, why))?;
                    SecretVersion::Id(id)
                }
                (None, None) => SecretVersion::Current,
            };
            Reference::Secret(SecretRef {
                arn,
                json_key,
                version,
            })
        } else {
            let kind = match fields.remove("type") {
                Some((ty, span)) => ParamType::parse(&ty).map_err(|why| bad(&span, why))?,
                None => ParamType::SecureString,
            };
            let (text, span) = fields.remove("ssm").unwrap_or_default();
            Reference::Param(ParamRef::parse(&text, kind).map_err(|why| bad(&span, why))?)
        };
        Ok((reference, file))
    }
}

/// `context` → "`context`"; "NAME: `context`" stays as it is.
fn quoted(what: &str) -> String {
    if what.contains('`') {
        what.to_string()
    } else {
        format!("`{what}`")
    }
}

/// Check that sealed text is base64 of at least a nonce and a tag.
fn check_sealed_shape(text: &str) -> std::result::Result<(), &'static str> {
    match B64.decode(text.trim()) {
        Err(_) => Err("`sealed` is not valid base64"),
        Ok(b) if b.len() < 12 + 16 => Err("`sealed` is too short to be a sealed value (truncated?)"),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Document> {
        Document::parse(Path::new("k.toml"), text.to_string())
    }

    const HEAD: &str = "[kmsenv]\nversion = 2\n";

    #[test]
    fn kms_values_parse_in_file_order() -> crate::error::TestResult {
        let doc = parse(&format!(
            "{HEAD}[env]\nB = {{ kms = \"AQID\" }}\nA = {{ kms = \"AQID\", context = {{ \"kmsenv:var\" = \"A\" }} }}\n"
        ))?;
        let names: Vec<_> = doc.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["B", "A"]);
        assert!(matches!(&doc.entries[1].value, Value::Kms { blob, .. } if blob == &[1, 2, 3]));
        Ok(())
    }

    #[test]
    fn a_keyless_file_never_mixes_plain_and_kms_values() {
        let mixed = format!("{HEAD}[env]\nHOST = \"evil\"\nTOKEN = {{ kms = \"AQID\" }}\n");
        let err = parse(&mixed).unwrap_err();
        assert_eq!(err.class, crate::error::Class::Integrity);
        assert!(
            err.to_string()
                .contains("both plain values (HOST at line 4) and kms values (TOKEN at line 5)"),
            "{err}"
        );
        assert!(parse(&format!("{HEAD}[env]\nHOST = \"db\"\n")).is_ok());
    }

    #[test]
    fn a_direct_values_file_flag_must_agree_with_its_context() {
        let entry = |fields: &str| parse(&format!("{HEAD}[env]\nK = {{ kms = \"AQID\"{fields} }}\n"));
        assert!(entry(", file = true, context = { \"kmsenv:file\" = \"true\" }").is_ok());
        let dropped = entry(", context = { \"kmsenv:file\" = \"true\" }").unwrap_err();
        assert!(
            dropped.to_string().starts_with("k.toml:4:1: K: its context has"),
            "{dropped}"
        );
        let added = entry(", file = true").unwrap_err();
        assert!(
            added.to_string().contains("`file = true` needs \"kmsenv:file\""),
            "{added}"
        );
        assert!(entry(", file = true, context = { \"kmsenv:file\" = \"yes\" }").is_err());
        // Format 1 did not bind it; such a file still opens (and `upgrade` binds it).
        let v1 = "[kmsenv]\nversion = 1\n[env]\nK = { kms = \"AQID\", file = true }\n";
        assert!(parse(v1).is_ok());
        // …but relabelling a file as format 1 does not let the flag go.
        let relabelled = "[kmsenv]\nversion = 1\n[env]\nK = { kms = \"AQID\", context = { \"kmsenv:file\" = \"true\" } }\n";
        assert!(parse(relabelled).is_err());
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let err = parse(&format!("{HEAD}[env]\nOK = \"x\"\n  BAD-NAME = \"y\"\n")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("k.toml:5:3: invalid variable name \"BAD-NAME\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_under_kmsenv_are_errors() {
        let err = parse("[kmsenv]\nversion = 1\nmca = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("k.toml:3:1: unknown key `mca`"), "{err}");
    }

    #[test]
    fn reserved_context_is_refused_except_own_var() {
        let bad = format!(
            "{HEAD}[env]\nA = {{ kms = \"AQID\", context = {{ \"kmsenv:purpose\" = \"data-key\" }} }}\n"
        );
        assert!(parse(&bad).unwrap_err().to_string().contains("reserved"));
        let other =
            format!("{HEAD}[env]\nA = {{ kms = \"AQID\", context = {{ \"kmsenv:var\" = \"B\" }} }}\n");
        assert!(
            parse(&other)
                .unwrap_err()
                .to_string()
                .contains("A: context key `kmsenv:var` is reserved")
        );
    }

    #[test]
    fn sealed_needs_keys() {
        let t = format!("{HEAD}[env]\nA = {{ sealed = \"{}\" }}\n", "A".repeat(40));
        assert!(parse(&t).unwrap_err().to_string().contains("no [[kmsenv.keys]]"));
    }

    #[test]
    fn wrong_version_and_non_string_context_are_errors() {
        assert!(
            parse("[kmsenv]\nversion = 3\n")
                .unwrap_err()
                .to_string()
                .contains("unsupported format version 3")
        );
        let e = parse("[kmsenv]\nversion = 1\ncontext = { app = 1 }\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("`context` value for `app` must be a string"),
            "{e}"
        );
    }

    const SECRET_ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbCdEf";

    fn one_ref(fields: &str) -> Result<Document> {
        parse(&format!("{HEAD}[env]\nDB = {{ {fields} }}\n"))
    }

    #[test]
    fn a_secret_reference_parses_with_its_fields() -> crate::error::TestResult {
        let doc = one_ref(&format!(
            "secret = \"{SECRET_ARN}\", json_key = \"password\", version_stage = \"AWSPREVIOUS\", file = true"
        ))?;
        let e = &doc.entries[0];
        assert!(e.file);
        assert_eq!(
            e.value,
            Value::Ref(Reference::Secret(SecretRef {
                arn: SECRET_ARN.into(),
                json_key: Some("password".into()),
                version: SecretVersion::Stage("AWSPREVIOUS".into()),
            }))
        );
        assert_eq!(e.value.kind(), "secret");
        Ok(())
    }

    #[test]
    fn an_ssm_reference_parses_with_selector_and_type() -> crate::error::TestResult {
        let doc = one_ref("ssm = \"/prod/app/db:7\", type = \"String\"")?;
        let Value::Ref(Reference::Param(p)) = &doc.entries[0].value else {
            return Err("an ssm reference".into());
        };
        assert_eq!(p.id, "/prod/app/db");
        assert_eq!(p.selector, Some(crate::reference::Selector::Version(7)));
        assert_eq!(p.kind, ParamType::String);
        Ok(())
    }

    fn refused(fields: &str, says: &str) {
        match one_ref(fields) {
            Ok(_) => panic!("accepted: {fields}"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("k.toml:4:"), "{text}");
                assert!(text.contains("DB: "), "{text}");
                assert!(text.contains(says), "{fields}: {text}");
            }
        }
    }

    #[test]
    fn a_secret_reference_with_an_unknown_key_is_refused() {
        refused(
            &format!("secret = \"{SECRET_ARN}\", jsonkey = \"p\""),
            "unknown key `jsonkey`",
        );
        refused(
            &format!("secret = \"{SECRET_ARN}\", type = \"String\""),
            "unknown key `type`",
        );
        refused(
            &format!("secret = \"{SECRET_ARN}\", kms = \"AQID\""),
            "unknown key `kms`",
        );
    }

    #[test]
    fn a_secret_reference_with_both_stage_and_id_is_refused() {
        refused(
            &format!("secret = \"{SECRET_ARN}\", version_stage = \"A\", version_id = \"B\""),
            "not both",
        );
    }

    #[test]
    fn a_partial_secret_arn_in_the_file_is_refused() {
        refused(
            "secret = \"arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db\"",
            "partial ARN",
        );
        refused("secret = \"prod/db\"", "must be a Secrets Manager secret ARN");
    }

    #[test]
    fn an_empty_json_key_or_a_non_string_field_is_refused() {
        refused(
            &format!("secret = \"{SECRET_ARN}\", json_key = \"\""),
            "`json_key` is empty",
        );
        refused(
            &format!("secret = \"{SECRET_ARN}\", json_key = 1"),
            "`json_key` must be a string",
        );
        refused(
            &format!("secret = \"{SECRET_ARN}\", file = \"yes\""),
            "`file` must be true or false",
        );
    }

    #[test]
    fn an_ssm_reference_with_a_bad_form_is_refused() {
        refused("ssm = \"/a/b\", type = \"StringList\"", "StringList");
        refused("ssm = \"/a/b\", type = \"Secure\"", "expected \"SecureString\"");
        refused("ssm = \"/a/b\", json_key = \"x\"", "unknown key `json_key`");
        refused("ssm = \"/a/b\", secret = \"x\"", "unknown key `ssm`");
        refused("ssm = \"/a/\"", "path reads are not supported");
        refused("ssm = \"/a/b:\"", "selector");
    }

    #[test]
    fn a_keyless_file_may_hold_references_and_plain_values_but_not_kms_values() {
        let ok = format!("{HEAD}[env]\nHOST = \"db\"\nP = {{ ssm = \"/a\" }}\n");
        assert!(parse(&ok).is_ok());
        let mixed = format!("{HEAD}[env]\nP = {{ ssm = \"/a\" }}\nT = {{ kms = \"AQID\" }}\n");
        assert_eq!(parse(&mixed).unwrap_err().class, crate::error::Class::Integrity);
    }

    #[test]
    fn the_mac_input_covers_every_field_of_a_reference() -> crate::error::TestResult {
        let input = |fields: &str| -> Result<Vec<u8>> {
            let doc = one_ref(fields)?;
            let m = doc.mac_input();
            Ok(m.entries
                .iter()
                .flat_map(|e| [e.kind.as_bytes(), &e.text[..]].concat())
                .collect())
        };
        let base = input(&format!("secret = \"{SECRET_ARN}\""))?;
        for other in [
            format!("secret = \"{}\"", SECRET_ARN.replace("AbCdEf", "AbCdEg")),
            format!("secret = \"{SECRET_ARN}\", json_key = \"a\""),
            format!("secret = \"{SECRET_ARN}\", version_stage = \"AWSCURRENT\""),
            format!("secret = \"{SECRET_ARN}\", version_id = \"v1\""),
        ] {
            assert_ne!(base, input(&other)?, "{other}");
        }
        let ssm = input("ssm = \"/a/b\"")?;
        assert_ne!(ssm, input("ssm = \"/a/b\", type = \"String\"")?);
        assert_ne!(ssm, input("ssm = \"/a/b:2\"")?);
        assert_ne!(ssm, input("ssm = \"/a/c\"")?);
        assert_ne!(
            ssm,
            input("ssm = \"arn:aws:ssm:eu-west-1:111122223333:parameter/a/b\"")?
        );
        Ok(())
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["A", "_", "a_1", "DATABASE_URL"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "É"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
