use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(version, about = "The Demeter operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the TrainingRun CustomResourceDefinition (YAML).
    Crd,
    /// Print the objects the operator would create for a TrainingRun file (YAML).
    Render { file: std::path::PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", demeter_operator::crd_yaml()?),
        Command::Render { file } => {
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let objects = demeter_operator::render(&yaml)
                .with_context(|| format!("{} is not a valid TrainingRun", file.display()))?;
            print!("{objects}");
        }
    }
    Ok(())
}
