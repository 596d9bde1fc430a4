//! One test's world: a temporary folder that is also HOME and the working
//! directory, with helpers to make keys and kmsenv files in it and to prove that a
//! command did or did not run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use tempfile::TempDir;

use super::moto::{REGION, create_key};
use super::run::{Kmsenv, Output};

/// A new folder under `parent`, removed (with its contents) on drop. Mode 0755, as
/// `mkdir` makes one, so that a test can hand a file in it to another user.
pub fn temp_dir_in(parent: &Path) -> TempDir {
    tempfile::Builder::new()
        .prefix("kmsenv-test-")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("create a folder in {}: {e}", parent.display()))
}

/// A new folder under the system's temporary folder (see [`temp_dir_in`]).
pub fn temp_dir() -> TempDir {
    temp_dir_in(&std::env::temp_dir())
}

/// A copy of `program` in `folder`, mode 0755: for a test that runs it as another
/// user, who may not reach the build's target folder (a clone in a 0700 home or
/// `mktemp -d` folder). A [`temp_dir`] or a sandbox is reachable by all.
pub fn reachable_copy(program: &Path, folder: &Path) -> PathBuf {
    let copy = folder.join(program.file_name().expect("a program's file name"));
    std::fs::copy(program, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", program.display()));
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    copy
}

/// One value for [`Sandbox::file_with`]: a name, its value, and the flags of
/// `kmsenv set` that say how it is kept.
pub struct Entry<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
    pub flags: &'a [&'a str],
}

/// A value sealed under the file's data key (`set NAME`).
pub const fn sealed<'a>(name: &'a str, value: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        value,
        flags: &[],
    }
}

/// A plain value (`set --plain NAME`).
pub const fn plain<'a>(name: &'a str, value: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        value,
        flags: &["--plain"],
    }
}

/// A value encrypted by KMS directly (`set --kms NAME`).
pub const fn direct<'a>(name: &'a str, value: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        value,
        flags: &["--kms"],
    }
}

/// A sealed value delivered as a file (`set --as-file NAME`).
pub const fn as_file<'a>(name: &'a str, value: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        value,
        flags: &["--as-file"],
    }
}

pub struct Sandbox {
    pub dir: TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: temp_dir() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// kmsenv with test credentials and moto's endpoint.
    pub fn kmsenv(&self) -> Kmsenv {
        Kmsenv::new(self.dir.path())
    }

    /// kmsenv with no AWS configuration at all.
    pub fn kmsenv_without_aws(&self) -> Kmsenv {
        Kmsenv::without_aws(self.dir.path())
    }

    /// A new KMS key in the default region.
    pub fn key(&self) -> String {
        create_key(REGION)
    }

    /// `kmsenv -f NAME init --key KEY…`, asserted to succeed.
    pub fn init(&self, name: &str, keys: &[&str]) -> PathBuf {
        let file = self.path(name);
        let mut run = self.kmsenv().file(&file).arg("init");
        for key in keys {
            run = run.arg("--key").arg(key);
        }
        run.run().ok();
        file
    }

    /// A new file under a new key: (path, key ARN).
    pub fn new_file(&self, name: &str) -> (PathBuf, String) {
        let key = self.key();
        let file = self.init(name, &[&key]);
        (file, key)
    }

    /// A new file under a new key holding `entries`, each set in turn: (path, key ARN).
    pub fn file_with(&self, name: &str, entries: &[Entry]) -> (PathBuf, String) {
        let (file, key) = self.new_file(name);
        for entry in entries {
            self.set_with(&file, entry.flags, entry.name, entry.value);
        }
        (file, key)
    }

    /// `kmsenv -f FILE set NAME` with the value on stdin, asserted to succeed.
    pub fn set(&self, file: &Path, name: &str, value: &[u8]) {
        self.set_with(file, &[], name, value);
    }

    /// `kmsenv -f FILE set FLAGS… NAME` with the value on stdin.
    pub fn set_with(&self, file: &Path, flags: &[&str], name: &str, value: &[u8]) {
        self.kmsenv()
            .file(file)
            .arg("set")
            .args(flags)
            .arg(name)
            .stdin(value)
            .run()
            .ok();
    }

    /// The environment `kmsenv -f F… exec -- env -0` gives its child.
    #[track_caller]
    pub fn exec_env(&self, files: &[&Path]) -> BTreeMap<String, Vec<u8>> {
        let mut run = self.kmsenv();
        for file in files {
            run = run.file(file);
        }
        run.args(["exec", "--", "env", "-0"]).run().ok().env0()
    }

    pub fn read(&self, file: &Path) -> String {
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
    }

    pub fn write(&self, file: &Path, text: &str) {
        std::fs::write(file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    /// Writes an executable file.
    pub fn write_executable(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, text).expect("write executable");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// A path that a command creates to prove it ran.
    pub fn marker(&self) -> PathBuf {
        self.path("MARKER-command-ran")
    }

    /// `sh -c 'touch MARKER'` as arguments for `exec --`.
    pub fn touch_marker_command(&self) -> Vec<OsString> {
        vec![
            "sh".into(),
            "-c".into(),
            "touch \"$1\"".into(),
            "sh".into(),
            self.marker().into_os_string(),
        ]
    }

    /// Runs `kmsenv -f F… exec -- sh -c 'touch MARKER'` and returns the result.
    pub fn exec_marker(&self, files: &[&Path]) -> Output {
        let mut run = self.kmsenv();
        for file in files {
            run = run.file(file);
        }
        run.args(["exec", "--"]).args(self.touch_marker_command()).run()
    }

    /// Asserts that the file is usable: exec runs the marker command. Then removes
    /// the marker, so a later run can prove that the command did *not* run.
    #[track_caller]
    pub fn assert_command_runs(&self, files: &[&Path]) {
        self.exec_marker(files).ok();
        assert!(self.marker().exists(), "the marker command should have run");
        std::fs::remove_file(self.marker()).expect("remove marker");
    }

    /// Asserts that the marker command did not run.
    #[track_caller]
    pub fn assert_command_did_not_run(&self) {
        assert!(
            !self.marker().exists(),
            "the command ran although kmsenv should have failed closed"
        );
    }
}

/// Builds, at `out`, a static program (musl-gcc; `make static` installs it) that
/// prints its environment NUL-separated: the target of runs in an empty root or a
/// `FROM scratch` image, where no `env` exists.
pub fn static_printenv(work: &Path, out: &Path) {
    let src = work.join("printenv.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <string.h>\nextern char **environ;\n\
         int main(void){for(char**e=environ;*e;e++){fwrite(*e,1,strlen(*e)+1,stdout);}return 0;}\n",
    )
    .expect("write printenv.c");
    let built = std::process::Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("musl-gcc not found: run `make static` (it installs musl-tools)");
    assert!(built.success(), "musl-gcc failed");
}
