//! What every command that talks to a Solana cluster shares, with the Solana CLI's conventions:
//! `--url`/`-u` with its monikers, `--keypair`/`-k`, `--config`/`-C` (the Solana CLI's config
//! file, whose `json_rpc_url`, `keypair_path` and `commitment` are the defaults),
//! `--commitment`, and `--output json|json-compact`; and the run a command is about.

use std::path::{Path, PathBuf};

use anyhow::Context;
use demeter_coordinator::client::RunClient;
use serde::Serialize;
use solana_commitment_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;

use crate::identity::Identity;
use crate::run_file::run_id_bytes;

#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// URL for Solana's JSON RPC or moniker (or their first letter): mainnet-beta, testnet,
    /// devnet, localhost. Default: the Solana CLI config's json_rpc_url.
    #[arg(short = 'u', long = "url", global = true)]
    pub url: Option<String>,
    /// The keypair that signs and pays. Default: the Solana CLI config's keypair_path
    /// (~/.config/solana/id.json).
    #[arg(short = 'k', long, global = true)]
    pub keypair: Option<PathBuf>,
    /// The Solana CLI config file. Default: ~/.config/solana/cli/config.yml, if it exists.
    #[arg(short = 'C', long = "config", global = true)]
    pub solana_config: Option<PathBuf>,
    /// processed, confirmed or finalized. Default: the Solana CLI config's, else confirmed.
    #[arg(long, global = true)]
    pub commitment: Option<String>,
    /// Print as a table (default) or as JSON.
    #[arg(long, value_enum, default_value_t = Output::Display, global = true)]
    pub output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Display,
    Json,
    JsonCompact,
}

/// The run a command is about: its authority and name.
#[derive(clap::Args, Debug, Clone)]
pub struct RunName {
    /// The run's name.
    #[arg(long)]
    pub run_id: String,
    /// The run authority's public key, which scopes the name. Default: the --keypair's key.
    #[arg(long)]
    pub run_authority: Option<String>,
}

/// The Solana CLI config file's fields that matter here.
#[derive(serde::Deserialize, Default)]
struct SolanaConfig {
    json_rpc_url: Option<String>,
    keypair_path: Option<String>,
    commitment: Option<String>,
}

/// `ClusterArgs` with every default filled in.
pub struct Cluster {
    pub url: String,
    pub keypair_path: PathBuf,
    pub commitment: CommitmentConfig,
    pub output: Output,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// The Solana CLI's monikers, as `solana --url` takes them.
pub fn normalize_url(url: &str) -> String {
    match url {
        "m" | "mainnet-beta" => "https://api.mainnet-beta.solana.com",
        "t" | "testnet" => "https://api.testnet.solana.com",
        "d" | "devnet" => "https://api.devnet.solana.com",
        "l" | "localhost" => "http://localhost:8899",
        other => other,
    }
    .to_owned()
}

fn parse_commitment(text: &str, source: &str) -> anyhow::Result<CommitmentConfig> {
    match text {
        "processed" => Ok(CommitmentConfig::processed()),
        "confirmed" => Ok(CommitmentConfig::confirmed()),
        "finalized" => Ok(CommitmentConfig::finalized()),
        other => anyhow::bail!("{source} {other:?}: expected processed, confirmed or finalized"),
    }
}

impl ClusterArgs {
    /// Resolves the flags, runs `command` against the cluster on an async runtime of its own,
    /// and prints what it reports as `--output` asks.
    pub fn run<C, F>(&self, command: C) -> anyhow::Result<Report>
    where
        C: FnOnce(Cluster) -> F,
        F: std::future::Future<Output = anyhow::Result<(Cluster, Report)>>,
    {
        let cluster = self.resolve()?;
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let (cluster, report) = runtime.block_on(command(cluster))?;
        cluster.print(&report)?;
        Ok(report)
    }

    /// Fills in the defaults from the Solana CLI config file (given, or the usual one if it
    /// exists), then the Solana CLI's own defaults.
    pub fn resolve(&self) -> anyhow::Result<Cluster> {
        let usual = home().join(".config/solana/cli/config.yml");
        let config = match &self.solana_config {
            Some(path) => read_solana_config(path)?,
            None if usual.exists() => read_solana_config(&usual)?,
            None => SolanaConfig::default(),
        };
        let url = self
            .url
            .clone()
            .or(config.json_rpc_url)
            .unwrap_or_else(|| "mainnet-beta".to_owned());
        let keypair_path = self
            .keypair
            .clone()
            .or(config.keypair_path.map(PathBuf::from))
            .unwrap_or_else(|| home().join(".config/solana/id.json"));
        let commitment = match (&self.commitment, &config.commitment) {
            (Some(text), _) => parse_commitment(text, "--commitment")?,
            (None, Some(text)) => parse_commitment(text, "the Solana CLI config's commitment")?,
            (None, None) => CommitmentConfig::confirmed(),
        };
        Ok(Cluster {
            url: normalize_url(&url),
            keypair_path,
            commitment,
            output: self.output,
        })
    }
}

fn read_solana_config(path: &Path) -> anyhow::Result<SolanaConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the Solana CLI config {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| {
        format!(
            "{}: not a Solana CLI config (YAML with json_rpc_url, keypair_path, commitment)",
            path.display()
        )
    })
}

/// A base58 public key from a flag's value.
pub fn parse_key(flag: &str, text: &str) -> anyhow::Result<Pubkey> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{flag} {text:?} is not a base58 public key"))
}

impl Cluster {
    /// The signing keypair.
    pub fn signer(&self) -> anyhow::Result<Identity> {
        Identity::read(&self.keypair_path).with_context(|| {
            format!(
                "--keypair {} (create one with `solana-keygen new`, or pass --keypair)",
                self.keypair_path.display()
            )
        })
    }

    /// The run `name` names, found on the cluster; its authority defaults to `signer`'s key.
    pub async fn find_run(
        &self,
        name: &RunName,
        signer: Option<&Identity>,
    ) -> anyhow::Result<RunClient> {
        use solana_sdk::signer::Signer;
        let authority = match (&name.run_authority, signer) {
            (Some(text), _) => parse_key("--run-authority", text)?,
            (None, Some(signer)) => signer.pubkey(),
            (None, None) => anyhow::bail!("pass --run-authority KEY (the run authority's key)"),
        };
        let run_id = run_id_bytes(&name.run_id).context("--run-id")?;
        let client = RunClient::find(&self.url, &authority, &run_id).await?;
        Ok(client.with_commitment(self.commitment))
    }

    /// Prints `report` as `--output` asks.
    pub fn print(&self, report: &Report) -> anyhow::Result<()> {
        match self.output {
            Output::Display => print!("{}", report.display()),
            Output::Json => println!("{}", serde_json::to_string_pretty(report)?),
            Output::JsonCompact => println!("{}", serde_json::to_string(report)?),
        }
        Ok(())
    }
}

/// What a cluster command did or read, printed as a table or as JSON.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Report {
    /// A transaction that landed.
    Sent {
        action: String,
        signature: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A run and its rewards as read.
    Run(Box<super::run_view::RunView>),
}

impl Report {
    pub fn sent(action: &str, signature: impl ToString, detail: Option<String>) -> Self {
        Self::Sent {
            action: action.to_owned(),
            signature: signature.to_string(),
            detail,
        }
    }

    fn display(&self) -> String {
        match self {
            Self::Sent {
                action,
                signature,
                detail,
            } => {
                let detail = detail
                    .as_deref()
                    .map_or(String::new(), |d| format!("\n{d}"));
                format!("{action}\nsignature: {signature}{detail}\n")
            }
            Self::Run(view) => view.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monikers_config_file_and_flags_resolve_in_the_solana_clis_order() {
        assert_eq!(normalize_url("d"), "https://api.devnet.solana.com");
        assert_eq!(normalize_url("localhost"), "http://localhost:8899");
        assert_eq!(
            normalize_url("http://10.0.0.1:8899"),
            "http://10.0.0.1:8899"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            "---\njson_rpc_url: http://127.0.0.1:9\nwebsocket_url: ''\nkeypair_path: /k.json\naddress_labels: {}\ncommitment: finalized\n",
        )
        .unwrap();
        let args = |url: Option<&str>, commitment: Option<&str>| ClusterArgs {
            url: url.map(str::to_owned),
            keypair: None,
            solana_config: Some(config.clone()),
            commitment: commitment.map(str::to_owned),
            output: Output::Display,
        };
        let from_file = args(None, None).resolve().unwrap();
        assert_eq!(from_file.url, "http://127.0.0.1:9");
        assert_eq!(from_file.keypair_path, PathBuf::from("/k.json"));
        assert_eq!(from_file.commitment, CommitmentConfig::finalized());
        let flags = args(Some("t"), Some("processed")).resolve().unwrap();
        assert_eq!(flags.url, "https://api.testnet.solana.com");
        assert_eq!(flags.commitment, CommitmentConfig::processed());
        let wrong = args(None, Some("final"))
            .resolve()
            .err()
            .unwrap()
            .to_string();
        assert!(wrong.contains("--commitment \"final\""), "{wrong}");
        std::fs::write(&config, "- not a mapping").unwrap();
        let broken = args(None, None).resolve().err().unwrap();
        assert!(format!("{broken:#}").contains("not a Solana CLI config"));
    }
}
