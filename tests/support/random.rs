//! Randomness for tests: a seeded generator where a failing run must be
//! repeatable (kill points), and fresh random names and canaries where two runs
//! must never collide.

/// xorshift64*: small, deterministic from its seed, so that a failing run can be
/// repeated with the seed it printed.
pub struct Rng(u64);

use std::time::Duration;

impl Rng {
    /// A generator from `seed` (not 0: xorshift stays at 0).
    pub fn new(seed: u64) -> Rng {
        assert_ne!(seed, 0, "xorshift needs a non-zero seed");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform (nearly) in `[0, limit)`; 0 when `limit` is 0.
    pub fn below(&mut self, limit: Duration) -> Duration {
        let nanos = limit.as_nanos().max(1) as u64;
        Duration::from_nanos(self.next() % nanos)
    }
}

/// `bytes` fresh random bytes from the operating system, as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    getrandom::getrandom(&mut random).expect("random bytes from the OS");
    random.iter().map(|b| format!("{b:02x}")).collect()
}
