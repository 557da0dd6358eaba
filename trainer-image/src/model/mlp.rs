//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use tch::{Tensor, nn};

use super::config::LlamaConfig;
use super::linear::Linear;

#[derive(Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn new(path: nn::Path, config: &LlamaConfig) -> Self {
        let (hidden, inner) = (config.hidden_size, config.intermediate_size);
        Self {
            gate_proj: Linear::new(&path / "gate_proj", hidden, inner),
            up_proj: Linear::new(&path / "up_proj", hidden, inner),
            down_proj: Linear::new(&path / "down_proj", inner, hidden),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}
