//! kmsenv: secrets from an encrypted TOML file, through AWS KMS, into the
//! environment of a program that kmsenv then becomes.
//!
//! This file only wires things: parse the arguments, run the command, and turn
//! an error into one line on stderr and an exit code (125 / 126 / 127, as env(1)).

use clap::Parser;

use kmsenv::{cli, commands, error};

// musl's allocator returns memory to the kernel eagerly (an mmap and munmap for
// many small allocations): mimalloc on musl builds (Cargo.toml says more).
#[cfg(all(target_env = "musl", not(feature = "musl-malloc"), not(feature = "jemalloc")))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(target_env = "musl", feature = "jemalloc", not(feature = "musl-malloc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // Usage errors look like every other failure and exit 125 (env(1)).
            let text = e.render().to_string();
            eprint!("kmsenv: {}", text.strip_prefix("error: ").unwrap_or(&text));
            std::process::exit(125);
        }
    };
    if let Err(e) = commands::run(cli) {
        error::report(&e);
        std::process::exit(e.exit_code());
    }
}
