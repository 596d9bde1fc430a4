//! `kmsenv init`: a new file with a fresh data key, wrapped by each `--key`.

use crate::cli::InitArgs;
use crate::document::parse_context;
use crate::error::{Error, Result};
use crate::run::{Connect, Run};
use crate::writer::Writer;

pub fn run<K: Connect>(run: &Run<K>, args: InitArgs) -> Result<()> {
    let path = run.single_file("init")?;
    let context = parse_context(&args.context, None)?;
    if args.keys.is_empty() {
        return Err(Error::usage("init needs --key"));
    }
    let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
    let doc = Writer::create(run, path, &context, &keys)?.save()?;
    let arns: Vec<&str> = doc.keys.iter().map(|k| k.arn.as_str()).collect();
    run.note(format!(
        "created {} with a data key wrapped by {}",
        path.display(),
        arns.join(", ")
    ));
    Ok(())
}
