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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", demeter_operator::crd_yaml()?),
    }
    Ok(())
}
