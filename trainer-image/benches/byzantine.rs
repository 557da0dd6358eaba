//! What dishonest clients do to a run, by aggregation rule. Eight DeMo workers train the tiny
//! byte-level LLaMA on the shipped corpus; in every run but the honest ones the last two (a
//! quarter, under the third the threat model allows) send one of the named attacks instead of
//! their results. For each aggregation rule the table gives the final validation loss under
//! each attack and its ratio to the honest run of the same rule, and how each robust rule
//! compares with DeMo's mean when nobody cheats. Targets (issue 15): every attack within 3% of
//! the honest run under a robust rule, and a robust rule within 2% of the mean without attackers.
//!
//! A second table gives what the screens (`screening`: zeros, copies, repeats, outsized norms,
//! contrary signs) flag of each attack, from which round, what honest results measure against
//! each threshold, and what screening costs a replica. A third gives what scoring against data
//! (`scoring`) flags of the attacks the screens cannot see (`random`, `wrong-data`), the scores
//! honest and dishonest results earn, and what scoring every result costs.
//!
//! A fourth gives what exact spot checks (recomputing a seeded share of the results from
//! their senders' committed momenta) flag of every attack, `forged-momentum` included, how
//! many honest recomputes match bit for bit, and what one verifier's recomputes cost.
//!
//! A fifth gives the first table's losses when the run defends itself as a permissionless run
//! does: the screens and spot checks on, and whoever they flag ejected (its results no longer
//! applied), with the round each dishonest worker was ejected from.
//!
//! `make bench-byzantine`. BYZANTINE_STEPS overrides the default of 300 steps (the detection,
//! scoring and spot-check tables run at most 100 unless one runs alone); BYZANTINE_TABLE=losses,
//! =detection, =scoring, =spot-checks or =defended runs one table; BYZANTINE_ATTACKS=NAME,NAME
//! measures those attacks only (and the honest runs); BYZANTINE_SCORE_ONE_IN=N scores one in N
//! results (default 1); BYZANTINE_SPOT_CHECK_ONE_IN=N recomputes one in N (default 4 in the
//! spot-check table, and the example permissionless run's 32 in the defended one), and
//! BYZANTINE_SPOT_CHECK_TOLERANCE=N judges the spot-check table's recomputes within N per mille
//! (default 0: bit for bit).

use clap::Parser;
use demeter_coordinator_core::verdict::LOW_SCORE_PER_MILLE;
use demeter_trainer::attack::Attack;
use demeter_trainer::commands::{
    SimulateArgs, SimulationSummary, Table, run_simulation, scoring_cost, screening_cost,
    spot_check_cost,
};
use demeter_trainer::demo::Aggregation;
use demeter_trainer::scoring::{MIN_SCORES, WINDOW};
use demeter_trainer::screening::{
    CONTRARY_AGREEMENT, CONTRARY_ROUNDS, OUTSIZED_RATIO, SAME_SELECTION,
};
use demeter_trainer::simulate::Flagged;

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
const ATTACKS: [Attack; 8] = [
    Attack::Random,
    Attack::Zero,
    Attack::Stale,
    Attack::Copy,
    Attack::NoisyCopy,
    Attack::Scale,
    Attack::SignFlip,
    Attack::WrongData,
];

/// What scoring is for: the attacks no screen sees.
const SCORED_ATTACKS: [Attack; 2] = [Attack::Random, Attack::WrongData];

/// What a run's verifiers check of the results, beyond nothing.
#[derive(Clone, Copy)]
enum Verification {
    None,
    Screens,
    /// Scoring one in this many results against data.
    Scores(u16),
    /// Recomputing each result with a chance of one in this many, within a tolerance per mille.
    SpotChecks(u16, u16),
    /// What a permissionless run does: the screens, and recomputing one in this many results
    /// bit for bit, with whoever they flag ejected.
    Defended(u16),
}

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
    checks: Verification,
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
    let (one_in_text, tolerance_text);
    match checks {
        Verification::None => {}
        Verification::Screens => argv.push("--screen"),
        Verification::Scores(one_in) => {
            one_in_text = one_in.to_string();
            argv.extend(["--score", "--score-one-in", &one_in_text]);
        }
        Verification::SpotChecks(one_in, tolerance) => {
            (one_in_text, tolerance_text) = (one_in.to_string(), tolerance.to_string());
            argv.extend([
                "--spot-check-one-in",
                &one_in_text,
                "--spot-check-tolerance",
                &tolerance_text,
            ]);
        }
        Verification::Defended(one_in) => {
            one_in_text = one_in.to_string();
            argv.extend(["--screen", "--spot-check-one-in", &one_in_text, "--eject"]);
        }
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

/// The attacks BYZANTINE_ATTACKS names, or `default`.
fn attacks(default: &[Attack]) -> anyhow::Result<Vec<Attack>> {
    let Ok(names) = std::env::var("BYZANTINE_ATTACKS") else {
        return Ok(default.to_vec());
    };
    names
        .split(',')
        .map(|attack| {
            <Attack as clap::ValueEnum>::from_str(attack.trim(), false).map_err(|_| {
                anyhow::anyhow!(
                    "BYZANTINE_ATTACKS: no attack {attack:?}; the attacks are {}",
                    <Attack as clap::ValueEnum>::value_variants()
                        .iter()
                        .map(name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let steps: u64 = std::env::var("BYZANTINE_STEPS").map_or(Ok(300), |steps| steps.parse())?;
    // Spot checks are for every attack, `forged-momentum` included (only they see it).
    let spot_checked = attacks(<Attack as clap::ValueEnum>::value_variants())?;
    let (attacks, scored) = (attacks(&ATTACKS)?, attacks(&SCORED_ATTACKS)?);
    let one_in: u16 = std::env::var("BYZANTINE_SCORE_ONE_IN").map_or(Ok(1), |n| n.parse())?;
    let spot_one_in: Option<u16> = std::env::var("BYZANTINE_SPOT_CHECK_ONE_IN")
        .ok()
        .map(|n| n.parse())
        .transpose()?;
    let tolerance: u16 =
        std::env::var("BYZANTINE_SPOT_CHECK_TOLERANCE").map_or(Ok(0), |n| n.parse())?;
    let recomputes = Verification::SpotChecks(spot_one_in.unwrap_or(4), tolerance);
    // The example permissionless run's share (deploy/examples/trainingrun-solana.yaml).
    let defended = Verification::Defended(spot_one_in.unwrap_or(32));
    match std::env::var("BYZANTINE_TABLE").as_deref() {
        Err(_) => {
            losses(steps, &attacks)?;
            detection(steps.min(100), &attacks)?;
            scoring(steps.min(100), one_in, &scored)?;
            spot_checks(steps.min(100), recomputes, &spot_checked)?;
            defended_losses(steps, defended, &spot_checked)
        }
        Ok("losses") => losses(steps, &attacks),
        Ok("detection") => detection(steps, &attacks),
        Ok("scoring") => scoring(steps, one_in, &scored),
        Ok("spot-checks") => spot_checks(steps, recomputes, &spot_checked),
        Ok("defended") => defended_losses(steps, defended, &spot_checked),
        Ok(other) => anyhow::bail!(
            "BYZANTINE_TABLE={other}: expected losses, detection, scoring, spot-checks or \
             defended (unset: all five)"
        ),
    }
}

/// Final validation loss of every attack under every rule, against the rule's honest run.
fn losses(steps: u64, attacks: &[Attack]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (table, honest) = loss_table(steps, attacks, Verification::None, "", |_, _| None)?;
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
    Ok(())
}

/// Final validation loss of every attack under every rule when the run defends itself as a
/// permissionless one does (`verification`: screens and spot checks, whoever they flag
/// ejected), against the rule's honest run with the same checks; and when each dishonest
/// worker was ejected, and whether any honest one was.
fn defended_losses(
    steps: u64,
    verification: Verification,
    attacks: &[Attack],
) -> anyhow::Result<()> {
    let Verification::Defended(one_in) = verification else {
        anyhow::bail!("a defended run screens and spot-checks");
    };
    let started = std::time::Instant::now();
    let mut honest_ejected = 0;
    let (table, _) = loss_table(
        steps,
        attacks,
        verification,
        ", dishonest ejected from round",
        |attack, summary| {
            let honest = WORKERS - attack.map_or(0, |_| BYZANTINE);
            honest_ejected += summary.ejected[..honest].iter().flatten().count();
            let ejected: Vec<String> = summary.ejected[honest..]
                .iter()
                .map(|from| from.map_or("never".to_owned(), |step| step.to_string()))
                .collect();
            Some(ejected.join(" and "))
        },
    )?;
    println!("{table}");
    println!(
        "Defended runs: every round's results screened, each recomputed with a chance of one in {one_in} (bit for bit), and a worker flagged in a round ejected from the next (its results not applied, its training stopped), as a verdict quorum of the round's verifiers does. Honest workers ejected in all runs: {honest_ejected}. {WORKERS} workers ({BYZANTINE} dishonest) x 2 sequences x 64 tokens per step, {steps} steps, tiny preset, seed 7; {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The table of every attack's final validation loss under every rule, all runs with
/// `verification`, each against the rule's honest run (the loss and the ratio, and after them
/// what `note` says of the run, which sees every run, honest ones too); and the honest losses.
fn loss_table(
    steps: u64,
    attacks: &[Attack],
    verification: Verification,
    noted: &str,
    mut note: impl FnMut(Option<Attack>, &SimulationSummary) -> Option<String>,
) -> anyhow::Result<(Table, Vec<f64>)> {
    let mut honest = Vec::new();
    let mut table_header = vec!["attack".to_owned()];
    for rule in RULES {
        let summary = simulate(rule, None, steps, verification)?;
        note(None, &summary);
        honest.push(summary.val_loss);
        table_header.push(format!("{} val loss (ratio){noted}", name(&rule)));
    }
    let header: Vec<&str> = table_header.iter().map(String::as_str).collect();
    let mut table = Table::new(&header);
    let mut row = vec!["none (honest)".to_owned()];
    row.extend(honest.iter().map(|loss| format!("{loss:.4} (1.000)")));
    table.row(row);
    for &attack in attacks {
        let mut row = vec![name(&attack)];
        for (rule, honest) in RULES.iter().zip(&honest) {
            let summary = simulate(*rule, Some(attack), steps, verification)?;
            let loss = summary.val_loss;
            let mut cell = format!("{loss:.4} ({:.3})", loss / honest);
            if let Some(noted) = note(Some(attack), &summary) {
                cell = format!("{cell}, {noted}");
            }
            row.push(cell);
        }
        table.row(row);
    }
    Ok((table, honest))
}

/// The honest run and one run per attack, under the mean with `verification`.
fn runs_under_the_mean(
    steps: u64,
    attacks: &[Attack],
    verification: Verification,
) -> anyhow::Result<Vec<(Option<Attack>, SimulationSummary)>> {
    std::iter::once(None)
        .chain(attacks.iter().copied().map(Some))
        .map(|attack| {
            Ok((
                attack,
                simulate(Aggregation::Mean, attack, steps, verification)?,
            ))
        })
        .collect()
}

/// A detection row's first cells: the attack, the dishonest workers' rounds flagged (from
/// round), the honest workers'.
fn flag_cells(attack: Option<Attack>, flags: &Flagged) -> Vec<String> {
    let honest = WORKERS - attack.map_or(0, |_| BYZANTINE);
    vec![
        attack.map_or("none (honest)".to_owned(), |a| name(&a)),
        dishonest(flags, honest, attack.is_some()),
        flags.share(0..honest),
    ]
}

/// The dishonest workers' share of rounds flagged, and the round by which every one had been.
fn dishonest(flags: &Flagged, honest: usize, attacked: bool) -> String {
    if !attacked {
        return "-".to_owned();
    }
    let share = flags.share(honest..WORKERS);
    match flags.all_flagged_by(honest..WORKERS) {
        Some(last) => format!("{share} ({last})"),
        None => share,
    }
}

/// What the screens flag of each attack, under the mean: how many dishonest and honest
/// results, from which round, what honest results measured against the thresholds, and what
/// screening costs.
fn detection(steps: u64, attacks: &[Attack]) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        "attack",
        "dishonest results flagged (from round)",
        "honest results flagged",
        "largest honest overlap (same round, same client)",
        "norm / median: honest max, dishonest min",
        "sign agreement: honest min, dishonest max",
        "screening per round (share of a step)",
    ]);
    let three = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for (attack, summary) in runs_under_the_mean(steps, attacks, Verification::Screens)? {
        let screens = &summary.screens;
        table.row(
            [
                flag_cells(attack, &screens.flags),
                vec![
                    format!(
                        "{:.3}, {:.3}",
                        screens.honest_overlap_max, screens.honest_repeat_max
                    ),
                    format!(
                        "{:.3}, {}",
                        screens.honest_norm_max,
                        three(screens.dishonest_norm_min)
                    ),
                    format!(
                        "{}, {}",
                        three(screens.honest_agreement_min),
                        three(screens.dishonest_agreement_max)
                    ),
                    screening_cost(&summary),
                ],
            ]
            .concat(),
        );
    }
    println!("{table}");
    println!(
        "Screens over {steps} steps under the mean. A result is flagged when it is all zeros; shares at least {SAME_SELECTION} of its picks with an earlier result of the round or with its sender's previous result; has {OUTSIZED_RATIO} times the round's median norm or more; or, {CONTRARY_ROUNDS} rounds in a row, agrees in sign with the rest of the round on less than {CONTRARY_AGREEMENT} of the coefficients they share. \"From round\": the round by which every dishonest client had been flagged (a verdict quorum ejects it in the round after)."
    );
    Ok(())
}

/// What scoring against data flags of each attack, under the mean: how many dishonest and
/// honest senders' rounds, from which round, the scores both earn, and what scoring every
/// result of a round costs one verifier.
fn scoring(steps: u64, one_in: u16, attacks: &[Attack]) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        "attack",
        "dishonest rounds flagged (from round)",
        "honest rounds flagged",
        "mean score: honest (share at or below 0)",
        "mean score: dishonest",
        "scoring a round (share of a step)",
    ]);
    let four = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for (attack, summary) in runs_under_the_mean(steps, attacks, Verification::Scores(one_in))? {
        let scores = &summary.scores;
        table.row(
            [
                flag_cells(attack, &scores.flags),
                vec![
                    format!(
                        "{} ({:.1}%)",
                        four(scores.honest_mean()),
                        100.0 * scores.honest_not_positive as f64
                            / scores.honest_scored.max(1) as f64
                    ),
                    four(scores.dishonest_mean()),
                    scoring_cost(&summary),
                ],
            ]
            .concat(),
        );
    }
    println!("{table}");
    println!(
        "Scores over {steps} steps under the mean. A result's score is the loss it takes off two sequences of its sender's assigned batch, applied alone, less what it takes off two sequences of a control batch; one in {one_in} of each round's results is scored (a seeded choice); a sender scored in a round is flagged when its mean score over the last {window} rounds (with at least {MIN_SCORES} scores there) is under {LOW_SCORE_PER_MILLE} per mille of the median of the means of all senders with as many. \"From round\": the round by which every dishonest sender had been flagged.",
        window = WINDOW * u64::from(one_in)
    );
    Ok(())
}

/// What spot checks (`verification`) flag of each attack, under the mean: how many dishonest
/// and honest senders' rounds were flagged of those checked (recomputed, or their chain
/// checked), from which round, how many honest recomputes matched (bit for bit, or within the
/// tolerance), and what one verifier's recomputes of a round cost.
fn spot_checks(steps: u64, verification: Verification, attacks: &[Attack]) -> anyhow::Result<()> {
    let Verification::SpotChecks(one_in, tolerance) = verification else {
        anyhow::bail!("spot checks are a share and a tolerance");
    };
    let matched = match tolerance {
        0 => "honest recomputes bit for bit".to_owned(),
        per_mille => format!("honest recomputes within {per_mille} per mille"),
    };
    let mut table = Table::new(&[
        "attack",
        "dishonest rounds flagged (from round)",
        "honest rounds flagged",
        matched.as_str(),
        "recomputing a round, one verifier (share of a step)",
        "momentum bytes a check moves (with its chain's)",
    ]);
    for (attack, summary) in runs_under_the_mean(steps, attacks, verification)? {
        let checks = &summary.spot_checks;
        table.row(
            [
                flag_cells(attack, &checks.flags),
                vec![
                    format!("{} of {}", checks.honest_matched, checks.honest_recomputed),
                    spot_check_cost(&summary),
                    (checks.bytes / checks.recomputes.max(1)).to_string(),
                ],
            ]
            .concat(),
        );
    }
    println!("{table}");
    println!(
        "Spot checks over {steps} steps under the mean. Each result is recomputed with a chance of one in {one_in} (a seeded choice) from the momentum its sender committed to in the payload, on the batch it was assigned, and flagged when the bytes differ (or, with a tolerance, stray further than it) or the momentum served is not the committed one; a sender recomputed in a round is flagged in the next if its result there starts from another momentum than the recompute left. \"Of\" counts the rounds a sender was checked in; \"from round\": the round by which every dishonest sender had been flagged. One verifier recomputes all the round's chosen results; a client is one of a round's verifiers in about witness_nodes of every {WORKERS} rounds, so with three it pays 3/{WORKERS} of this on average."
    );
    Ok(())
}
