//! `kmsenv list`: names, kinds and keys — never values, and no KMS call.

use crate::commands::Ctx;
use crate::document::Value;
use crate::error::Result;
use crate::kms::arn_region;

pub fn run(ctx: &Ctx) -> Result<()> {
    let docs = ctx.load_all()?;
    let mut out = String::new();
    for doc in &docs {
        out += &format!("{}\n", doc.path.display());
        if !doc.context.is_empty() {
            let ctx: Vec<String> = doc.context.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out += &format!("  context  {}\n", ctx.join(" "));
        }
        for k in &doc.keys {
            out += &format!(
                "  key      {} ({})\n",
                k.arn,
                arn_region(&k.arn).unwrap_or("configured region")
            );
        }
        let width = doc.entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in &doc.entries {
            let mut line = format!("  {:width$}  {}", e.name, e.value.kind());
            if let Value::Kms { key: Some(k), .. } = &e.value {
                line += &format!("  {k}");
            }
            if e.file {
                line += "  file";
            }
            out += line.trim_end();
            out += "\n";
        }
    }
    print!("{out}");
    Ok(())
}
