//! The one type that holds plaintext.
//!
//! A [`Secret`] cannot be printed by accident: its `Debug` shows only the length,
//! it has no `Display`, and its bytes are zeroed when it is dropped. Everything that
//! carries a decrypted value or a data key uses it.

use std::fmt;

use zeroize::Zeroizing;

/// Plaintext bytes, zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Secret::new(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_length_not_bytes() {
        let s = Secret::new(b"CANARY-debug".to_vec());
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secret(<12 bytes>)");
        assert!(!shown.contains("CANARY"));
    }
}
