//! What dishonest clients do to a run, by aggregation rule. Eight DeMo workers train the tiny
//! byte-level LLaMA on the shipped corpus; in every run but the honest ones the last two (a
//! quarter, under the third the threat model allows) send one of the named attacks instead of
//! their results. For each aggregation rule the table gives the final validation loss under
//! each attack and its ratio to the honest run of the same rule, and how each robust rule
//! compares with DeMo's mean when nobody cheats. Targets (issue 15): every attack within 3% of
//! the honest run under a robust rule, and a robust rule within 2% of the mean without attackers.
//!
//! A second table gives what the cheap screens (`screening`: zeros, copies, repeats) flag of each
//! attack, and the largest overlaps honest results reach, which the threshold must stay above.
//!
//! `make bench-byzantine` (BYZANTINE_STEPS overrides the default of 300 steps).

use clap::Parser;
use demeter_trainer::attack::Attack;
use demeter_trainer::commands::{SimulateArgs, SimulationSummary, Table, run_simulation};
use demeter_trainer::demo::Aggregation;

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    args: SimulateArgs,
}

const WORKERS: usize = 8;
const BYZANTINE: usize = 2;
const RULES: [Aggregation; 3] = [
    Aggregation::Mean,
    Aggregation::ClippedMean,
    Aggregation::SignVote,
];
const ATTACKS: [Attack; 7] = [
    Attack::Random,
    Attack::Zero,
    Attack::Stale,
    Attack::Copy,
    Attack::Scale,
    Attack::SignFlip,
    Attack::WrongData,
];

fn name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_owned()
}

/// One run of the recipe: 8 workers x 2 sequences of 64 bytes, cosine schedule with 10% warmup
/// to 10% of a 2e-3 peak, gradients clipped to norm 1.
fn simulate(
    rule: Aggregation,
    attack: Option<Attack>,
    steps: u64,
    screen: bool,
) -> anyhow::Result<SimulationSummary> {
    let (steps_text, warmup, workers, rule_name) = (
        steps.to_string(),
        (steps / 10).to_string(),
        WORKERS.to_string(),
        name(&rule),
    );
    let mut argv = vec![
        "bench",
        "--steps",
        &steps_text,
        "--workers",
        &workers,
        "--batch",
        "2",
        "--seq-len",
        "64",
        "--preset",
        "tiny",
        "--lr",
        "2e-3",
        "--warmup",
        &warmup,
        "--grad-clip",
        "1.0",
        "--seed",
        "7",
        "--quiet",
        "--eval-samples",
        "256",
        "--aggregation",
        &rule_name,
    ];
    let (byzantine, attack_name) = (BYZANTINE.to_string(), attack.map(|a| name(&a)));
    if let Some(attack_name) = &attack_name {
        argv.extend(["--byzantine", &byzantine, "--attack", attack_name]);
    }
    if screen {
        argv.push("--screen");
    }
    let summary = run_simulation(&Wrapper::parse_from(argv).args)?;
    anyhow::ensure!(
        summary.replicas_identical,
        "{rule_name} {attack_name:?}: replicas diverged"
    );
    eprintln!(
        "{rule_name} {}: val {:.4} in {:.0} s",
        attack_name.as_deref().unwrap_or("honest"),
        summary.val_loss,
        summary.seconds
    );
    Ok(summary)
}

fn main() -> anyhow::Result<()> {
    let steps: u64 = std::env::var("BYZANTINE_STEPS").map_or(Ok(300), |steps| steps.parse())?;
    let started = std::time::Instant::now();
    let mut honest = Vec::new();
    let mut table_header = vec!["attack".to_owned()];
    for rule in RULES {
        honest.push(simulate(rule, None, steps, false)?.val_loss);
        table_header.push(format!("{} val loss (ratio)", name(&rule)));
    }
    let header: Vec<&str> = table_header.iter().map(String::as_str).collect();
    let mut table = Table::new(&header);
    let mut row = vec!["none (honest)".to_owned()];
    row.extend(honest.iter().map(|loss| format!("{loss:.4} (1.000)")));
    table.row(row);
    for attack in ATTACKS {
        let mut row = vec![name(&attack)];
        for (rule, honest) in RULES.iter().zip(&honest) {
            let loss = simulate(*rule, Some(attack), steps, false)?.val_loss;
            row.push(format!("{loss:.4} ({:.3})", loss / honest));
        }
        table.row(row);
    }
    println!("{table}");
    for (rule, loss) in RULES.iter().zip(&honest).skip(1) {
        println!(
            "{} without attackers: {:.3} x the mean's validation loss",
            name(rule),
            loss / honest[0]
        );
    }
    println!(
        "{WORKERS} workers ({BYZANTINE} dishonest) x 2 sequences x 64 tokens per step, {steps} steps, tiny preset, seed 7; {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    detection(steps.min(100))
}

/// What the cheap screens (zeros, copies, repeats) flag of each attack, under the mean.
fn detection(steps: u64) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        "attack",
        "dishonest results flagged",
        "honest results flagged",
        "largest honest overlap (same round, same client)",
    ]);
    let mut attacks: Vec<Option<Attack>> = vec![None];
    attacks.extend(ATTACKS.map(Some));
    for attack in attacks {
        let summary = simulate(Aggregation::Mean, attack, steps, true)?;
        let screens = &summary.screens;
        let honest = WORKERS - attack.map_or(0, |_| BYZANTINE);
        let share = |workers: &[u64]| {
            let flagged: u64 = workers.iter().sum();
            let results = screens.rounds * workers.len() as u64;
            format!("{flagged} of {results}")
        };
        table.row(vec![
            attack.map_or("none (honest)".to_owned(), |a| name(&a)),
            if attack.is_some() {
                share(&screens.flagged[honest..])
            } else {
                "-".to_owned()
            },
            share(&screens.flagged[..honest]),
            format!(
                "{:.3}, {:.3}",
                screens.honest_overlap_max, screens.honest_repeat_max
            ),
        ]);
    }
    println!("{table}");
    println!(
        "Screens over {steps} steps under the mean (a result is flagged when it is all zeros, or shares at least {} of its picks with an earlier result of the round or with its sender's previous result).",
        demeter_trainer::screening::SAME_SELECTION
    );
    Ok(())
}
