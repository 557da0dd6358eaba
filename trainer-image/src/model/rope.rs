//! Rotary position embeddings in Hugging Face's convention: the two halves of each head are the
//! pair rotated together (`rotate_half`), so HF LLaMA weights need no permutation.

use tch::{Device, Kind, Tensor};

#[derive(Debug)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for positions `0..max_positions` of heads of `head_dim`.
    pub fn new(head_dim: usize, max_positions: usize, theta: f64, device: Device) -> Self {
        let exponents = Tensor::arange_start_step(0, head_dim as i64, 2, (Kind::Float, device))
            / head_dim as f64;
        let inverse_frequencies = Tensor::from(theta)
            .to_device(device)
            .pow(&exponents)
            .reciprocal();
        let positions = Tensor::arange(max_positions as i64, (Kind::Float, device));
        let angles = positions.outer(&inverse_frequencies);
        let angles = Tensor::cat(&[&angles, &angles], -1);
        Self {
            cos: angles.cos(),
            sin: angles.sin(),
        }
    }

    /// Rotates `x` of shape `[batch, heads, time, head_dim]`.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let time = x.size()[2];
        let cos = self.cos.narrow(0, 0, time).to_kind(x.kind());
        let sin = self.sin.narrow(0, 0, time).to_kind(x.kind());
        x * cos + rotate_half(x) * sin
    }
}

/// `[x1, x2] -> [-x2, x1]` over the last dimension.
fn rotate_half(x: &Tensor) -> Tensor {
    let halves = x.chunk(2, -1);
    Tensor::cat(&[&halves[1].neg(), &halves[0]], -1)
}
