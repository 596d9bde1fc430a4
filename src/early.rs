//! A big file's data key opened while the rest of the file is parsed.
//!
//! Opening an envelope file costs one KMS `Decrypt` (a network round trip) and
//! a parse of the whole file; for 1,000 sealed values the parse takes about as
//! long as the round trip, and it used to come first. The `Decrypt` needs only
//! the file's header (`[kmsenv]` and its keys), which kmsenv writes before
//! `[env]`: that part is parsed on its own and its data key opened while
//! another thread parses the whole file. The answer is used only if the whole
//! file, once parsed, has exactly that header ([`same_head`]); otherwise it is
//! dropped (wiped) and the key opened again the usual way. A file that does not
//! parse is reported as soon as its parse ends, without waiting for KMS.

use std::future::Future;
use std::path::Path;
use std::sync::Mutex;

use futures_util::future::{Either, select};

use crate::document::Document;
use crate::envelope::DataKey;
use crate::error::{Class, Error, Result};
use crate::session::Session;

/// A data key opened early and the wrapping key that opened it, or why it did
/// not open: what `unlock::unwrap_data_key` returns.
pub type Opened = Result<(DataKey, String)>;

/// Files at least this big are opened this way: below it, parsing the file
/// costs less than starting a thread to do it.
pub const MIN_BYTES: usize = 16 * 1024;

/// The text before the file's `[env]` line, if it has one: the header as
/// kmsenv writes it. Whatever it holds is checked against the whole file.
pub fn head(text: &str) -> Option<&str> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "[env]" {
            return Some(&text[..at]);
        }
        at += line.len();
    }
    None
}

/// Whether the data key `head` was opened with is the one `full` names: the
/// same context and wrapping keys in the same order (everything
/// `unlock::unwrap_data_key` reads from a file), and the same format version.
pub fn same_head(head: &Document, full: &Document) -> bool {
    head.path == full.path
        && head.version == full.version
        && head.context == full.context
        && head.keys.len() == full.keys.len()
        && head
            .keys
            .iter()
            .zip(&full.keys)
            .all(|(h, f)| h.arn == f.arn && h.data_key == f.data_key)
}

/// Parse `text` (the file at `path`) on another thread while `unwrap` (the
/// header's data key) runs on the session, and hand the parsed file to
/// `ready`: the checks the file must pass anyway, and whether it has the
/// header `unwrap` was made from. `unwrap` is waited for only if the file is
/// ready and has that header; otherwise it is dropped unfinished, so a bad file
/// or a usage error never waits for KMS. If no thread can be started, the file
/// is parsed here and `unwrap` never runs.
pub fn parse_while<F, T>(
    session: &Session,
    path: &Path,
    text: String,
    unwrap: F,
    ready: impl FnOnce(Document) -> Result<(T, bool)>,
) -> (Option<Opened>, Result<T>)
where
    F: Future<Output = Opened>,
{
    // Taken by whichever thread parses: the new one, or this one when the new
    // one cannot start (a failed spawn drops the closure it was given).
    let text = Mutex::new(Some(text));
    let parse = || {
        let text = text.lock().ok().and_then(|mut t| t.take());
        text.ok_or_else(lost).and_then(|t| Document::parse(path, t))
    };
    std::thread::scope(|s| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let parse = &parse;
        let spawned = std::thread::Builder::new()
            .name("kmsenv-parse".into())
            .spawn_scoped(s, move || {
                // The receiver is gone only if the run already failed.
                let _ = tx.send(parse());
            });
        if spawned.is_err() {
            return (None, parse().and_then(ready).map(|(t, _)| t));
        }
        session.block_on(async {
            let unwrap = std::pin::pin!(unwrap);
            match select(unwrap, rx).await {
                Either::Left((key, rx)) => {
                    let parsed = rx.await.unwrap_or_else(|_| Err(lost()));
                    match parsed.and_then(ready) {
                        Ok((t, same)) => (same.then_some(key), Ok(t)),
                        Err(e) => (None, Err(e)),
                    }
                }
                Either::Right((parsed, unwrap)) => {
                    match parsed.unwrap_or_else(|_| Err(lost())).and_then(ready) {
                        Ok((t, true)) => (Some(unwrap.await), Ok(t)),
                        Ok((t, false)) => (None, Ok(t)),
                        Err(e) => (None, Err(e)),
                    }
                }
            }
        })
    })
}

/// The parse thread ended without an answer (it cannot: a release build aborts
/// on panic).
fn lost() -> Error {
    Error::new(
        Class::Internal,
        "internal: the parse thread ended without an answer",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_the_text_before_the_env_line() {
        let text = "[kmsenv]\nversion = 2\n\n[env]\nA = \"1\"\n";
        assert_eq!(head(text), Some("[kmsenv]\nversion = 2\n\n"));
        assert_eq!(head("[kmsenv]\nversion = 2\n"), None);
        // Only a line that is exactly `[env]` (a table header kmsenv writes).
        assert_eq!(head("[kmsenv]\nx = \"[env]\"\n [env]x\n"), None);
        assert_eq!(head("[env]\r\nA = \"1\"\n"), Some(""));
    }
}
