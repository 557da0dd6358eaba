//! Root-mean-square layer normalization, computed in f32 as Hugging Face's LlamaRMSNorm does.

use tch::{Kind, Tensor, nn};

#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// A norm over `size` features with its gain under `path/weight`, initialized to ones.
    pub fn new(path: nn::Path, size: usize, eps: f64) -> Self {
        Self {
            weight: path.var("weight", &[size as i64], nn::Init::Const(1.0)),
            eps,
        }
    }

    /// `x / rms(x) * weight`, returned in `x`'s precision.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x32 = x.to_kind(Kind::Float);
        let mean_square = x32.square().mean_dim(-1, true, Kind::Float);
        let normalized = x32 * (mean_square + self.eps).rsqrt();
        &self.weight * normalized.to_kind(x.kind())
    }
}
