//! One file per subcommand; this one only dispatches. What commands share
//! lives in `run` (the files, the deadline, output, the session) and `writer`
//! (a file being changed).

mod check;
mod docs;
mod edit;
mod exec;
mod export;
mod get;
mod import;
mod init;
mod keys;
mod lint;
mod list;
mod rotate;
mod set;
mod unset;
mod upgrade;

#[cfg(test)]
mod tests;

use crate::cli::{Cli, Command};
use crate::error::Result;
use crate::run::Run;

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
    let mut run = Run::new(&cli.global)?;
    match cli.command {
        Command::Exec(a) => exec::run(&mut run, a),
        Command::Init(a) => init::run(&run, a),
        Command::Set(a) => set::run(&run, a),
        Command::Unset(a) => unset::run(&run, a),
        Command::Get(a) => get::run(&run, a),
        Command::List(a) => list::run(&run, a),
        Command::Lint(a) => lint::run(&run, a),
        Command::Rotate(a) => rotate::run(&run, a),
        Command::Keys(c) => keys::run(&run, c),
        Command::Edit => edit::run(&mut run),
        Command::Check(a) => check::run(&run, a),
        Command::Export(a) => export::run(&run, a),
        Command::Import(a) => import::run(&run, a),
        Command::Upgrade => upgrade::run(&run),
        // Answered above, before the run.
        Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}
