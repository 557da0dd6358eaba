//! DeMo, Decoupled Momentum optimization: each client keeps its own momentum, shares only its
//! fastest-moving components (top-k of a blockwise DCT), and every replica applies the sign of
//! the mean of what was shared (or of a robust aggregate: [`Aggregation`]).

mod aggregation;
mod compressor;
mod dct;
mod layout;
mod optimizer;
mod sparse;
mod split;

pub use aggregation::Aggregation;
pub use compressor::{Compressor, SparseUpdate, TensorLayout};
pub use dct::{DctTransform, dct_matrix};
pub use layout::{BlockLayout, MAX_BLOCK_SIDE};
pub use optimizer::{Demo, DemoConfig, DemoConfigError, momentum_to_bytes};
pub use sparse::{SparseBlocks, ValueEncoding};
pub use split::block_side;
