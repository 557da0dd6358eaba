//! The blockwise orthonormal DCT-II that moves momentum into the frequency domain.
//!
//! For a block `X` (rows × cols) the coefficients are `C_r · X · C_cᵀ`, where `C_n` is the
//! orthonormal DCT-II matrix of size n; decoding is `C_rᵀ · Y · C_c`. Because the transform is
//! orthonormal, dropping coefficients loses exactly their energy, which is what makes top-k by
//! magnitude the best k-term approximation of each block.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use super::layout::BlockLayout;

/// The orthonormal DCT-II matrix of size `n`: row `k` is the k-th cosine basis vector, so
/// `dct_matrix(n).matmul(x)` is the DCT of the column `x`.
///
/// Built in f64 and rounded once to f32, so it is the same on every machine.
pub fn dct_matrix(n: usize) -> Tensor {
    let size = n as f64;
    let mut data = Vec::with_capacity(n * n);
    for k in 0..n {
        let scale = if k == 0 {
            (1.0 / size).sqrt()
        } else {
            (2.0 / size).sqrt()
        };
        for i in 0..n {
            let angle = PI * (2 * i + 1) as f64 * k as f64 / (2.0 * size);
            data.push((scale * angle.cos()) as f32);
        }
    }
    Tensor::from_slice(&data).view([n as i64, n as i64])
}

/// Precomputed DCT matrices for every block side a model uses, on the model's device.
#[derive(Debug)]
pub struct DctTransform {
    bases: BTreeMap<usize, Tensor>,
}

impl DctTransform {
    /// Precomputes the bases for the given layouts.
    pub fn new<'a>(layouts: impl IntoIterator<Item = &'a BlockLayout>, device: Device) -> Self {
        let mut bases = BTreeMap::new();
        for layout in layouts {
            for side in [layout.block_rows, layout.block_cols] {
                bases
                    .entry(side)
                    .or_insert_with(|| dct_matrix(side).to_device(device));
            }
        }
        Self { bases }
    }

    fn basis(&self, side: usize) -> &Tensor {
        self.bases
            .get(&side)
            .unwrap_or_else(|| panic!("no DCT basis of side {side}: layout not registered"))
    }

    /// The coefficients of `x` (shaped like `layout.shape`), as `[block_count, block_len]`.
    pub fn encode(&self, x: &Tensor, layout: &BlockLayout) -> Tensor {
        let blocks = to_blocks(&x.to_kind(Kind::Float), layout);
        let coefficients = self
            .basis(layout.block_rows)
            .matmul(&blocks)
            .matmul(&self.basis(layout.block_cols).tr());
        coefficients.reshape([layout.block_count() as i64, layout.block_len() as i64])
    }

    /// The tensor (shaped like `layout.shape`) whose coefficients are `coefficients`.
    pub fn decode(&self, coefficients: &Tensor, layout: &BlockLayout) -> Tensor {
        let (grid_rows, grid_cols) = layout.grid();
        let blocks = coefficients.reshape([
            layout.lead as i64,
            grid_rows as i64,
            grid_cols as i64,
            layout.block_rows as i64,
            layout.block_cols as i64,
        ]);
        let x = self
            .basis(layout.block_rows)
            .tr()
            .matmul(&blocks)
            .matmul(self.basis(layout.block_cols));
        from_blocks(&x, layout)
    }

    /// The tensor whose coefficients are zero except `values` at `indices` (both
    /// `[block_count, terms]`, a position counted row-major inside its block; a position listed
    /// twice adds up).
    ///
    /// The same tensor as [`Self::decode`] of the dense coefficients, computed as each block's
    /// sum of its `terms` basis images `v · c_rowᵀ ⊗ c_col`: `2·terms` multiply-adds per
    /// element instead of the dense inverse's `2·(block_rows + block_cols)`, which is most of the
    /// work when few coefficients are kept.
    pub fn decode_sparse(&self, indices: &Tensor, values: &Tensor, layout: &BlockLayout) -> Tensor {
        let block_count = layout.block_count() as i64;
        let (rows, cols) = (layout.block_rows as i64, layout.block_cols as i64);
        let terms = indices.size()[1];
        let positions = indices.flatten(0, -1);
        let row_bases = self
            .basis(layout.block_rows)
            .index_select(0, &positions.floor_divide_scalar(cols))
            .view([block_count, terms, rows]);
        let col_bases = self
            .basis(layout.block_cols)
            .index_select(0, &positions.remainder(cols))
            .view([block_count, terms, cols]);
        let weighted_rows = row_bases * values.to_kind(Kind::Float).unsqueeze(-1);
        let (grid_rows, grid_cols) = layout.grid();
        let blocks = weighted_rows.transpose(1, 2).bmm(&col_bases).view([
            layout.lead as i64,
            grid_rows as i64,
            grid_cols as i64,
            rows,
            cols,
        ]);
        from_blocks(&blocks, layout)
    }
}

/// `[lead, rows, cols]` -> `[lead, grid_rows, grid_cols, block_rows, block_cols]`.
fn to_blocks(x: &Tensor, layout: &BlockLayout) -> Tensor {
    let (grid_rows, grid_cols) = layout.grid();
    x.reshape([
        layout.lead as i64,
        grid_rows as i64,
        layout.block_rows as i64,
        grid_cols as i64,
        layout.block_cols as i64,
    ])
    .permute([0, 1, 3, 2, 4])
}

/// The inverse of [`to_blocks`], back to the parameter's own shape.
fn from_blocks(blocks: &Tensor, layout: &BlockLayout) -> Tensor {
    let shape: Vec<i64> = layout.shape.iter().map(|&d| d as i64).collect();
    blocks.permute([0, 1, 3, 2, 4]).reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn matrix_is_orthonormal() {
        for n in [1, 2, 7, 29, 64] {
            let c = dct_matrix(n);
            let identity = Tensor::eye(n as i64, (Kind::Float, Device::Cpu));
            assert!(
                max_abs_diff(&c.matmul(&c.tr()), &identity) < 1e-5,
                "n = {n}"
            );
        }
    }

    #[test]
    fn known_values() {
        // DCT-II (ortho) of [1, 2, 3, 4]: scipy.fft.dct([1, 2, 3, 4], norm="ortho").
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        let y = dct_matrix(4).matmul(&x);
        let expected = Tensor::from_slice(&[5.0f32, -2.230_442_5, 0.0, -0.158_513]);
        assert!(max_abs_diff(&y, &expected) < 1e-6);
        // A constant block has all its energy in the DC coefficient.
        let constant = Tensor::ones([8], (Kind::Float, Device::Cpu));
        let y = dct_matrix(8).matmul(&constant);
        assert!((y.double_value(&[0]) - 8f64.sqrt()).abs() < 1e-6);
        assert!(y.narrow(0, 1, 7).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn blockwise_round_trip_for_every_rank() {
        tch::manual_seed(7);
        for shape in [
            vec![],
            vec![97],
            vec![128],
            vec![384, 128],
            vec![96, 50],
            vec![3, 2, 32, 96],
        ] {
            let layout = BlockLayout::new(&shape, 64);
            let transform = DctTransform::new([&layout], Device::Cpu);
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let x = Tensor::randn(dims, (Kind::Float, Device::Cpu));
            let coefficients = transform.encode(&x, &layout);
            assert_eq!(
                coefficients.size(),
                [layout.block_count() as i64, layout.block_len() as i64]
            );
            let back = transform.decode(&coefficients, &layout);
            assert!(max_abs_diff(&back, &x) < 1e-5, "shape {shape:?}");
            // Orthonormal: energy is preserved.
            let energy = |t: &Tensor| t.square().sum(Kind::Double).double_value(&[]);
            assert!((energy(&coefficients) - energy(&x)).abs() < 1e-3 * energy(&x).max(1.0));
        }
    }

    #[test]
    fn sparse_decode_equals_the_dense_inverse() {
        tch::manual_seed(11);
        for (shape, terms) in [
            (vec![97], 5),
            (vec![128], 64),
            (vec![384, 128], 8),
            (vec![96, 50], 40),
            (vec![3, 2, 32, 96], 3),
        ] {
            let layout = BlockLayout::new(&shape, 64);
            let transform = DctTransform::new([&layout], Device::Cpu);
            let shape = [layout.block_count() as i64, terms];
            // Random positions, repeats included: a repeated position must add up.
            let indices =
                Tensor::randint(layout.block_len() as i64, shape, (Kind::Int64, Device::Cpu));
            let values = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            let dense = Tensor::zeros(
                [layout.block_count() as i64, layout.block_len() as i64],
                (Kind::Float, Device::Cpu),
            )
            .scatter_add(-1, &indices, &values);
            let expected = transform.decode(&dense, &layout);
            let sparse = transform.decode_sparse(&indices, &values, &layout);
            assert_eq!(sparse.size(), expected.size());
            assert!(max_abs_diff(&sparse, &expected) < 1e-5, "{layout:?}");
        }
    }

    #[test]
    fn blocks_are_transformed_independently() {
        // A spike in one 64x64 block only touches that block's coefficients.
        let layout = BlockLayout::new(&[128, 128], 64);
        let transform = DctTransform::new([&layout], Device::Cpu);
        let x = Tensor::zeros([128, 128], (Kind::Float, Device::Cpu));
        let _ = x.get(70).get(5).fill_(1.0);
        let coefficients = transform.encode(&x, &layout);
        let energy_per_block = coefficients.square().sum_dim_intlist(1, false, Kind::Float);
        // Block order is (grid row, grid col): row 70 and col 5 live in block (1, 0) = 2.
        assert!((energy_per_block.double_value(&[2]) - 1.0).abs() < 1e-5);
        assert!(energy_per_block.sum(Kind::Float).double_value(&[]) - 1.0 < 1e-5);
    }
}
