//! Seeded pseudo-random permutations: the one primitive behind batch assignment, witness
//! election and the trainer's data order, so every host derives the same answer from a seed.

/// SplitMix64's finalizer: a fast, well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds a 32-byte seed and a domain tag into one 64-bit key, so that one round seed gives
/// independent permutations for independent purposes.
pub fn derive_key(seed: &[u8; 32], domain: u64) -> u64 {
    seed.chunks_exact(8).fold(mix(domain), |key, word| {
        mix(key ^ u64::from_le_bytes(word.try_into().expect("8-byte chunk")))
    })
}

/// The image of `x` under a keyed bijection of `0..n` (a 4-round Feistel network with cycle
/// walking). `x` must be below `n`.
pub fn permute(key: u64, x: u64, n: u64) -> u64 {
    debug_assert!(x < n, "permute: {x} is outside 0..{n}");
    let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let feistel = |value: u64| {
        let (mut left, mut right) = (value >> half, value & mask);
        for round in 0..4u64 {
            let f = mix(key ^ mix((round << 32) | right)) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << half) | right
    };
    // The network permutes 0..2^(2·half) ⊇ 0..n; walking the cycle until it lands back in range
    // restricts it to a permutation of 0..n (fewer than 4 steps expected).
    let mut y = feistel(x);
    while y >= n {
        y = feistel(y);
    }
    y
}

/// Whether `x` is among a seeded choice of one in `one_in` of `0..n` (rounded up, so at least
/// one; none when `one_in` is 0): the first `n / one_in` of the keyed permutation. `x` must be
/// below `n`.
pub fn one_in(key: u64, x: u64, n: u64, one_in: u64) -> bool {
    one_in != 0 && permute(key, x, n) < n.div_ceil(one_in)
}

/// Whether `x` is chosen by a seeded draw with a chance of one in `one_in` (never at 0), each
/// `x` on its own: a choice may take none of `0..n`, or all.
pub fn one_chance_in(key: u64, x: u64, one_in: u64) -> bool {
    one_in != 0 && mix(key ^ x).is_multiple_of(one_in)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_bijection_for_any_size() {
        for n in [1u64, 2, 3, 10, 255, 256, 1000, 4097] {
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = permute(42, x, n);
                assert!(!seen[y as usize], "n = {n}: {y} twice");
                seen[y as usize] = true;
            }
        }
    }

    #[test]
    fn one_chance_in_draws_each_on_its_own() {
        let chosen = |one_in| (0..10_000).filter(|&x| one_chance_in(3, x, one_in)).count();
        assert_eq!(chosen(0), 0);
        assert_eq!(chosen(1), 10_000);
        let quarter = chosen(4);
        assert!(
            (2_300..2_700).contains(&quarter),
            "{quarter} of 10,000 at one in 4"
        );
    }

    #[test]
    fn one_in_chooses_a_rounded_up_share() {
        for (n, share, chosen) in [
            (8u64, 1u64, 8usize),
            (8, 4, 2),
            (8, 3, 3),
            (8, 16, 1),
            (8, 0, 0),
        ] {
            let count = (0..n).filter(|&x| one_in(9, x, n, share)).count();
            assert_eq!(count, chosen, "one in {share} of {n}");
        }
    }

    #[test]
    fn derived_keys_differ_by_domain_and_seed() {
        let seed = [7u8; 32];
        assert_ne!(derive_key(&seed, 1), derive_key(&seed, 2));
        assert_ne!(derive_key(&seed, 1), derive_key(&[8u8; 32], 1));
    }
}
