//! The model's shape, read and written as a Hugging Face `config.json` (`LlamaForCausalLM`).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// DeMo's DCT blocks need every dimension to split evenly; 64 keeps the vocabulary dimension on
/// full blocks (a prime vocabulary such as 50257 would degenerate to blocks of 29 or of one).
pub const VOCAB_MULTIPLE: usize = 64;

/// Rounds a tokenizer's vocabulary up to the next multiple of [`VOCAB_MULTIPLE`].
pub fn padded_vocab(vocab: usize) -> usize {
    vocab.div_ceil(VOCAB_MULTIPLE) * VOCAB_MULTIPLE
}

/// A LLaMA decoder's hyperparameters, with Hugging Face's field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
}

fn default_initializer_range() -> f64 {
    0.02
}

/// Named model sizes. Parameter counts are for a 32000-token vocabulary; the byte-level default
/// tokenizer (256 tokens) makes the embeddings much smaller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Preset {
    /// ~0.5M parameters with the byte vocabulary: CI and the quality benchmark.
    Tiny,
    /// ~22M parameters (tied embeddings).
    #[value(name = "20m")]
    #[serde(rename = "20m")]
    M20,
    /// ~150M parameters.
    #[value(name = "150m")]
    #[serde(rename = "150m")]
    M150,
    /// ~1.1B parameters (TinyLlama's shape).
    #[value(name = "1b")]
    #[serde(rename = "1b")]
    B1,
}

/// A config that cannot build a model, naming the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} = 0: must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "hidden_size = {hidden} is not divisible by num_attention_heads = {heads}: pick a head count that divides it"
    )]
    Heads { hidden: usize, heads: usize },
    #[error(
        "num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv}: grouped-query attention shares each key/value head among a whole number of query heads"
    )]
    KeyValueHeads { heads: usize, kv: usize },
    #[error("head_dim = {0} is odd: rotary embeddings rotate pairs of dimensions")]
    OddHeadDim(usize),
    #[error(
        "vocab_size = {0} is not a multiple of {VOCAB_MULTIPLE}: pad it (DeMo's DCT blocks need it)"
    )]
    Vocab(usize),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source} (a Hugging Face LlamaForCausalLM config.json is expected)")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

impl LlamaConfig {
    /// The model a run trains: the preset's shape for a dataset whose tokenizer has
    /// `tokenizer_vocab` tokens (padded for the model), with a position table long enough for
    /// sequences of `seq_len`. The networked client and the simulation build theirs with this,
    /// so the same flags give the same model.
    pub fn for_training(preset: Preset, tokenizer_vocab: usize, seq_len: usize) -> Self {
        let mut config = Self::preset(preset, padded_vocab(tokenizer_vocab));
        config.max_position_embeddings = config.max_position_embeddings.max(seq_len);
        config
    }

    /// The preset's shape with the given (already padded) vocabulary.
    pub fn preset(preset: Preset, vocab_size: usize) -> Self {
        let (hidden, layers, heads, kv_heads, intermediate, tied) = match preset {
            Preset::Tiny => (128, 3, 4, 2, 256, true),
            Preset::M20 => (384, 6, 6, 2, 1024, true),
            Preset::M150 => (768, 16, 12, 4, 2048, false),
            Preset::B1 => (2048, 22, 32, 4, 5632, false),
        };
        Self {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            tie_word_embeddings: tied,
            initializer_range: 0.02,
        }
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks that the shape builds a model DeMo can train.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigError::Heads {
                hidden: self.hidden_size,
                heads: self.num_attention_heads,
            });
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(ConfigError::KeyValueHeads {
                heads: self.num_attention_heads,
                kv: self.num_key_value_heads,
            });
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ConfigError::OddHeadDim(self.head_dim()));
        }
        if !self.vocab_size.is_multiple_of(VOCAB_MULTIPLE) {
            return Err(ConfigError::Vocab(self.vocab_size));
        }
        Ok(())
    }

    /// Number of parameters of the model this config builds.
    pub fn parameter_count(&self) -> usize {
        let (h, kv) = (self.hidden_size, self.num_key_value_heads * self.head_dim());
        let attention = 2 * h * h + 2 * h * kv;
        let mlp = 3 * h * self.intermediate_size;
        let per_layer = attention + mlp + 2 * h;
        let embeddings = self.vocab_size * h * if self.tie_word_embeddings { 1 } else { 2 };
        embeddings + self.num_hidden_layers * per_layer + h
    }

    /// The Hugging Face `config.json` text for this model.
    pub fn to_hf_json(&self) -> String {
        let mut json = serde_json::to_value(self).expect("config serializes");
        let object = json.as_object_mut().expect("config is an object");
        for (key, value) in [
            ("architectures", serde_json::json!(["LlamaForCausalLM"])),
            ("model_type", serde_json::json!("llama")),
            ("hidden_act", serde_json::json!("silu")),
            ("head_dim", serde_json::json!(self.head_dim())),
            ("attention_bias", serde_json::json!(false)),
            ("mlp_bias", serde_json::json!(false)),
            ("torch_dtype", serde_json::json!("float32")),
            (
                "rope_parameters",
                serde_json::json!({ "rope_type": "default", "rope_theta": self.rope_theta }),
            ),
        ] {
            object.insert(key.to_owned(), value);
        }
        serde_json::to_string_pretty(&json).expect("json serializes")
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: display.clone(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: display,
            source,
        })?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_sized_as_named() {
        let count = |preset, vocab| LlamaConfig::preset(preset, vocab).parameter_count();
        for preset in [Preset::Tiny, Preset::M20, Preset::M150, Preset::B1] {
            LlamaConfig::preset(preset, 256).validate().unwrap();
        }
        assert!((400_000..600_000).contains(&count(Preset::Tiny, 256)));
        assert!((18_000_000..26_000_000).contains(&count(Preset::M20, 32000)));
        assert!((130_000_000..170_000_000).contains(&count(Preset::M150, 32000)));
        assert!((1_000_000_000..1_200_000_000).contains(&count(Preset::B1, 32000)));
    }

    #[test]
    fn vocab_padding() {
        assert_eq!(padded_vocab(256), 256);
        assert_eq!(padded_vocab(50257), 50304);
        assert_eq!(padded_vocab(1), 64);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut config = LlamaConfig::preset(Preset::Tiny, 256);
        config.num_key_value_heads = 3;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("num_key_value_heads = 3")
        );
        config = LlamaConfig::preset(Preset::Tiny, 250);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("vocab_size = 250")
        );
    }

    #[test]
    fn hf_json_round_trip() {
        let config = LlamaConfig::preset(Preset::M20, 32000);
        let json = config.to_hf_json();
        assert!(json.contains("\"LlamaForCausalLM\""));
        let back: LlamaConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}
