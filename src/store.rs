//! Writing the file: edits through `toml_edit` (the user's comments, order and
//! formatting survive), an advisory lock for concurrent writers, and an atomic
//! replace (DESIGN §2.6).
//!
//! A writer killed at any moment leaves the old file or the new one: the new
//! text goes to a temporary file in the same folder, is fsynced, renamed over the
//! old one, and the folder is fsynced. The lock is taken on the folder, because
//! the rename replaces the file's inode and a lock on the file would not be seen
//! by the next writer.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use toml_edit::{DocumentMut, InlineTable, Item, Value as TomlValue};

use crate::document::Document;
use crate::error::{Class, Error, Result};

/// Edits to a file's text that keep everything the user wrote.
pub struct Editor {
    path: PathBuf,
    doc: DocumentMut,
}

/// The first line of every new file.
const HEADER: &str =
    "# kmsenv — encrypted environment. Safe to commit; edit with `kmsenv set` / `kmsenv edit`.\n";

impl Editor {
    /// The text of a new file (`init`): the header comment, `[kmsenv]` with the
    /// format version and `context`, and an empty `[env]`. Keys come with
    /// [`Editor::add_key`], the MAC with [`Editor::set_mac`].
    pub fn create(path: &Path, context: &BTreeMap<String, String>) -> Result<Editor> {
        let mut head = toml_edit::Table::new();
        head.decor_mut().set_prefix(HEADER);
        head.insert("version", toml_edit::value(crate::document::FORMAT_VERSION));
        if !context.is_empty() {
            let mut ctx = InlineTable::new();
            for (k, v) in context {
                ctx.insert(k.as_str(), v.as_str().into());
            }
            head.insert("context", toml_edit::value(ctx));
        }
        let mut doc = DocumentMut::new();
        doc.insert("kmsenv", Item::Table(head));
        let mut env = toml_edit::Table::new();
        env.decor_mut().set_prefix("\n");
        doc.insert("env", Item::Table(env));
        Ok(Editor {
            path: path.to_path_buf(),
            doc,
        })
    }

    pub fn new(doc: &Document) -> Result<Editor> {
        let parsed = doc
            .text
            .parse::<DocumentMut>()
            .map_err(|e| Error::input(format!("{}: invalid TOML: {}", doc.path.display(), e.message())))?;
        Ok(Editor {
            path: doc.path.clone(),
            doc: parsed,
        })
    }

    fn env(&mut self) -> Result<&mut dyn toml_edit::TableLike> {
        let root = self.doc.as_table_mut();
        if !root.contains_key("env") {
            root.insert("env", toml_edit::table());
        }
        root.get_mut("env")
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| Error::input(format!("{}: `env` must be a table", self.path.display())))
    }

    /// Set `name` to `item`, in place if it exists (its comments stay), else at the end.
    fn put(&mut self, name: &str, value: TomlValue) -> Result<()> {
        let env = self.env()?;
        match env.get_mut(name) {
            Some(slot) => {
                // Keep the decoration (spacing, trailing comment) of the old value.
                let decor = slot.as_value().map(|v| v.decor().clone());
                let mut value = value;
                if let Some(d) = decor {
                    *value.decor_mut() = d;
                }
                *slot = Item::Value(value);
            }
            None => {
                env.insert(name, Item::Value(value));
            }
        }
        Ok(())
    }

    pub fn set_plain(&mut self, name: &str, value: &str) -> Result<()> {
        self.put(name, TomlValue::from(value))
    }

    pub fn set_sealed(&mut self, name: &str, sealed: &str, file: bool) -> Result<()> {
        let mut t = InlineTable::new();
        t.insert("sealed", sealed.into());
        if file {
            t.insert("file", true.into());
        }
        self.put(name, TomlValue::InlineTable(t))
    }

    /// A template (`template` module); its text is under the MAC, like a plain value.
    pub fn set_template(&mut self, name: &str, text: &str, file: bool) -> Result<()> {
        let mut t = InlineTable::new();
        t.insert("template", text.into());
        if file {
            t.insert("file", true.into());
        }
        self.put(name, TomlValue::InlineTable(t))
    }

    /// A reference (`reference`); its fields are under the MAC, like a plain value.
    pub fn set_reference(&mut self, name: &str, r: &crate::reference::Reference, file: bool) -> Result<()> {
        use crate::reference::{ParamType, Reference, SecretVersion};
        let mut t = InlineTable::new();
        match r {
            Reference::Secret(s) => {
                t.insert("secret", s.arn.as_str().into());
                if let Some(k) = &s.json_key {
                    t.insert("json_key", k.as_str().into());
                }
                match &s.version {
                    SecretVersion::Current => {}
                    SecretVersion::Stage(st) => {
                        t.insert("version_stage", st.as_str().into());
                    }
                    SecretVersion::Id(id) => {
                        t.insert("version_id", id.as_str().into());
                    }
                }
            }
            Reference::Param(p) => {
                t.insert("ssm", p.text().into());
                if p.kind == ParamType::String {
                    t.insert("type", "String".into());
                }
            }
        }
        if file {
            t.insert("file", true.into());
        }
        self.put(name, TomlValue::InlineTable(t))
    }

    pub fn set_kms(
        &mut self,
        name: &str,
        blob_b64: &str,
        key: Option<&str>,
        context: &BTreeMap<String, String>,
        file: bool,
    ) -> Result<()> {
        let mut t = InlineTable::new();
        t.insert("kms", blob_b64.into());
        if let Some(key) = key {
            t.insert("key", key.into());
        }
        if !context.is_empty() {
            let mut ctx = InlineTable::new();
            for (k, v) in context {
                ctx.insert(k.as_str(), v.as_str().into());
            }
            t.insert("context", TomlValue::InlineTable(ctx));
        }
        if file {
            t.insert("file", true.into());
        }
        self.put(name, TomlValue::InlineTable(t))
    }

    /// Remove `name`; whether it was there.
    pub fn remove(&mut self, name: &str) -> Result<bool> {
        Ok(self.env()?.remove(name).is_some())
    }

    /// The `[[kmsenv.keys]]` tables, for editing wrappings (made if there are none).
    fn keys(&mut self) -> Result<&mut toml_edit::ArrayOfTables> {
        let path = self.path.display().to_string();
        let head = self
            .doc
            .get_mut("kmsenv")
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| Error::input(format!("{path}: missing [kmsenv]")))?;
        if !head.contains_key("keys") {
            head.insert("keys", Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
        }
        head.get_mut("keys")
            .and_then(Item::as_array_of_tables_mut)
            .ok_or_else(|| {
                Error::input(format!(
                    "{path}: kmsenv edits keys written as [[kmsenv.keys]] tables only"
                ))
            })
    }

    /// Replace the wrapped data key of the `index`-th key.
    pub fn set_key_blob(&mut self, index: usize, blob_b64: &str) -> Result<()> {
        let path = self.path.display().to_string();
        let t = self
            .keys()?
            .get_mut(index)
            .ok_or_else(|| Error::input(format!("{path}: no key number {index}")))?;
        t["data_key"] = toml_edit::value(blob_b64);
        Ok(())
    }

    /// Add a wrapping after the last one.
    pub fn add_key(&mut self, arn: &str, blob_b64: &str) -> Result<()> {
        let keys = self.keys()?;
        let position = keys.iter().filter_map(toml_edit::Table::position).max();
        let mut t = toml_edit::Table::new();
        t["arn"] = toml_edit::value(arn);
        t["data_key"] = toml_edit::value(blob_b64);
        // Place it right after the last key table, before [env]; the first one
        // of a new file goes after [kmsenv] (the tables of a new document are
        // not positioned, so their insertion order is their order).
        t.set_position(position);
        t.decor_mut().set_prefix("\n");
        keys.push(t);
        Ok(())
    }

    pub fn remove_key(&mut self, index: usize) -> Result<()> {
        self.keys()?.remove(index);
        Ok(())
    }

    /// Set `[kmsenv] version` (an upgrade), keeping its decoration.
    pub fn set_version(&mut self, version: i64) -> Result<()> {
        let slot = self
            .doc
            .get_mut("kmsenv")
            .and_then(Item::as_table_like_mut)
            .and_then(|t| t.get_mut("version"))
            .ok_or_else(|| Error::input(format!("{}: missing `version` in [kmsenv]", self.path.display())))?;
        let mut v = TomlValue::from(version);
        if let Some(d) = slot.as_value().map(|v| v.decor().clone()) {
            *v.decor_mut() = d;
        }
        *slot = Item::Value(v);
        Ok(())
    }

    pub fn set_mac(&mut self, mac: &str) -> Result<()> {
        let head = self
            .doc
            .get_mut("kmsenv")
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| Error::input(format!("{}: missing [kmsenv]", self.path.display())))?;
        match head.get_mut("mac") {
            Some(slot) => {
                let mut v = TomlValue::from(mac);
                if let Some(d) = slot.as_value().map(|v| v.decor().clone()) {
                    *v.decor_mut() = d;
                }
                *slot = Item::Value(v);
            }
            None => {
                head.insert("mac", toml_edit::value(mac));
            }
        }
        Ok(())
    }

    /// The edited text, validated again as a kmsenv file.
    pub fn finish(&self) -> Result<Document> {
        Document::parse(&self.path, self.doc.to_string())
    }
}

/// An exclusive advisory lock on the folder that holds a file; released on drop.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] Flock<File>);

/// Lock the folder of `path` against other kmsenv writers. Waits for the holder
/// until `deadline`: another kmsenv writer runs under its own `--timeout`, but
/// whatever else holds the lock need not.
pub fn lock(path: &Path, deadline: Instant) -> Result<Lock> {
    let dir = folder(&real_path(path));
    let f = File::open(&dir).map_err(|e| Error::io("open the folder of", path, &e))?;
    let locked = crate::blocking::within(deadline, move || Flock::lock(f, FlockArg::LockExclusive))
        .map_err(|e| Error::io("lock the folder of", path, &e))?;
    match locked {
        Some(Ok(lock)) => Ok(Lock(lock)),
        Some(Err((_, e))) => Err(Error::new(
            Class::Io,
            format!("{}: cannot lock its folder: {}", path.display(), e.desc()),
        )),
        None => Err(Error::new(
            Class::Conflict,
            format!(
                "{}: its folder is still locked by another writer at the deadline (--timeout); nothing was written",
                path.display()
            ),
        )
        .with_hint("another kmsenv (or another program holding flock on the folder) is writing; retry, or raise --timeout")),
    }
}

fn sweep_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}.kmsenv-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&prefix) && n.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// `path` with symlinks resolved, when it exists.
fn real_path(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// How [`write_atomic`] treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Replace it, keeping its permissions and owner.
    Replace,
    /// Fail if it exists (`init`).
    CreateNew,
}

/// Write `text` to `path` so that a crash leaves either the old or the new file.
pub fn write_atomic(path: &Path, text: &str, mode: Mode) -> Result<()> {
    // Through a symlink, replace its target: renaming over the link would turn a
    // shared file into a private copy.
    let target = real_path(path);
    let path = target.as_path();
    let dir = folder(path);
    let old = std::fs::metadata(path).ok();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 6];
    crate::envelope::random_bytes(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.kmsenv-{suffix}.tmp"));
    // We hold the folder lock, so any temporary file of ours already there was
    // left by a writer that was killed: remove it.
    sweep_stale(&dir, &name);

    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    if let Some(m) = &old {
        opts.mode(m.mode() & 0o7777);
    }
    let mut f = opts
        .open(&tmp)
        .map_err(|e| Error::io("create a temporary file next to", path, &e))?;
    let result = (|| {
        if let Some(m) = &old {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(|e| Error::io("set the mode of the new", path, &e))?;
            // Keeping the owner needs privileges we may not have; the mode is what matters.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io("write", path, &e))?;
        f.sync_all().map_err(|e| Error::io("sync", path, &e))?;
        match mode {
            Mode::Replace => std::fs::rename(&tmp, path).map_err(|e| Error::io("replace", path, &e)),
            Mode::CreateNew => {
                // link() fails if the target exists: an atomic create-only.
                let r = std::fs::hard_link(&tmp, path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Error::input(format!(
                            "{}: already exists; refusing to overwrite it",
                            path.display()
                        ))
                    } else {
                        Error::io("create", path, &e)
                    }
                });
                let _ = std::fs::remove_file(&tmp);
                r
            }
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;

    #[test]
    fn edits_keep_comments_and_order() -> TestResult {
        let text =
            "# top comment\n[kmsenv]\nversion = 2\n\n[env]\n# about B\nB = \"1\"  # trailing\nA = \"2\"\n";
        let doc = Document::parse(Path::new("x.toml"), text.into())?;
        let mut ed = Editor::new(&doc)?;
        ed.set_plain("B", "3")?;
        ed.set_plain("C", "4")?;
        let out = ed.finish()?.text;
        assert_eq!(
            out,
            "# top comment\n[kmsenv]\nversion = 2\n\n[env]\n# about B\nB = \"3\"  # trailing\nA = \"2\"\nC = \"4\"\n"
        );
        Ok(())
    }

    #[test]
    fn writing_through_a_symlink_replaces_its_target() -> TestResult {
        let dir = std::env::temp_dir().join(format!("kmsenv-store-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real"))?;
        let target = dir.join("real/k.toml");
        std::fs::write(&target, "old")?;
        let link = dir.join("link.toml");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)?;
        write_atomic(&link, "new", Mode::Replace)?;
        assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target)?, "new");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn an_added_key_goes_after_the_last_key_before_env() -> TestResult {
        let text = "[kmsenv]\nversion = 2\n\n[[kmsenv.keys]]\narn = \"a\"\ndata_key = \"AQID\"\n\n[env]\nX = \"1\"\n";
        let doc = Document::parse(Path::new("x.toml"), text.into())?;
        let mut ed = Editor::new(&doc)?;
        ed.add_key("b", "BAUG")?;
        let out = ed.finish()?;
        assert_eq!(
            out.keys.iter().map(|k| k.arn.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let (b, env) = (out.text.find("arn = \"b\""), out.text.find("[env]"));
        assert!(b.is_some() && b < env, "{}", out.text);
        Ok(())
    }
}
