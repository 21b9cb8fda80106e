//! Randomness for the ids, nonces and jitter the authwire crates need: one helper, from the
//! operating system's generator.
//!
//! ```
//! let id = authwire::random::hex(16); // 128 bits, 32 hex digits
//! assert_eq!(id.len(), 32);
//! assert_ne!(id, authwire::random::hex(16));
//! let u = authwire::random::unit();
//! assert!((0.0..1.0).contains(&u));
//! ```

/// `bytes` random bytes from the operating system, as lowercase hex. For identifiers that must
/// not collide or be guessed (a JWT `jti`, a lease owner).
pub fn hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random number in `[0, 1)`, for jitter.
pub fn unit() -> f64 {
    let mut buf = [0u8; 8];
    fill(&mut buf);
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}

/// Fill `buf` with random bytes from the operating system, for keys. Fails only if the OS
/// generator does.
pub fn secure_fill(buf: &mut [u8]) -> Result<(), std::io::Error> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Fill `buf` from the OS. Should the OS generator ever fail, fall back to the standard
/// library's per-process random keys mixed with a counter (unique, not secret): for ids and
/// jitter only, never keys (see [`secure_fill`]).
fn fill(buf: &mut [u8]) {
    if secure_fill(buf).is_ok() {
        return;
    }
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for chunk in buf.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let bytes = h.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}
