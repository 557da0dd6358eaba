//! `demeter model init`: a freshly initialized model as a Hugging Face checkpoint.

use std::path::PathBuf;

use tch::{Device, nn};

use crate::model::{
    Llama, LlamaConfig, Preset, initialize, named_parameters, padded_vocab, save_safetensors,
};

#[derive(clap::Args, Debug)]
pub struct ModelInitArgs {
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    /// Tokenizer vocabulary (padded to a multiple of 64).
    #[arg(long, default_value_t = 256)]
    pub vocab: usize,
    /// Run seed the weights derive from (the same seed gives the same weights on every device).
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Directory for model.safetensors and config.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn init_model(args: &ModelInitArgs) -> anyhow::Result<()> {
    let config = LlamaConfig::preset(args.preset, padded_vocab(args.vocab));
    let vs = nn::VarStore::new(Device::Cpu);
    Llama::new(&vs.root(), &config)?;
    let parameters = named_parameters(&vs);
    initialize(&parameters, args.seed, config.initializer_range);
    std::fs::create_dir_all(&args.out)?;
    save_safetensors(&args.out.join("model.safetensors"), &parameters)?;
    std::fs::write(args.out.join("config.json"), config.to_hf_json())?;
    println!(
        "{}: {:?} with {} parameters (seed {})",
        args.out.display(),
        args.preset,
        config.parameter_count(),
        args.seed
    );
    Ok(())
}
