//! `demeter model init`: a freshly initialized model as a Hugging Face checkpoint;
//! `demeter model hash`: a checkpoint's weights hash, as a run's witnesses attest it.

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

#[derive(clap::Args, Debug)]
pub struct ModelHashArgs {
    /// A checkpoint directory (`config.json` and `model.safetensors`): one a client wrote at an
    /// epoch's end or the run's (`step-N/`), or `demeter model init`'s.
    pub dir: PathBuf,
    /// The weights hash it must have, in hex: the attested model that `demeter run show` (or
    /// `demeter local`) prints. Another hash is an error.
    #[arg(long)]
    pub expect: Option<String>,
}

/// Prints the weights hash of the checkpoint `args.dir`, and checks it against `--expect`.
pub fn hash_model(args: &ModelHashArgs) -> anyhow::Result<()> {
    let hash = hex::encode(crate::checkpoint::weights_hash(&args.dir)?);
    println!("{}: weights hash {hash}", args.dir.display());
    if let Some(expected) = &args.expect {
        anyhow::ensure!(
            expected.trim().eq_ignore_ascii_case(&hash),
            "{}: weights hash {hash}, not the --expect {expected}: this is not that model",
            args.dir.display()
        );
        println!("the expected model: yes");
    }
    Ok(())
}
