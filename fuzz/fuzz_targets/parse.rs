//! The file parser and validator never panic, whatever the text; and every file it
//! accepts can be edited and written back as a file it accepts again.
#![no_main]

use std::path::Path;

use kmsenv::document::Document;
use kmsenv::store::Editor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Ok(doc) = Document::parse(Path::new("fuzz.toml"), text) {
        let _ = doc.mac_input();
        if let Ok(mut ed) = Editor::new(&doc) {
            let _ = ed.set_plain("FUZZ_NAME", "value");
            let _ = ed.set_mac("AAAA");
            if let Ok(again) = ed.finish() {
                assert!(again.entry("FUZZ_NAME").is_some());
            }
        }
    }
});
