//! Templates (DESIGN §2.7): `{ template = "postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/app" }`
//! composes a value from other variables of the files, after decryption.
//!
//! The syntax is deliberately tiny: `${NAME}` and `$$` (a literal `$`); any
//! other `$` is an error when the file is read, so a `$HOME` written in the hope
//! of shell expansion is caught instead of passed on. A value is substituted as
//! bytes and never expanded again: a password holding `${X}` or `$$` reaches the
//! program exactly (dotenvx's implicit expansion ate `$` in users' passwords).
//!
//! What a reference may name, and why:
//! - only variables defined in the files, resolved with the files' precedence
//!   (the last file that defines a name wins, as in `exec`). Never an inherited
//!   variable: the environment kmsenv starts in holds things the file's author
//!   never saw and never meant to copy (`AWS_SECRET_ACCESS_KEY`, a CI token,
//!   ECS's credential URI), and whoever chooses a template would choose where
//!   they go (`SENTRY_DSN = "https://${AWS_SECRET_ACCESS_KEY}@their.host/1"`).
//!   It also keeps `get` and `export` equal to what `exec` gives.
//! - a template in a file without keys (no MAC: anyone who can write the file
//!   could have written it) may not use a secret value (sealed, direct, or a
//!   template that uses one), for the same reason: it would be a channel that
//!   copies another file's secret to wherever its writer likes.
//! - not a `file = true` value: whether its content or its path was meant is
//!   ambiguous, so neither is guessed.
//!
//! An unknown name, a cycle or a reference to itself fails closed (125), naming
//! the variable. Resolved values are capped at [`MAX_RESOLVED`]: nested
//! templates could otherwise double in size at every level.

use std::collections::{BTreeSet, HashMap};

use crate::document::{Document, Value, name_rule};
use crate::error::{Error, Result};
use crate::resolve::{OpenedFile, Origin};
use crate::secret::Secret;
use crate::terminal::escape;

/// The largest value a template may resolve to (as large as a whole file).
pub const MAX_RESOLVED: usize = crate::document::MAX_FILE_BYTES as usize;
/// The most bytes all resolved templates of a run may take together: a file of
/// many templates each using one large value must not exhaust memory.
pub const MAX_RESOLVED_TOTAL: usize = 4 * MAX_RESOLVED;
/// How deep templates may use templates: the resolver recurses once per link.
pub const MAX_DEPTH: usize = 64;

/// One piece of a parsed template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text copied as it is.
    Text(&'a str),
    /// `$$`: one `$`.
    Dollar,
    /// `${NAME}`.
    Ref(&'a str),
}

/// Parse template text; the error says what is wrong and where (1-based
/// character position), never the text around it.
pub fn parse(text: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            pieces.push(Piece::Text(&rest[..i]));
        }
        let at = text[..consumed + i].chars().count() + 1;
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            pieces.push(Piece::Dollar);
            consumed += i + 2;
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(format!("`${{` at character {at} is not closed with `}}`"));
            };
            let name = &tail[..end];
            if let Some(why) = name_rule(name) {
                return Err(format!("`${{…}}` at character {at}: {why}"));
            }
            pieces.push(Piece::Ref(name));
            consumed += i + 2 + end + 1;
            rest = &tail[end + 1..];
        } else {
            return Err(format!(
                "`$` at character {at} must start `${{NAME}}`, or be written `$$` for a literal `$`"
            ));
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The names a template uses, each once, in order of first use.
pub fn references(text: &str) -> Vec<&str> {
    let mut seen = Vec::new();
    for p in parse(text).unwrap_or_default() {
        if let Piece::Ref(n) = p
            && !seen.contains(&n)
        {
            seen.push(n);
        }
    }
    seen
}

/// `names` and every name their templates use, transitively, following the
/// definition that wins (the last file's): what must be opened to give `names`.
pub fn closure(docs: &[Document], names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = names.clone();
    let mut todo: Vec<String> = names.iter().cloned().collect();
    while let Some(n) = todo.pop() {
        let winner = docs.iter().rev().find_map(|d| d.entry(&n));
        if let Some(Value::Template(text)) = winner.map(|e| &e.value) {
            for r in references(text) {
                if out.insert(r.to_string()) {
                    todo.push(r.to_string());
                }
            }
        }
    }
    out
}

/// Where a value is among the opened files: (file, value) indexes.
type Slot = (usize, usize);

/// Replace every template among `files` (opened from `docs`, in the same order)
/// by its resolved value, and mark it sensitive when it uses a secret.
pub fn expand(docs: &[Document], files: &mut [OpenedFile]) -> Result<()> {
    let values = || {
        files
            .iter()
            .enumerate()
            .flat_map(|(fi, f)| f.values.iter().enumerate().map(move |(vi, v)| ((fi, vi), v)))
    };
    // Most files have no template: then no index of every name is built.
    let templates: Vec<Slot> = values()
        .filter(|(_, v)| v.origin == Origin::Template)
        .map(|(slot, _)| slot)
        .collect();
    if templates.is_empty() {
        return Ok(());
    }
    let mut winner: HashMap<&str, Slot> = HashMap::with_capacity(crate::resolve::value_count(files));
    for (slot, v) in values() {
        winner.insert(v.name.as_str(), slot);
    }
    let mut r = Resolver {
        docs,
        files,
        winner,
        done: HashMap::new(),
        stack: Vec::new(),
        total: 0,
    };
    for &slot in &templates {
        r.resolve(slot)?;
    }
    let Resolver { done, .. } = r;
    let mut done = done;
    for slot in templates {
        if let Some((secret, sensitive)) = done.remove(&slot) {
            let v = &mut files[slot.0].values[slot.1];
            v.secret = secret;
            v.sensitive = sensitive;
        }
    }
    Ok(())
}

struct Resolver<'a> {
    docs: &'a [Document],
    files: &'a [OpenedFile],
    winner: HashMap<&'a str, Slot>,
    /// Resolved templates: their value and whether they use a secret.
    done: HashMap<Slot, (Secret, bool)>,
    /// The templates being resolved, for cycles.
    stack: Vec<Slot>,
    /// Bytes of every template resolved so far.
    total: usize,
}

impl Resolver<'_> {
    fn resolve(&mut self, slot: Slot) -> Result<()> {
        if self.done.contains_key(&slot) {
            return Ok(());
        }
        let path = self.files[slot.0].path.display().to_string();
        let value = &self.files[slot.0].values[slot.1];
        let name = value.name.clone();
        if let Some(start) = self.stack.iter().position(|s| *s == slot) {
            let mut cycle: Vec<&str> = self.stack[start..]
                .iter()
                .map(|&(f, v)| self.files[f].values[v].name.as_str())
                .collect();
            cycle.push(&name);
            return Err(Error::input(format!(
                "{path}: {name}: templates form a cycle: {}",
                cycle.join(" → ")
            )));
        }
        let text = std::str::from_utf8(value.secret.expose())
            .map_err(|_| Error::input(format!("{path}: {name}: template is not UTF-8")))?;
        let pieces = parse(text).map_err(|why| Error::input(format!("{path}: {name}: {}", escape(&why))))?;
        let authenticated = self.docs.get(slot.0).is_some_and(Document::has_keys);

        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::input(format!(
                "{path}: {name}: templates use templates more than {MAX_DEPTH} deep"
            )));
        }
        // First every reference, so that lengths are known before any bytes are copied.
        self.stack.push(slot);
        for p in &pieces {
            let Piece::Ref(r) = *p else { continue };
            if r == name {
                return Err(Error::input(format!(
                    "{path}: {name}: the template uses ${{{name}}}, itself"
                )));
            }
            let Some(&target) = self.winner.get(r) else {
                return Err(Error::input(format!(
                    "{path}: {name}: the template uses ${{{r}}}, which no file defines \
                     (templates use only the files' variables, never inherited ones)"
                )));
            };
            let tv = &self.files[target.0].values[target.1];
            if tv.file {
                return Err(Error::input(format!(
                    "{path}: {name}: the template uses ${{{r}}}, which is delivered as a file (file = true); \
                     a template uses only values that are themselves in the environment"
                )));
            }
            if tv.origin == Origin::Template {
                self.resolve(target)?;
            }
        }
        self.stack.pop();

        let mut len = 0usize;
        let mut sensitive = false;
        for p in &pieces {
            len += match *p {
                Piece::Text(t) => t.len(),
                Piece::Dollar => 1,
                Piece::Ref(r) => {
                    let (bytes, secret) = self.value_of(r);
                    sensitive |= secret;
                    if secret && !authenticated {
                        return Err(Error::integrity(format!(
                            "{path}: {name}: the template uses ${{{r}}}, a secret, but this file has no \
                             [[kmsenv.keys]] and so no MAC: anyone who can write it could have written the template"
                        ))
                        .with_hint("keep the template in a file with keys (kmsenv init --key KEY), where the MAC covers it"));
                    }
                    bytes.len()
                }
            };
            if len > MAX_RESOLVED {
                return Err(Error::input(format!(
                    "{path}: {name}: the template resolves to more than {MAX_RESOLVED} bytes"
                )));
            }
        }
        self.total += len;
        if self.total > MAX_RESOLVED_TOTAL {
            return Err(Error::input(format!(
                "{path}: {name}: the templates resolve to more than {MAX_RESOLVED_TOTAL} bytes together"
            )));
        }
        // Sized up front, so the buffer never grows and leaves no unwiped copy.
        let mut out = Vec::with_capacity(len);
        for p in &pieces {
            match *p {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Dollar => out.push(b'$'),
                Piece::Ref(r) => out.extend_from_slice(self.value_of(r).0),
            }
        }
        self.done.insert(slot, (Secret::new(out), sensitive));
        Ok(())
    }

    /// The final bytes of `name` (resolved if a template) and whether they are secret.
    fn value_of(&self, name: &str) -> (&[u8], bool) {
        let Some(slot) = self.winner.get(name) else {
            return (&[], false);
        };
        let v = &self.files[slot.0].values[slot.1];
        match self.done.get(slot) {
            Some((s, sensitive)) => (s.expose(), *sensitive),
            None => (v.secret.expose(), v.origin == Origin::Secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dollar_brace_and_double_dollar_are_syntax() {
        assert_eq!(
            parse("a${B}$$c${D_1}").unwrap_or_default(),
            [
                Piece::Text("a"),
                Piece::Ref("B"),
                Piece::Dollar,
                Piece::Text("c"),
                Piece::Ref("D_1")
            ]
        );
        assert_eq!(parse("").unwrap_or_default(), []);
        for bad in ["$HOME", "a$", "${B", "${}", "${1X}", "${A:-x}", "${KMSENV_FILE}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let err = parse("é$x").unwrap_err();
        assert!(err.contains("character 2"), "{err}");
    }

    #[test]
    fn references_are_listed_once_in_order() {
        assert_eq!(references("${B}${A}${B}$${C}"), ["B", "A"]);
    }
}
