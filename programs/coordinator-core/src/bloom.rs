//! Fixed-size Bloom filters of 32-byte ids (client keys, payload hashes), keyed by the round seed
//! so that no id can be ground in advance to collide with another.

use bytemuck::{Pod, Zeroable};

use crate::shuffle::{derive_key, mix};

/// Filter size in bytes. With 2048 bits and 6 probes the false-positive rate is 0.003% for 64
/// ids and 2% for the full 256. Two filters must fit one witness transaction (1232 bytes), so
/// 512 bytes each would not do.
pub const BLOOM_BYTES: usize = 256;
/// Bits one insertion sets at most.
pub const PROBES: u64 = 6;

/// A set of ids with no false negatives and rare false positives.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Bloom {
    pub bits: [u8; BLOOM_BYTES],
}

impl Default for Bloom {
    fn default() -> Self {
        Self::zeroed()
    }
}

fn positions(id: &[u8; 32], seed: &[u8; 32]) -> impl Iterator<Item = usize> {
    let key = derive_key(id, derive_key(seed, 0xB100_F11E));
    (0..PROBES).map(move |probe| (mix(key ^ mix(probe)) % (BLOOM_BYTES as u64 * 8)) as usize)
}

impl Bloom {
    /// Adds `id` under the round's `seed`.
    pub fn insert(&mut self, id: &[u8; 32], seed: &[u8; 32]) {
        for bit in positions(id, seed) {
            self.bits[bit / 8] |= 1 << (bit % 8);
        }
    }

    /// How many bits are set: `n` insertions set at most `n * PROBES`.
    pub fn set_bits(&self) -> u32 {
        self.bits.iter().map(|byte| byte.count_ones()).sum()
    }

    /// Whether `id` may have been added under `seed` (false means certainly not).
    pub fn contains(&self, id: &[u8; 32], seed: &[u8; 32]) -> bool {
        positions(id, seed).all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> [u8; 32] {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        id[31] = 0xAA;
        id
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let seed = [3u8; 32];
        let mut bloom = Bloom::default();
        (0..256).for_each(|i| bloom.insert(&id(i), &seed));
        assert!((0..256).all(|i| bloom.contains(&id(i), &seed)));
        let false_positives = (1000..21000)
            .filter(|&i| bloom.contains(&id(i), &seed))
            .count();
        // Expected about 2% (430); a broken hash would give far more.
        assert!(false_positives < 600, "{false_positives} of 20000");
        // Another seed places ids elsewhere.
        assert!(!(0..256).all(|i| bloom.contains(&id(i), &[4u8; 32])));
    }
}
