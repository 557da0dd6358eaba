//! The LLaMA decoder: token embeddings, pre-norm blocks of attention and SwiGLU, a final norm and
//! the language-model head. Variable names are Hugging Face's, so the VarStore is the checkpoint.

use tch::{Device, Kind, Tensor, nn};

use super::attention::Attention;
use super::config::{ConfigError, LlamaConfig};
use super::linear::Linear;
use super::mlp::Mlp;
use super::rms_norm::RmsNorm;
use super::rope::Rope;

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(path: nn::Path, config: &LlamaConfig) -> Self {
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        Self {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", hidden, eps),
            self_attn: Attention::new(&path / "self_attn", config),
            post_attention_layernorm: RmsNorm::new(&path / "post_attention_layernorm", hidden, eps),
            mlp: Mlp::new(&path / "mlp", config),
        }
    }

    fn forward(&self, x: &Tensor, rope: &Rope) -> Tensor {
        let x = x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), rope);
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x))
    }
}

/// A LLaMA-style causal language model.
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    compute: Kind,
}

impl Llama {
    /// Builds the model's variables under `root` (a VarStore's root). Their values are
    /// placeholders until [`super::initialize`] or a checkpoint fills them. Computes in bf16 on
    /// CUDA and in f32 on CPU; weights stay f32.
    pub fn new(root: &nn::Path, config: &LlamaConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let device = root.device();
        let model = root / "model";
        let embed_tokens = (&model / "embed_tokens").var(
            "weight",
            &[config.vocab_size as i64, config.hidden_size as i64],
            nn::Init::Const(0.0),
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, config))
            .collect();
        let lm_head = if config.tie_word_embeddings {
            Linear::from_weight(embed_tokens.shallow_clone())
        } else {
            Linear::new(root / "lm_head", config.hidden_size, config.vocab_size)
        };
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm: RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps),
            lm_head,
            rope: Rope::new(
                config.head_dim(),
                config.max_position_embeddings,
                config.rope_theta,
                device,
            ),
            compute: if device.is_cuda() {
                Kind::BFloat16
            } else {
                Kind::Float
            },
        })
    }

    /// Next-token logits `[batch, time, vocab]` in f32 for `tokens` `[batch, time]` (i64).
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let mut x =
            Tensor::embedding(&self.embed_tokens, tokens, -1, false, false).to_kind(self.compute);
        for layer in &self.layers {
            x = layer.forward(&x, &self.rope);
        }
        self.lm_head
            .forward(&self.norm.forward(&x))
            .to_kind(Kind::Float)
    }

    /// Mean cross-entropy of predicting `targets` from `inputs` (both `[batch, time]`).
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Tensor {
        let logits = self.forward(inputs);
        let vocab = self.config.vocab_size as i64;
        logits
            .reshape([-1, vocab])
            .cross_entropy_for_logits(&targets.reshape([-1]))
    }
}

/// The trainable variables of `vs` in a stable order (names compared with numbers as numbers,
/// so `layers.2` precedes `layers.10`): the order of DeMo's payloads and of checkpoints.
pub fn named_parameters(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by_key(|(a, _)| natural_key(a));
    named
}

fn natural_key(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|part| (part.parse().unwrap_or(u64::MAX), part.to_owned()))
        .collect()
}

/// The compute device to use: the first CUDA device when one is visible, else the CPU.
pub fn default_device() -> Device {
    Device::cuda_if_available()
}
