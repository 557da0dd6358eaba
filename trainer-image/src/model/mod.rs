//! The LLaMA-style decoder Demeter trains, and its Hugging Face compatible checkpoints.

mod attention;
mod checkpoint;
mod config;
mod init;
mod linear;
mod llama;
mod mlp;
mod rms_norm;
mod rope;

pub use checkpoint::{CheckpointError, load_safetensors, save_safetensors};
pub use config::{ConfigError, LlamaConfig, Preset, VOCAB_MULTIPLE, padded_vocab};
pub use init::initialize;
pub use llama::{Llama, default_device, named_parameters};
