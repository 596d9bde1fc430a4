//! The one error type, with the class that decides the exit code.
//!
//! Every failure becomes an [`Error`]: a one-line cause (naming the file, the
//! variable or key, and the AWS error code where there is one) and, where we know
//! it, a hint saying what to do. Messages are built from names, paths, key ARNs
//! and AWS codes only — never from a value — so printing one cannot leak a secret.

use std::fmt;
use std::io;
use std::path::Path;

use crate::terminal::escape;

pub type Result<T> = std::result::Result<T, Error>;

/// What unit tests return, so that a failed step is a test failure with `?`.
#[cfg(test)]
pub type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// What kind of failure this is; the exit code follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Wrong arguments or input on stdin.
    Usage,
    /// The file cannot be read or is not a valid kmsenv file.
    Input,
    /// The file or a value was altered: MAC mismatch, a value that does not open.
    Integrity,
    /// KMS (or the credential chain) refused or did not answer in time.
    Kms,
    /// A local system call failed (write, rename, memfd…).
    Io,
    /// The file changed under a command that read it first (`edit`): nothing
    /// was written, and running it again is the answer.
    Conflict,
    /// An invariant of kmsenv's own did not hold: a bug to report.
    Internal,
    /// `lint` found something to fix (exit 1, as linters do: the files were
    /// read, and kmsenv itself did not fail).
    Findings,
    /// `exec`: the command exists but cannot be executed (exit 126).
    NotExecutable,
    /// `exec`: the command was not found (exit 127).
    NotFound,
}

/// A kmsenv failure: a one-line cause and an optional hint.
#[derive(Debug)]
pub struct Error {
    pub class: Class,
    message: String,
    hint: Option<String>,
}

impl Error {
    pub fn new(class: Class, message: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Class::Usage, message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Class::Input, message)
    }

    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(Class::Integrity, message)
    }

    pub fn kms(message: impl Into<String>) -> Self {
        Self::new(Class::Kms, message)
    }

    /// A failed system call on `path`; `doing` says what we were doing ("read", "rename").
    pub fn io(doing: &str, path: &Path, err: &io::Error) -> Self {
        let class = match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::IsADirectory => Class::Input,
            _ => Class::Io,
        };
        Self::new(
            class,
            format!("{}: cannot {doing}: {}", path.display(), io_cause(err)),
        )
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefix the message with where it happened (a file path, usually).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Exit code before exec, as env(1): 125 for kmsenv's own failures.
    pub fn exit_code(&self) -> i32 {
        match self.class {
            Class::NotExecutable => 126,
            Class::NotFound => 127,
            Class::Findings => 1,
            _ => 125,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Print an error as one line of cause and, if known, one line of hint. Both
/// are escaped: they carry paths, ARNs and AWS messages written by others.
pub fn report(e: &Error) {
    eprintln!("kmsenv: {}", escape(e.message()));
    if let Some(h) = e.hint() {
        eprintln!("kmsenv: hint: {}", escape(h));
    }
}

/// An io::Error's cause without Rust's "(os error N)" noise.
pub fn io_cause(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_env1() {
        assert_eq!(Error::input("x").exit_code(), 125);
        assert_eq!(Error::kms("x").exit_code(), 125);
        assert_eq!(Error::new(Class::NotExecutable, "x").exit_code(), 126);
        assert_eq!(Error::new(Class::NotFound, "x").exit_code(), 127);
    }

    #[test]
    fn io_errors_name_the_path_without_os_error_noise() {
        let e = io::Error::from_raw_os_error(13);
        let err = Error::io("read", Path::new("/x/kmsenv.toml"), &e);
        assert_eq!(err.to_string(), "/x/kmsenv.toml: cannot read: Permission denied");
    }
}
