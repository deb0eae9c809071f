//! Deterministic test data for unit tests and benches (not part of the API).

/// `n` bytes of xorshift noise from `seed`: incompressible, and the same for
/// the same seed on every run. Distinct seeds give distinct data.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
