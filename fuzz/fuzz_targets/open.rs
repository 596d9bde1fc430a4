//! Opening sealed values and checking MACs never panics on hostile input, and
//! nothing opens that was not sealed under this key for this name.
#![no_main]

use std::collections::BTreeMap;

use kmsenv::envelope::{DataKey, MacEntry, MacInput};
use kmsenv::secret::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(dk) = DataKey::from_plaintext(&Secret::new(vec![0x42; 32])) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let (name, sealed) = text.split_once('|').unwrap_or(("NAME", &text));
    // Random text must never authenticate.
    assert!(dk.open(name, sealed).is_err());
    // A value sealed here opens under its name only.
    let mine = dk.seal(name, data);
    assert_eq!(
        dk.open(name, &mine).map(|s| s.expose().to_vec()).ok().as_deref(),
        Some(data)
    );
    if !name.is_empty() {
        assert!(dk.open(&format!("{name}X"), &mine).is_err());
    }
    let ctx = BTreeMap::new();
    let input = MacInput {
        version: 1,
        context: &ctx,
        entries: vec![MacEntry {
            name,
            kind: "sealed",
            text: sealed,
            file: false,
        }],
    };
    assert!(!dk.verify_mac(&input, sealed));
    let mac = dk.mac(&input);
    assert!(dk.verify_mac(&input, &mac));
});
