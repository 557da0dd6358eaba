//! How a parameter tensor is cut into DCT blocks.
//!
//! Vectors are cut into 1-D blocks; matrices into 2-D blocks; tensors of higher rank into 2-D
//! blocks over their last two dimensions, every leading index being its own stack of blocks.
//! A layout is a pure function of the shape and the chunk, so every client derives the same one.

use super::split::block_side;

/// The largest DCT block side: each side's transform is a `side x side` f32 matrix (4 MiB at
/// 1024), and the paper's runs use 64. A chunk or a payload's block beyond it is refused before
/// anything is allocated.
pub const MAX_BLOCK_SIDE: usize = 1024;

/// The blocking of one parameter tensor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockLayout {
    /// The parameter's shape.
    pub shape: Vec<usize>,
    /// Product of the dimensions before the last two (1 for vectors and matrices).
    pub lead: usize,
    /// Size of the blocked row dimension (1 for vectors).
    pub rows: usize,
    /// Size of the blocked column dimension.
    pub cols: usize,
    /// Block side along rows (1 for vectors).
    pub block_rows: usize,
    /// Block side along columns.
    pub block_cols: usize,
}

impl BlockLayout {
    /// The layout DeMo uses for a parameter of `shape` with target chunk `chunk`.
    ///
    /// A scalar is treated as a vector of one element.
    pub fn new(shape: &[usize], chunk: usize) -> Self {
        let (lead, rows, cols) = match shape {
            [] => (1, 1, 1),
            [n] => (1, 1, *n),
            [leading @ .., m, n] => (leading.iter().product(), *m, *n),
        };
        let block_rows = if shape.len() >= 2 {
            block_side(rows, chunk)
        } else {
            1
        };
        Self {
            shape: shape.to_vec(),
            lead,
            rows,
            cols,
            block_rows,
            block_cols: block_side(cols, chunk),
        }
    }

    /// The layout of `shape` cut into blocks of `block_rows × block_cols`, as a payload states
    /// it; `None` unless the blocks tile the tensor exactly (and vectors use one-row blocks).
    pub fn with_blocks(shape: &[usize], block_rows: usize, block_cols: usize) -> Option<Self> {
        let layout = Self {
            block_rows,
            block_cols,
            ..Self::new(shape, 1)
        };
        let vector = shape.len() < 2;
        let tiles = block_rows > 0
            && block_cols > 0
            && layout.rows.is_multiple_of(block_rows)
            && layout.cols.is_multiple_of(block_cols)
            && (!vector || block_rows == 1);
        tiles.then_some(layout)
    }

    /// Number of elements in one block.
    pub fn block_len(&self) -> usize {
        self.block_rows * self.block_cols
    }

    /// Number of blocks along rows and along columns of one leading slice.
    pub fn grid(&self) -> (usize, usize) {
        (self.rows / self.block_rows, self.cols / self.block_cols)
    }

    /// Number of blocks in the whole tensor.
    pub fn block_count(&self) -> usize {
        let (grid_rows, grid_cols) = self.grid();
        self.lead * grid_rows * grid_cols
    }

    /// Number of elements in the tensor.
    pub fn numel(&self) -> usize {
        self.lead * self.rows * self.cols
    }

    /// The number of coefficients kept per block for a requested top-k.
    pub fn kept_per_block(&self, topk: usize) -> usize {
        topk.clamp(1, self.block_len())
    }
}

#[cfg(test)]
mod tests {
    use super::BlockLayout;

    #[test]
    fn vectors_matrices_and_higher_ranks() {
        let vector = BlockLayout::new(&[128], 64);
        assert_eq!(
            (vector.block_rows, vector.block_cols, vector.block_count()),
            (1, 64, 2)
        );

        let matrix = BlockLayout::new(&[384, 128], 64);
        assert_eq!(
            (matrix.block_rows, matrix.block_cols, matrix.block_count()),
            (64, 64, 12)
        );

        let conv = BlockLayout::new(&[3, 5, 32, 96], 64);
        assert_eq!((conv.lead, conv.block_rows, conv.block_cols), (15, 32, 48));
        assert_eq!(conv.block_count(), 15 * 2);
        assert_eq!(conv.numel(), 3 * 5 * 32 * 96);

        let scalar = BlockLayout::new(&[], 64);
        assert_eq!((scalar.block_len(), scalar.block_count()), (1, 1));
        assert_eq!(scalar.kept_per_block(32), 1);
    }
}
