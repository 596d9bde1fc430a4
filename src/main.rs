//! kmsenv: secrets from an encrypted TOML file, through AWS KMS, into the
//! environment of a program that kmsenv then becomes.
//!
//! This file only wires things: parse the arguments, run the command, and turn
//! an error into one line on stderr and an exit code (125 / 126 / 127, as env(1)).

mod cli;
mod commands;
mod document;
mod dotenv;
mod envelope;
mod error;
mod exec;
mod input;
mod kms;
mod resolve;
mod secret;
mod store;

use clap::Parser;

use crate::error::Error;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = commands::run(cli) {
        report(&e);
        std::process::exit(e.exit_code());
    }
}

/// Print an error as one line of cause and, if known, one line of hint.
pub fn report(e: &Error) {
    eprintln!("kmsenv: {}", e.message());
    if let Some(h) = e.hint() {
        eprintln!("kmsenv: hint: {h}");
    }
}
