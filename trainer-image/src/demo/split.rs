//! Block sides for DeMo's blockwise DCT.
//!
//! Each dimension of a parameter is cut into equal blocks whose side is the largest divisor of the
//! dimension that does not exceed the target chunk, exactly as the reference implementation's
//! `_get_smaller_split` does. A dimension no larger than the chunk is one block. A prime dimension
//! larger than the chunk degenerates to blocks of one, which is why Demeter pads vocabularies to a
//! multiple of 64.

/// The block side DeMo uses for a dimension of size `dim` and a target chunk of `chunk`.
///
/// # Panics
/// If `dim` or `chunk` is zero; layouts are built from validated model shapes and configs.
pub fn block_side(dim: usize, chunk: usize) -> usize {
    assert!(dim > 0 && chunk > 0, "block_side needs positive sizes");
    if dim <= chunk {
        return dim;
    }
    // Walk the divisor pairs (d, dim/d) up to sqrt(dim); the best is the largest one <= chunk.
    let mut best = 1;
    let mut d = 1;
    while d * d <= dim {
        if dim.is_multiple_of(d) {
            let pair = dim / d;
            if d <= chunk {
                best = best.max(d);
            }
            if pair <= chunk {
                best = best.max(pair);
            }
        }
        d += 1;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::block_side;

    #[test]
    fn matches_the_reference_split_table() {
        for (dim, expected) in [
            (50304, 64),
            (50257, 29),
            (97, 1),
            (64, 64),
            (32, 32),
            (1, 1),
            (768, 64),
            (384, 64),
            (96, 48),
            (2048, 64),
            (5632, 64),
            (100, 50),
            (130, 26),
        ] {
            assert_eq!(block_side(dim, 64), expected, "dim {dim}");
        }
    }

    #[test]
    fn always_divides_and_never_exceeds_the_chunk_unless_smaller() {
        for dim in 1..2000 {
            for chunk in [1, 7, 16, 64] {
                let side = block_side(dim, chunk);
                assert_eq!(dim % side, 0);
                if dim <= chunk {
                    assert_eq!(side, dim);
                } else {
                    assert!(side <= chunk);
                }
            }
        }
    }
}
