//! `demeter data prepare`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::{DEFAULT_SHARD_TOKENS, Tokenizer, moby_dick, prepare};

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// `bytes` (the default byte-level tokenizer) or the path of a Hugging Face tokenizer.json.
    #[arg(long, default_value = "bytes")]
    pub tokenizer: String,
    /// Directory to write the shards and dataset.json into.
    #[arg(long)]
    pub out: PathBuf,
    /// Share of the tokens held out for validation (the tail of the text).
    #[arg(long, default_value_t = 0.01)]
    pub val_fraction: f64,
    /// Most tokens per training shard.
    #[arg(long, default_value_t = DEFAULT_SHARD_TOKENS)]
    pub shard_tokens: usize,
}

pub fn prepare_data(input: Option<&Path>, args: &DataArgs) -> anyhow::Result<()> {
    let text = match input {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("--input {}", path.display()))?
        }
        None => moby_dick(),
    };
    let tokenizer = Tokenizer::from_spec(&args.tokenizer)?;
    let meta = prepare(
        &text,
        &tokenizer,
        &args.out,
        args.val_fraction,
        args.shard_tokens,
    )?;
    println!(
        "wrote {} training shard(s) and {} to {} (tokenizer {}, vocabulary {}, {:?} ids)",
        meta.train_shards.len(),
        meta.val_shard,
        args.out.display(),
        meta.tokenizer,
        meta.vocab_size,
        meta.token_width,
    );
    Ok(())
}
