//! Top-k selection inside each DCT block, the value encodings on the wire, and the aggregation of
//! many clients' selections.

use tch::{Kind, Tensor};

use super::layout::BlockLayout;

/// How the selected coefficients' values travel.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ValueEncoding {
    /// Full f32 values.
    #[default]
    F32,
    /// Values rounded to bfloat16.
    Bf16,
    /// One bit per value: its sign (+1 or -1; a zero travels as +1).
    Sign,
}

impl ValueEncoding {
    /// The values exactly as a receiver will see them after the wire.
    pub fn quantize(self, values: &Tensor) -> Tensor {
        match self {
            Self::F32 => values.shallow_clone(),
            Self::Bf16 => values.to_kind(Kind::BFloat16).to_kind(Kind::Float),
            Self::Sign => values.ge(0.0).to_kind(Kind::Float) * 2.0 - 1.0,
        }
    }
}

/// One tensor's share of a client's result: `k` coefficients of every block.
#[derive(Debug)]
pub struct SparseBlocks {
    /// Coefficient positions inside their block, `[block_count, k]`, i64, ascending in each row.
    pub indices: Tensor,
    /// The coefficients' values, `[block_count, k]`, f32, already quantized for the wire.
    pub values: Tensor,
}

impl SparseBlocks {
    /// Keeps the `k` largest-magnitude coefficients of each block of `coefficients`
    /// (`[block_count, block_len]`), with indices sorted so the encoding is canonical.
    pub fn top_k(coefficients: &Tensor, k: usize) -> Self {
        let (_, picked) = coefficients.abs().topk(
            k as i64, -1, /* largest */ true, /* sorted */ false,
        );
        let (indices, _) = picked.sort(-1, false);
        let values = coefficients.gather(-1, &indices, false);
        Self { indices, values }
    }

    /// The same picks and values, sharing their storage.
    pub fn shallow_clone(&self) -> Self {
        Self {
            indices: self.indices.shallow_clone(),
            values: self.values.shallow_clone(),
        }
    }

    /// Selected coefficients per block.
    pub fn k(&self) -> usize {
        self.indices.size().last().copied().unwrap_or(0) as usize
    }
}

/// The dense `[block_count, block_len]` coefficients of picks (`[block_count, terms]` positions
/// and values): zeros elsewhere, and a position listed more than once holds the sum.
pub fn dense_from_picks(indices: &Tensor, values: &Tensor, layout: &BlockLayout) -> Tensor {
    Tensor::zeros(
        [layout.block_count() as i64, layout.block_len() as i64],
        (Kind::Float, values.device()),
    )
    .scatter_add(-1, indices, &values.to_kind(Kind::Float))
}

/// Every client's picks, in client order, each value divided by the number of clients that
/// picked the same coefficient: summed per coefficient, they are the mean over the clients that
/// selected it. Returns `[block_count, Σk]` indices and values.
///
/// Counts are accumulated client by client in the order given, and each client selects a
/// coefficient at most once per block, so no two additions race: every replica that passes the
/// same results in the same order computes the same bits, on CPU and on CUDA.
pub fn weighted_picks(selections: &[&SparseBlocks], layout: &BlockLayout) -> (Tensor, Tensor) {
    let device = selections
        .first()
        .map_or(tch::Device::Cpu, |selection| selection.values.device());
    let blocks = layout.block_count() as i64;
    let mut count = Tensor::zeros([blocks, layout.block_len() as i64], (Kind::Float, device));
    for selection in selections {
        let _ = count.scatter_add_(-1, &selection.indices, &selection.values.ones_like());
    }
    let picked = |part: fn(&SparseBlocks) -> &Tensor| {
        let parts: Vec<&Tensor> = selections
            .iter()
            .map(|&selection| part(selection))
            .collect();
        if parts.is_empty() {
            Tensor::zeros([blocks, 0], (Kind::Int64, device))
        } else {
            Tensor::cat(&parts, -1)
        }
    };
    let indices = picked(|selection| &selection.indices);
    let values = picked(|selection| &selection.values).to_kind(Kind::Float)
        / count.gather(-1, &indices, false);
    (indices, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn sparse(indices: &[i64], values: &[f32]) -> SparseBlocks {
        SparseBlocks {
            indices: Tensor::from_slice(indices).view([1, -1]),
            values: Tensor::from_slice(values).view([1, -1]),
        }
    }

    /// The weighted picks summed into dense coefficients: the mean per coefficient.
    fn mean_of_selections(selections: &[&SparseBlocks], layout: &BlockLayout) -> Tensor {
        let (indices, values) = weighted_picks(selections, layout);
        dense_from_picks(&indices, &values, layout)
    }

    fn to_vec(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn top_k_keeps_the_largest_magnitudes_in_index_order() {
        let coefficients = Tensor::from_slice(&[0.1f32, -5.0, 0.3, 4.0, -0.2, 2.0]).view([1, 6]);
        let picked = SparseBlocks::top_k(&coefficients, 3);
        assert_eq!(
            Vec::<i64>::try_from(picked.indices.flatten(0, -1)).unwrap(),
            [1, 3, 5]
        );
        assert_eq!(to_vec(&picked.values), [-5.0, 4.0, 2.0]);
    }

    #[test]
    fn mean_over_the_clients_that_picked_each_coefficient() {
        let layout = BlockLayout::new(&[4], 64);
        let a = sparse(&[0, 1], &[2.0, 10.0]);
        let b = sparse(&[1, 3], &[4.0, -6.0]);
        let mean = mean_of_selections(&[&a, &b], &layout);
        // Index 1 picked twice averages; 0 and 3 picked once stay; 2 never picked is zero.
        assert_eq!(to_vec(&mean), [2.0, 7.0, 0.0, -6.0]);
    }

    #[test]
    fn value_encodings_round_as_the_wire_does() {
        let values = Tensor::from_slice(&[1.0f32 / 3.0, -2.5, 0.0]);
        assert_eq!(
            to_vec(&ValueEncoding::Sign.quantize(&values)),
            [1.0, -1.0, 1.0]
        );
        let bf16 = to_vec(&ValueEncoding::Bf16.quantize(&values));
        assert_eq!(bf16[0], half::bf16::from_f32(1.0 / 3.0).to_f32());
        assert_eq!(ValueEncoding::F32.quantize(&values).device(), Device::Cpu);
    }
}
