//! A bias-free linear layer whose weight stays f32 while it computes in the input's precision.

use tch::{Tensor, nn};

/// `y = x · Wᵀ`, W of shape `[out, in]` (PyTorch's and Hugging Face's layout).
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
}

impl Linear {
    /// A `[out, in]` weight under `path/weight` (zeros until [`super::initialize`] fills it).
    pub fn new(path: nn::Path, inputs: usize, outputs: usize) -> Self {
        Self {
            weight: path.var(
                "weight",
                &[outputs as i64, inputs as i64],
                nn::Init::Const(0.0),
            ),
        }
    }

    /// Wraps an existing weight (tied embeddings).
    pub fn from_weight(weight: Tensor) -> Self {
        Self { weight }
    }

    /// Applies the layer in `x`'s precision (bf16 on CUDA, f32 on CPU).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight.to_kind(x.kind()).tr())
    }
}
