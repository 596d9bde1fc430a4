//! The dotenv parser behind `import` and `edit` never panics, and what the
//! dotenv writer prints always parses back to the same bytes.
#![no_main]

use kmsenv::dotenv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dotenv::parse("fuzz.env", data);
    let mut out = Vec::new();
    dotenv::format_dotenv("V", data, &mut out);
    if !data.contains(&0) {
        let back = dotenv::parse("out", &out).expect("our own output parses");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].1.expose(), data);
    }
});
