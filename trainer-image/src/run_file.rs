//! The run file (`run.toml`) of a run without a chain: its name, its coordinator config, and
//! who steers it.

use std::path::Path;

use anyhow::Context;
use demeter_coordinator_core::Config;
use serde::{Deserialize, Serialize};

use crate::identity::from_base58;

/// A run file, as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// At most 32 bytes; it names the run on-chain and off.
    pub run_id: String,
    /// The run authority's public key (base58): the only client that may pause and resume.
    /// Without it nobody can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Public keys (base58) allowed to connect, the off-chain counterpart of the program's join
    /// grants. Without it any client with a key may join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<String>>,
    pub config: Config,
}

impl RunFile {
    /// The file's text, under a comment saying who wrote it.
    pub fn to_toml(&self, written_by: &str) -> String {
        let body = toml::to_string(self).expect("a run file serializes: strings, lists, numbers");
        format!("# Written by {written_by}.\n{body}")
    }

    /// Reads and validates a run file; errors name the file and the field.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let run: Self = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        run.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(run)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.run_id_bytes()?;
        self.authority_key()?;
        self.client_keys()?;
        self.config.validate().context("config")?;
        Ok(())
    }

    /// The run id, zero-padded to 32 bytes as the program stores it.
    pub fn run_id_bytes(&self) -> anyhow::Result<[u8; 32]> {
        run_id_bytes(&self.run_id).context("run_id")
    }

    pub fn authority_key(&self) -> anyhow::Result<Option<[u8; 32]>> {
        self.authority
            .as_deref()
            .map(|key| from_base58(key).context("authority"))
            .transpose()
    }

    pub fn client_keys(&self) -> anyhow::Result<Option<Vec<[u8; 32]>>> {
        self.clients
            .as_ref()
            .map(|keys| {
                keys.iter()
                    .enumerate()
                    .map(|(i, key)| from_base58(key).with_context(|| format!("clients[{i}]")))
                    .collect()
            })
            .transpose()
    }
}

/// A run's name zero-padded to 32 bytes, as the program stores it.
pub fn run_id_bytes(name: &str) -> anyhow::Result<[u8; 32]> {
    demeter_coordinator_core::accounts::run_id_from_name(name)
        .with_context(|| format!("{name:?} must be 1 to 32 bytes"))
}
