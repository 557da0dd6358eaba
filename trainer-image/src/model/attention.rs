//! Causal self-attention with grouped-query heads and rotary positions.

use tch::{Tensor, nn};

use super::config::LlamaConfig;
use super::linear::Linear;
use super::rope::Rope;

#[derive(Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    pub fn new(path: nn::Path, config: &LlamaConfig) -> Self {
        let (hidden, head_dim) = (config.hidden_size, config.head_dim());
        let kv = config.num_key_value_heads * head_dim;
        Self {
            q_proj: Linear::new(&path / "q_proj", hidden, hidden),
            k_proj: Linear::new(&path / "k_proj", hidden, kv),
            v_proj: Linear::new(&path / "v_proj", hidden, kv),
            o_proj: Linear::new(&path / "o_proj", hidden, hidden),
            heads: config.num_attention_heads as i64,
            kv_heads: config.num_key_value_heads as i64,
            head_dim: head_dim as i64,
        }
    }

    /// `x`: `[batch, time, hidden]`.
    pub fn forward(&self, x: &Tensor, rope: &Rope) -> Tensor {
        let (batch, time, hidden) = x.size3().expect("attention input is [batch, time, hidden]");
        let split = |y: Tensor, heads| y.view([batch, time, heads, self.head_dim]).transpose(1, 2);
        let q = rope.apply(&split(self.q_proj.forward(x), self.heads));
        let k = rope.apply(&split(self.k_proj.forward(x), self.kv_heads));
        let v = split(self.v_proj.forward(x), self.kv_heads);
        let y = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, /* is_causal */ true, None, /* enable_gqa */ true,
        );
        self.o_proj
            .forward(&y.transpose(1, 2).reshape([batch, time, hidden]))
    }
}
