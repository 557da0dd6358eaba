//! The `demeter` binary as users run it.

use std::path::Path;
use std::process::{Command, Output};

use demeter_trainer::model::{load_safetensors, save_safetensors};
use tch::{Device, Kind, Tensor};

fn demeter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_demeter"))
        .args(args)
        .output()
        .expect("demeter runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn dataset_meta(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("dataset.json")).unwrap()).unwrap()
}

/// Fails with a message that names `flag`, having written nothing.
fn refused(output: Output, flag: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded:\n{stderr}");
    assert!(stderr.contains(flag), "does not name {flag}:\n{stderr}");
}

#[test]
fn settings_that_would_flood_the_machine_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    refused(
        demeter(&[
            "data",
            "prepare",
            "--shard-tokens",
            "0",
            "--out",
            path(&out),
        ]),
        "--shard-tokens 0",
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().count() == 0);
    let run = dir.path().join("run");
    refused(
        demeter(&["local", "--clients", "300", "--dir", path(&run)]),
        "--clients 300",
    );
    assert!(!run.exists(), "no run directory, no process");
}

#[test]
fn payload_compress_inspect_and_expand() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(8);
    let momentum = dir.path().join("momentum.safetensors");
    let tensors = vec![
        (
            "w".to_owned(),
            Tensor::randn([256, 128], (Kind::Float, Device::Cpu)),
        ),
        (
            "b".to_owned(),
            Tensor::randn([128], (Kind::Float, Device::Cpu)),
        ),
    ];
    save_safetensors(&momentum, &tensors).unwrap();
    let (a, b) = (dir.path().join("a.dmpl"), dir.path().join("b.dmpl"));
    ok(demeter(&[
        "payload",
        "compress",
        "--chunk",
        "64",
        "--topk",
        "32",
        path(&momentum),
        path(&a),
    ]));
    ok(demeter(&[
        "payload",
        "compress",
        "--chunk",
        "64",
        "--topk",
        "4",
        path(&momentum),
        path(&b),
    ]));

    let inspect = ok(demeter(&["payload", "inspect", path(&a)]));
    assert!(
        inspect.contains("| w      | [256, 128] | 64x64 | 8      | 32 |"),
        "{inspect}"
    );
    // 8·32 + 2·32 = 320 coefficients of 2+4 and 1+4 bytes, 76 bytes of header (the momentum
    // commitment among them) and hash, and two
    // records of 2 + 1 + 16 bytes plus name and dims.
    let expected = 76 + (2 + 1 + 1 + 8 + 16 + 256 * 6) + (2 + 1 + 1 + 4 + 16 + 64 * 5);
    assert!(
        inspect.contains(&format!("{expected} bytes, sha256")),
        "{inspect}"
    );
    assert!(
        inspect.contains("momentum commitment: none"),
        "a compressed file commits to no momentum: {inspect}"
    );
    assert!(
        inspect.contains("32896 elements: 66.3x smaller than f32"),
        "{inspect}"
    );

    // One payload expands to its own decoded selection.
    let expanded = dir.path().join("expanded.safetensors");
    ok(demeter(&["payload", "expand", path(&a), path(&expanded)]));
    let dense = load_safetensors(&expanded).unwrap();
    let (_, w) = dense
        .iter()
        .find(|(name, _)| name == "w")
        .expect("expanded file holds w");
    let kept = w.square().sum(Kind::Double).double_value(&[]);
    let total = tensors[0].1.square().sum(Kind::Double).double_value(&[]);
    assert!(kept > 0.0 && kept < total, "top-k keeps part of the energy");

    // Payloads with different k are different layouts: a clear error, not a wrong answer.
    let mixed = demeter(&["payload", "expand", path(&a), path(&b), path(&expanded)]);
    assert!(!mixed.status.success());
    assert!(
        String::from_utf8_lossy(&mixed.stderr).contains("tensor 0: k is 4, the model expects 32")
    );

    // A corrupted file is named and rejected.
    let mut bytes = std::fs::read(&a).unwrap();
    bytes[50] ^= 0xFF;
    std::fs::write(&b, bytes).unwrap();
    let corrupted = demeter(&["payload", "inspect", path(&b)]);
    assert!(String::from_utf8_lossy(&corrupted.stderr).contains("content hash mismatch"));
}

#[test]
fn data_prepare_with_bytes_and_a_hugging_face_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "the cat sat on the mat ".repeat(200)).unwrap();

    let bytes_dir = dir.path().join("bytes");
    ok(demeter(&[
        "data",
        "prepare",
        "--input",
        path(&text),
        "--out",
        path(&bytes_dir),
        "--val-fraction",
        "0.1",
    ]));
    let meta = dataset_meta(&bytes_dir);
    assert_eq!(meta["vocab_size"], 256);
    assert_eq!(file_len(&bytes_dir.join("val.bin")), 2 * 460);
    assert_eq!(
        file_len(&bytes_dir.join("train-00000.bin")),
        2 * (4600 - 460)
    );

    // A word-level tokenizer.json, as `tokenizers` writes it.
    let tokenizer_json = dir.path().join("tokenizer.json");
    std::fs::write(&tokenizer_json, serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": { "type": "Whitespace" }, "post_processor": null, "decoder": null,
        "model": { "type": "WordLevel", "vocab": { "[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5 }, "unk_token": "[UNK]" }
    }).to_string()).unwrap();
    let words_dir = dir.path().join("words");
    ok(demeter(&[
        "data",
        "prepare",
        "--input",
        path(&text),
        "--out",
        path(&words_dir),
        "--tokenizer",
        path(&tokenizer_json),
        "--val-fraction",
        "0.1",
    ]));
    let meta = dataset_meta(&words_dir);
    assert_eq!(meta["vocab_size"], 6);
    assert_eq!(file_len(&words_dir.join("val.bin")), 2 * 120);
    let first = &std::fs::read(words_dir.join("train-00000.bin")).unwrap()[..6];
    assert_eq!(first, [1, 0, 2, 0, 3, 0], "the cat sat");

    // And the simulation trains on it.
    let out = ok(demeter(&[
        "simulate",
        "--data",
        path(&words_dir),
        "--steps",
        "3",
        "--workers",
        "2",
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--quiet",
    ]));
    let identical = out
        .lines()
        .find(|line| line.starts_with("| replicas bitwise identical "))
        .unwrap_or_else(|| panic!("no replica row: {out}"));
    assert!(identical.contains("| yes "), "{out}");

    let missing = demeter(&[
        "data",
        "prepare",
        "--out",
        path(&words_dir),
        "--tokenizer",
        "/nonexistent/tokenizer.json",
    ]);
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("--tokenizer /nonexistent/tokenizer.json")
    );
}

#[test]
fn simulate_rejects_bad_settings_by_name() {
    let out = demeter(&["simulate", "--steps", "10", "--warmup", "20", "--quiet"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("schedule.warmup_steps = 20"));
    let out = demeter(&["simulate", "--steps", "10", "--beta", "1.5", "--quiet"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("demo.momentum_decay = 1.5"));
}

#[test]
fn simulate_checkpoints_whole_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("ckpt");
    let common = ["simulate", "--workers", "2", "--batch", "2", "--quiet"];
    let mut first = common.to_vec();
    first.extend(["--steps", "4", "--checkpoint", path(&checkpoint)]);
    ok(demeter(&first));
    let mut files: Vec<String> = std::fs::read_dir(&checkpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "model.safetensors",
            "optimizer-worker-0.safetensors",
            "optimizer-worker-1.safetensors",
            "trainer_state.json"
        ]
    );
    // Written beside and renamed into place: no partial directory is left.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(checkpoint.join("trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 4);

    let mut resumed = common.to_vec();
    resumed.extend(["--steps", "6", "--resume", path(&checkpoint)]);
    ok(demeter(&resumed));
    let mut done = common.to_vec();
    done.extend(["--steps", "4", "--resume", path(&checkpoint)]);
    let out = demeter(&done);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the checkpoint is at step 4"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn coordinator_run_files_are_validated_by_field() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/coordinator-run.toml");
    let out = ok(demeter(&["coordinator", "check-config", path(&example)]));
    assert!(
        out.contains("| witnesses per round (quorum)") && out.contains("valid"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&example).unwrap();
    let cases = [
        (
            text.replace("witness_nodes = 3", "witness_nodes = 40"),
            "witness_nodes = 40: must be 1..=32",
        ),
        (
            text.replace("total_steps = 1000\n", ""),
            "missing field `total_steps`",
        ),
        (
            text.replace("min_clients = 2", "min_clients = 2\nmin_client = 2"),
            "unknown field `min_client`",
        ),
        (
            text.replace(
                "\"moby-dick-tiny\"",
                "\"a-run-id-that-is-longer-than-32-bytes\"",
            ),
            "must be 1 to 32 bytes",
        ),
    ];
    for (index, (bad, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{index}.toml"));
        std::fs::write(&file, bad).unwrap();
        let output = demeter(&["coordinator", "check-config", path(&file)]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "case {index}: {stderr}");
    }
}

#[test]
fn local_runs_three_client_processes_to_identical_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(demeter(&[
        "local",
        "--clients",
        "3",
        "--steps",
        "4",
        "--dir",
        path(dir.path()),
    ]));
    assert!(
        out.contains("3 clients, 4 steps") && out.contains("replicas bitwise identical: yes"),
        "{out}"
    );
    for client in 0..3 {
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("client-{client}.summary.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(summary["steps"], 4);
        assert!(summary["last_loss"].as_f64() < summary["first_loss"].as_f64());
    }
    // The coordinator's state file holds the finished run.
    assert!(dir.path().join("coordinator.state").exists());

    // The run leaves the trained model, the one its witnesses attested; every client's final
    // checkpoint is that model, and `demeter model hash` tells it from any other.
    let line = out
        .lines()
        .find(|line| line.starts_with("the trained model: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.ends_with("attested by the run's witnesses at step 4"),
        "{line}"
    );
    let hash = line
        .split("weights hash ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap();
    let other_client = dir.path().join("client-2.checkpoints/step-4");
    let checked = ok(demeter(&[
        "model",
        "hash",
        path(&other_client),
        "--expect",
        hash,
    ]));
    assert!(checked.contains("the expected model: yes"), "{checked}");
    let fresh = dir.path().join("fresh");
    ok(demeter(&["model", "init", "--out", path(&fresh)]));
    let refused = demeter(&["model", "hash", path(&fresh), "--expect", hash]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("this is not that model"),
        "{refused:?}"
    );
}

#[test]
fn train_names_what_is_wrong_with_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let wallet = dir.path().join("id.json");
    std::fs::write(&wallet, "[1, 2, 3]").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--coordinator", "udp://127.0.0.1:9"],
            "expected tcp://HOST:PORT (the centralized server) or solana",
        ),
        (
            &["--coordinator", "solana", "--run-id", "r"],
            "--coordinator solana needs --rpc URL",
        ),
        (
            &["--coordinator", "solana", "--rpc", "http://127.0.0.1:9"],
            "--coordinator solana needs --run-id NAME",
        ),
        (
            &[
                "--coordinator",
                "solana",
                "--rpc",
                "http://127.0.0.1:9",
                "--run-id",
                "r",
            ],
            "--coordinator solana needs --run-authority PUBKEY",
        ),
        (
            &[
                "--coordinator",
                "solana",
                "--rpc",
                "http://127.0.0.1:9",
                "--run-authority",
                "11111111111111111111111111111111",
                "--run-id",
                "a-run-id-that-is-longer-than-32-bytes",
            ],
            "must be 1 to 32 bytes",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["train", "--wallet", path(&wallet)];
        args.extend(flags);
        let output = demeter(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
    let output = demeter(&[
        "train",
        "--coordinator",
        "tcp://127.0.0.1:9",
        "--wallet",
        path(&wallet),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("has 3 bytes; a keypair file holds 64"),
        "{stderr}"
    );
}
