//! Where secret values come from: a file, stdin, or a no-echo prompt on the
//! terminal — never argv, which every user of the machine can read.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Values larger than this are refused: an environment variable this big is a mistake.
const MAX_VALUE_BYTES: u64 = 1024 * 1024;
/// A typed value: a terminal line holds at most 4095 bytes anyway (pipe longer ones).
const PROMPT_MAX: usize = 4096;

/// Read the value of `name` byte for byte; an empty value is refused.
pub fn read_value(name: &str, from_file: Option<&Path>) -> Result<Secret> {
    let value = match from_file {
        Some(path) => read_limited(
            std::fs::File::open(path).map_err(|e| Error::io("read", path, &e))?,
            name,
        )?,
        None if std::io::stdin().is_terminal() => prompt(name)?,
        None => read_limited(std::io::stdin().lock(), name)?,
    };
    if value.is_empty() {
        let from = from_file.map_or("stdin".to_string(), |p| p.display().to_string());
        return Err(Error::usage(format!("{name}: empty value (nothing on {from})"))
            .with_hint("pipe the value in: printf %s \"$VALUE\" | kmsenv set NAME"));
    }
    Ok(value)
}

/// Read all of `r`, up to the size limit.
pub fn read_limited(r: impl Read, what: &str) -> Result<Secret> {
    // Room for all of it up front: a vector that grows leaves unwiped copies.
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_VALUE_BYTES as usize + 1));
    r.take(MAX_VALUE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::usage(format!("{what}: cannot read the value: {e}")))?;
    if buf.len() as u64 > MAX_VALUE_BYTES {
        return Err(Error::usage(format!(
            "{what}: value is larger than {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(Secret::new(std::mem::take(&mut *buf)))
}

/// Ask twice on /dev/tty without echo; both answers must match.
fn prompt(name: &str) -> Result<Secret> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            Error::usage(format!(
                "{name}: cannot open the terminal to ask for the value: {e}"
            ))
        })?;
    let first = ask(&tty, &format!("Value for {name}: "))?;
    let second = ask(&tty, "Again, to confirm: ")?;
    if first != second {
        return Err(Error::usage(format!(
            "{name}: the two values differ; nothing was changed"
        )));
    }
    Ok(first)
}

fn ask(tty: &std::fs::File, question: &str) -> Result<Secret> {
    let fail = |e: std::io::Error| Error::usage(format!("cannot use the terminal: {e}"));
    let saved = tcgetattr(tty).map_err(|e| fail(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    // Echo off (and earlier typing flushed) before the question shows, so an
    // answer typed as soon as it shows is neither echoed nor thrown away.
    tcsetattr(tty, SetArg::TCSAFLUSH, &quiet).map_err(|e| fail(e.into()))?;
    if let Err(e) = (&*tty).write_all(question.as_bytes()) {
        let _ = tcsetattr(tty, SetArg::TCSAFLUSH, &saved);
        return Err(fail(e));
    }
    // Byte by byte into a buffer that never grows past its first allocation
    // (no BufReader: its buffer would keep a copy that nobody wipes).
    let mut line = Zeroizing::new(Vec::with_capacity(PROMPT_MAX));
    let mut byte = Zeroizing::new([0u8; 1]);
    let read = loop {
        match (&*tty).read(&mut *byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) if line.len() == PROMPT_MAX => {
                break Err(std::io::Error::other(format!(
                    "more than {PROMPT_MAX} bytes typed"
                )));
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let _ = tcsetattr(tty, SetArg::TCSAFLUSH, &saved);
    read.map_err(fail)?;
    Ok(Secret::new(std::mem::take(&mut *line)))
}
