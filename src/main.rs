//! kmsenv: secrets from an encrypted TOML file, through AWS KMS, into the
//! environment of a program that kmsenv then becomes.
//!
//! This file only wires things: parse the arguments, run the command, and turn
//! an error into one line on stderr and an exit code (125 / 126 / 127, as env(1)).

use clap::Parser;

use kmsenv::{cli, commands, error};

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 125 like every other failure before exec (env(1)).
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = commands::run(cli) {
        error::report(&e);
        std::process::exit(e.exit_code());
    }
}
