//! A hasher for the integer ids a transport assigns itself, in sequence, to its own
//! operations: nobody else chooses them, so the denial-of-service resistance of the
//! standard SipHash buys nothing, while its cost is paid on every posted frame.
//!
//! Fibonacci (multiplicative) hashing, D. Knuth, *The Art of Computer Programming* vol. 3,
//! §6.4: the product with 2^64/φ spreads consecutive ids over both the low bits (the bucket
//! index) and the high bits (hashbrown's control tags).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The hasher (see the module documentation); only `u64` keys are expected.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by self-assigned ids.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_low_and_high_bits() {
        let hash = |x: u64| {
            let mut h = IdHasher::default();
            h.write_u64(x);
            h.finish()
        };
        let low: std::collections::HashSet<u64> = (0..256).map(|x| hash(x) & 255).collect();
        let high: std::collections::HashSet<u64> = (0..256).map(|x| hash(x) >> 57).collect();
        assert_eq!(low.len(), 256);
        assert!(high.len() > 100, "{}", high.len());
        let mut m: IdMap<u32> = IdMap::default();
        for i in 0..1000 {
            m.insert(i, i as u32);
        }
        assert!((0..1000).all(|i| m.remove(&i) == Some(i as u32)));
    }
}
