//! DeMo's defining properties, checked on the real optimizer and simulation.

use demeter_trainer::commands::{SimulateArgs, run_simulation};
use demeter_trainer::demo::{Demo, DemoConfig, SparseUpdate, ValueEncoding};
use demeter_trainer::payload;
use sha2::Digest;
use tch::{Device, Kind, Tensor};

fn parameters(shapes: &[&[i64]]) -> Vec<(String, Tensor)> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            (
                format!("p{i}"),
                Tensor::randn(*shape, (Kind::Float, Device::Cpu)),
            )
        })
        .collect()
}

fn tensors(named: &[(String, Tensor)]) -> Vec<Tensor> {
    named.iter().map(|(_, t)| t.copy()).collect()
}

#[test]
fn with_topk_at_least_the_block_size_demo_is_sign_sgd_on_the_mean_gradient() {
    tch::manual_seed(11);
    let shapes: &[&[i64]] = &[&[128, 64], &[96], &[3, 16, 32]];
    let initial = parameters(shapes);
    let config = DemoConfig {
        topk: 64 * 64,
        momentum_decay: 0.9,
        ..DemoConfig::default()
    };
    let clients = 3;
    let mut optimizers: Vec<Demo> = (0..clients)
        .map(|_| Demo::new(&initial, config.clone()).unwrap())
        .collect();
    let demo_weights = tensors(&initial);
    let sign_weights = tensors(&initial);
    let lr = 0.01;
    for _ in 0..3 {
        let gradients: Vec<Vec<Tensor>> = (0..clients)
            .map(|_| {
                shapes
                    .iter()
                    .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
                    .collect()
            })
            .collect();
        let updates: Vec<SparseUpdate> = optimizers
            .iter_mut()
            .zip(&gradients)
            .map(|(demo, grads)| demo.compress_step(grads, lr))
            .collect();
        let refs: Vec<&SparseUpdate> = updates.iter().collect();
        optimizers[0].apply(&demo_weights, &refs, lr);
        for (index, weight) in sign_weights.iter().enumerate() {
            let mean = gradients
                .iter()
                .map(|g| g[index].shallow_clone())
                .reduce(|a, b| a + b)
                .unwrap()
                / clients as f64;
            let _ = weight.shallow_clone().g_sub_(&(mean.sign() * lr));
        }
        // Everything was sent, so error feedback leaves (almost) nothing behind.
        for delta in optimizers[0].deltas() {
            assert!(delta.abs().max().double_value(&[]) < 1e-6);
        }
    }
    for (demo, sign) in demo_weights.iter().zip(&sign_weights) {
        let differing = (demo - sign)
            .abs()
            .gt(1e-6)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(
            differing, 0,
            "DeMo with full top-k must equal signSGD on the mean gradient"
        );
    }
}

#[test]
fn error_feedback_keeps_exactly_what_was_not_sent() {
    tch::manual_seed(5);
    let named = parameters(&[&[128, 128]]);
    let config = DemoConfig {
        topk: 8,
        ..DemoConfig::default()
    };
    let mut demo = Demo::new(&named, config).unwrap();
    let gradient = Tensor::randn([128, 128], (Kind::Float, Device::Cpu));
    let lr = 0.1;
    let update = demo.compress_step(std::slice::from_ref(&gradient), lr);
    let compressor = demo.compressor();
    let sent = compressor.decode(0, &update.tensors[0]);
    // Δ was lr·g (it started at zero); what remains plus what was sent is lr·g again.
    let reconstructed = &demo.deltas()[0] + &sent;
    assert!(
        (reconstructed - &gradient * lr)
            .abs()
            .max()
            .double_value(&[])
            < 1e-5
    );
    // The sent part is the best 8-term approximation per block: the remaining energy is the
    // energy of the coefficients that were not chosen.
    let coefficients = compressor.encode(0, &(&gradient * lr));
    let (sorted, _) = coefficients.square().sort(-1, true);
    let unsent = sorted
        .narrow(-1, 8, 4096 - 8)
        .sum(Kind::Double)
        .double_value(&[]);
    let remaining = demo.deltas()[0]
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    assert!((unsent - remaining).abs() < 1e-6 * unsent.max(1e-12) + 1e-9);
}

#[test]
fn a_verifier_recomputes_a_step_bit_for_bit_from_the_served_momentum() {
    tch::manual_seed(11);
    let named = parameters(&[&[256, 128], &[128], &[3, 2, 64, 30]]);
    let mut sender = Demo::new(&named, DemoConfig::default()).unwrap();
    let verifier = Demo::new(&named, DemoConfig::default()).unwrap();
    // A few steps in, so the momentum is the sender's own and not the zeros every client
    // starts from.
    for _ in 0..3 {
        sender.compress_step(&tensors(&named), 0.01);
    }
    let served = sender.momentum_bytes();
    assert_eq!(served.len(), verifier.momentum_len());
    assert!(
        verifier.momentum_from_bytes(&served[1..]).is_none(),
        "a momentum of another length is refused"
    );
    let commitment: [u8; 32] = sha2::Sha256::digest(&served).into();
    let gradients = tensors(&named);
    let layouts = sender.compressor().layouts().to_vec();
    let update = sender.compress_step(&gradients, 0.01);
    let sent = payload::encode(&update, &commitment, &layouts);
    assert_eq!(payload::momentum_commitment(&sent), Some(commitment));

    let mut momentum = verifier.momentum_from_bytes(&served).unwrap();
    let again = verifier.recompute_step(&mut momentum, &gradients, 0.01, &update);
    assert_eq!(payload::encode(&again, &commitment, &layouts), sent);
    assert_eq!(
        sha2::Sha256::digest(sender.momentum_bytes()),
        sha2::Sha256::digest(
            momentum
                .iter()
                .flat_map(|t| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
                .flat_map(f32::to_le_bytes)
                .collect::<Vec<u8>>()
        ),
        "the verifier's momentum after the step is the sender's"
    );
    // Other gradients (another batch) give another result from the same momentum.
    let mut momentum = verifier.momentum_from_bytes(&served).unwrap();
    let other: Vec<Tensor> = gradients.iter().map(|g| g.flip([0])).collect();
    let wrong = verifier.recompute_step(&mut momentum, &other, 0.01, &update);
    assert_ne!(payload::encode(&wrong, &commitment, &layouts), sent);
}

#[test]
fn byte_counts_match_the_formula() {
    tch::manual_seed(3);
    let named = parameters(&[&[256, 128], &[128], &[97], &[3, 2, 64, 300]]);
    for values in [ValueEncoding::F32, ValueEncoding::Bf16, ValueEncoding::Sign] {
        let config = DemoConfig {
            values,
            ..DemoConfig::default()
        };
        let mut demo = Demo::new(&named, config).unwrap();
        let grads = tensors(&named);
        let update = demo.compress_step(&grads, 0.1);
        let bytes = payload::encode(&update, &payload::UNCOMMITTED, demo.compressor().layouts());
        // By hand: header 12 + momentum 32 + hash 32; per tensor 2 + name + 1 + 4·rank + 16 + n·index + values.
        // [256,128]: 64x64 blocks, 8 of them, k 32, u16 indices. [128]: 2 blocks of 64, u8.
        // [97]: blocks of 1 (97 is prime), k clamps to 1, u8. [3,2,64,300]: 6·1·5 = 30 blocks
        // of 64x60, u16.
        let value_bytes = |n: usize| match values {
            ValueEncoding::F32 => 4 * n,
            ValueEncoding::Bf16 => 2 * n,
            ValueEncoding::Sign => n.div_ceil(8),
        };
        let record = |rank: usize, n: usize, width: usize| {
            2 + 2 + 1 + 4 * rank + 16 + n * width + value_bytes(n)
        };
        let expected = 12
            + 32
            + 32
            + record(2, 8 * 32, 2)
            + record(1, 2 * 32, 1)
            + record(1, 97, 1)
            + record(4, 30 * 32, 2);
        assert_eq!(bytes.len(), expected, "{values:?}");
        assert_eq!(
            payload::encoded_len(demo.compressor().layouts(), values),
            expected
        );
    }
}

fn simulate_args(steps: u64) -> SimulateArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SimulateArgs,
    }
    let steps = steps.to_string();
    Wrapper::parse_from([
        "test",
        "--steps",
        &steps,
        "--workers",
        "3",
        "--batch",
        "2",
        "--seq-len",
        "64",
        "--quiet",
        "--eval-samples",
        "8",
    ])
    .args
}

#[test]
fn replicas_stay_bitwise_identical_for_every_value_encoding() {
    for values in ["f32", "bf16", "sign"] {
        let mut args = simulate_args(6);
        args.demo.values = clap::ValueEnum::from_str(values, true).unwrap();
        let summary = run_simulation(&args).unwrap();
        assert!(summary.replicas_identical, "{values}");
        assert!(
            summary.last_loss < summary.first_loss,
            "{values}: loss falls"
        );
    }
}

#[test]
fn resume_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, halfway, resumed) = (
        dir.path().join("straight"),
        dir.path().join("halfway"),
        dir.path().join("resumed"),
    );
    for optimizer in ["demo", "adamw"] {
        // A constant schedule, so a 3-step run takes the same first steps as a 6-step run.
        let mut six = simulate_args(6);
        six.optimizer = clap::ValueEnum::from_str(optimizer, true).unwrap();
        six.schedule.schedule = demeter_trainer::optim::ScheduleKind::Constant;
        six.checkpoint = Some(straight.clone());
        run_simulation(&six).unwrap();

        let mut three = six.clone();
        three.steps = 3;
        three.checkpoint = Some(halfway.clone());
        run_simulation(&three).unwrap();
        let mut rest = six.clone();
        rest.resume = Some(halfway.clone());
        rest.checkpoint = Some(resumed.clone());
        run_simulation(&rest).unwrap();

        let read = |dir: &std::path::Path, file: &str| std::fs::read(dir.join(file)).unwrap();
        for file in [
            "model.safetensors",
            "optimizer-worker-0.safetensors",
            "optimizer-worker-2.safetensors",
        ] {
            let (a, b) = (read(&straight, file), read(&resumed, file));
            assert!(a == b, "{optimizer}: {file} differs after resume");
        }
    }
}

#[test]
fn results_do_not_depend_on_worker_threads() {
    let dir = tempfile::tempdir().unwrap();
    for optimizer in ["demo", "adamw"] {
        // Three workers: two threads run them as [2, 1], three as [1, 1, 1]. Both settings run
        // each worker's ops single-threaded, so any difference would come from the spreading.
        let runs: Vec<_> = [2, 3]
            .into_iter()
            .map(|threads| {
                let mut args = simulate_args(4);
                args.optimizer = clap::ValueEnum::from_str(optimizer, true).unwrap();
                args.worker_threads = Some(threads);
                let checkpoint = dir.path().join(format!("{optimizer}-{threads}"));
                args.checkpoint = Some(checkpoint.clone());
                let summary = run_simulation(&args).unwrap();
                let model = std::fs::read(checkpoint.join("model.safetensors")).unwrap();
                (summary, model)
            })
            .collect();
        let ((two, two_model), (three, three_model)) = (&runs[0], &runs[1]);
        assert_eq!(two.last_loss, three.last_loss, "{optimizer}: training loss");
        assert_eq!(two.val_loss, three.val_loss, "{optimizer}: validation loss");
        assert!(two_model == three_model, "{optimizer}: weights differ");
        assert!(two.phase_times.forward_backward > std::time::Duration::ZERO);
    }
}

/// Scoring against data flags the senders of noise once a whole window has passed, flags no honest
/// sender, and leaves training as it was: the scored run's replicas are the unscored run's.
#[test]
fn scoring_flags_noise_senders_and_changes_nothing() {
    use demeter_trainer::scoring::WINDOW;

    let mut args = simulate_args(WINDOW + 6);
    args.workers = 6;
    args.byzantine = 2;
    args.attack = Some(demeter_trainer::attack::Attack::Random);
    args.grad_clip = Some(1.0);
    let unscored = run_simulation(&args).unwrap();
    args.score = true;
    let scored = run_simulation(&args).unwrap();
    assert_eq!(
        scored.val_loss.to_bits(),
        unscored.val_loss.to_bits(),
        "scoring restores the model it scores on"
    );
    let scores = &scored.scores;
    assert_eq!(
        scores.flags.by_worker[..4],
        [0; 4],
        "no honest sender flagged"
    );
    for worker in 4..6 {
        let first = scores.flags.first[worker].expect("every noise sender flagged");
        assert!(first >= WINDOW, "judged after a whole window: {first}");
    }
    assert!(scores.honest_mean().unwrap() > 10.0 * scores.dishonest_mean().unwrap().abs());
}

/// Spot checks recompute every honest result bit for bit and flag every result trained on
/// other samples in the first round that checks it, and leave training as it was: the checked
/// run's replicas are the unchecked run's.
#[test]
fn spot_checks_flag_wrong_data_senders_and_change_nothing() {
    let mut args = simulate_args(6);
    args.workers = 4;
    args.byzantine = 1;
    args.attack = Some(demeter_trainer::attack::Attack::WrongData);
    args.grad_clip = Some(1.0);
    let unchecked = run_simulation(&args).unwrap();
    args.spot_check_one_in = 1;
    let checked = run_simulation(&args).unwrap();
    assert_eq!(
        checked.val_loss.to_bits(),
        unchecked.val_loss.to_bits(),
        "a recompute changes no replica"
    );
    let checks = &checked.spot_checks;
    assert_eq!(
        checks.flags.by_worker[..3],
        [0; 3],
        "no honest sender flagged"
    );
    assert_eq!(
        (checks.honest_matched, checks.honest_recomputed),
        (18, 18),
        "three honest results a round for six rounds, each bit for bit"
    );
    assert_eq!(
        checks.flags.by_worker[3], 6,
        "the wrong-data sender, every round"
    );
    assert_eq!(checks.flags.first[3], Some(1));
}

/// A run that ejects whom its checks flag applies a cheater's results only until the round
/// after the one it was flagged in, and its honest replicas go on bitwise identical; a run in
/// which nobody is flagged ejects nobody and trains to the same bits as one that checks
/// nothing.
#[test]
fn ejecting_the_flagged_stops_applying_their_results() {
    let mut args = simulate_args(6);
    args.workers = 4;
    args.grad_clip = Some(1.0);
    let unchecked = run_simulation(&args).unwrap();
    args.screen = true;
    args.eject = true;
    let honest = run_simulation(&args).unwrap();
    assert_eq!(honest.ejected, [None; 4], "no honest worker ejected");
    assert_eq!(
        honest.val_loss.to_bits(),
        unchecked.val_loss.to_bits(),
        "checks that flag nobody change nothing"
    );

    args.byzantine = 1;
    args.attack = Some(demeter_trainer::attack::Attack::Zero);
    let ejecting = run_simulation(&args).unwrap();
    assert_eq!(
        ejecting.ejected,
        [None, None, None, Some(2)],
        "flagged in round 1, ejected from round 2"
    );
    let screens = &ejecting.screens.flags;
    assert_eq!(screens.by_worker[..3], [0; 3], "no honest result flagged");
    assert_eq!(
        (screens.checked[3], screens.checked[0]),
        (1, 6),
        "from round 2 on its results are not counted, so nobody checks them"
    );
    assert!(ejecting.replicas_identical);

    // A checkpoint keeps who was ejected: the resumed run does not let the cheater back in.
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    args.steps = 3;
    args.checkpoint = Some(checkpoint.clone());
    run_simulation(&args).unwrap();
    (args.steps, args.checkpoint, args.resume) = (6, None, Some(checkpoint));
    let resumed = run_simulation(&args).unwrap();
    assert_eq!(resumed.ejected, ejecting.ejected);
    let screens = &resumed.screens.flags;
    assert_eq!(
        (screens.checked[3], screens.checked[0]),
        (0, 3),
        "rounds 4 to 6: the honest results checked, nothing of the cheater's"
    );
    assert!(resumed.replicas_identical);

    args.resume = None;
    args.eject = false;
    let tolerating = run_simulation(&args).unwrap();
    assert_eq!(tolerating.screens.flags.by_worker[3], 6);
    assert_ne!(
        ejecting.val_loss.to_bits(),
        tolerating.val_loss.to_bits(),
        "the zeros stopped counting from round 2"
    );
}

/// Within a tolerance, spot checks still catch what exact ones catch: a result trained on other
/// samples strays by far more than another device's last bits (every round), and a sender that
/// steps from a momentum it made up recomputes, but its next momentum is not the one its
/// recompute left (every round from the second, by the chain). Honest results pass.
#[test]
fn spot_checks_within_a_tolerance_flag_wrong_data_and_forged_momenta() {
    use demeter_trainer::attack::Attack;
    for (attack, flagged, first) in [(Attack::WrongData, 6, 1), (Attack::ForgedMomentum, 5, 2)] {
        let mut args = simulate_args(6);
        args.workers = 4;
        args.byzantine = 1;
        args.attack = Some(attack);
        args.grad_clip = Some(1.0);
        args.spot_check_one_in = 1;
        args.spot_check_tolerance = 10;
        let checks = run_simulation(&args).unwrap().spot_checks;
        assert_eq!(
            checks.flags.by_worker[..3],
            [0; 3],
            "{attack:?}: no honest sender flagged"
        );
        assert_eq!(
            (checks.honest_matched, checks.honest_recomputed),
            (18, 18),
            "{attack:?}: every honest result within the tolerance"
        );
        assert_eq!(checks.flags.by_worker[3], flagged, "{attack:?}");
        assert_eq!(checks.flags.first[3], Some(first), "{attack:?}");
    }
}
