//! What the benches that train a preset share: the model and the batch they measure it at.

use demeter_trainer::data::Dataset;
use demeter_trainer::model::{LlamaConfig, Preset};

/// A preset and the batch a bench trains it on.
pub struct Shape {
    /// As it was named (`20m`, `20m:32x512`).
    pub name: String,
    pub config: LlamaConfig,
    /// Samples a batch.
    pub batch: u64,
    /// Tokens a sample.
    pub seq_len: usize,
}

impl Shape {
    /// `PRESET` at the preset's small batch (seconds a round on 2 CPU cores), or `PRESET:BxS`,
    /// `B` samples of `S` tokens (the example runs give a client 32 x 512).
    fn parse(text: &str, dataset: &Dataset, variable: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let fix = "expected PRESET or PRESET:BxS (a preset of tiny, 20m, 150m, 1b; B samples of \
                   S tokens), e.g. 20m:32x512";
        let (preset_name, batch) = match text.split_once(':') {
            Some((preset, batch)) => (preset, Some(batch)),
            None => (text, None),
        };
        let preset: Preset = clap::ValueEnum::from_str(preset_name, true)
            .map_err(|_| anyhow::anyhow!("{variable}: `{text}`: {fix}"))?;
        let (batch, seq_len) = match batch {
            None => match preset {
                Preset::Tiny => (8, 128),
                Preset::M20 => (4, 128),
                Preset::M150 | Preset::B1 => (4, 512),
            },
            Some(batch) => batch
                .split_once('x')
                .and_then(|(b, s)| Some((b.parse().ok()?, s.parse().ok()?)))
                .filter(|&(b, s): &(u64, usize)| b > 0 && s > 0)
                .ok_or_else(|| anyhow::anyhow!("{variable}: `{text}`: {fix}"))?,
        };
        Ok(Self {
            name: text.to_owned(),
            config: LlamaConfig::for_training(preset, dataset.meta.vocab_size, seq_len),
            batch,
            seq_len,
        })
    }
}

/// The shapes environment variable `variable` names (comma-separated), else `default`.
pub fn shapes(variable: &str, default: &str, dataset: &Dataset) -> anyhow::Result<Vec<Shape>> {
    let list = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    list.split(',')
        .map(|text| Shape::parse(text, dataset, variable))
        .collect()
}

/// The count environment variable `variable` names, else `default`.
pub fn count(variable: &str, default: u32) -> anyhow::Result<u32> {
    match std::env::var(variable) {
        Err(_) => Ok(default),
        Ok(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("{variable}: `{text}`: expected a whole number")),
    }
}
