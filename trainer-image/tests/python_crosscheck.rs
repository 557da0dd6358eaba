//! Cross-checks against the PyTorch ecosystem, through the bootstrapped Python environment:
//! `transformers` must load Demeter's checkpoints and compute the same logits, and the paper's
//! reference DeMo step (re-typed in PyTorch in `python/reference_demo.py`) must update weights
//! exactly as Demeter does.

use std::path::{Path, PathBuf};
use std::process::Command;

use demeter_trainer::demo::{Demo, DemoConfig, SparseUpdate};
use demeter_trainer::model::{
    Llama, LlamaConfig, Preset, initialize, load_safetensors, named_parameters, save_safetensors,
};
use tch::{Device, Kind, Tensor, nn};

fn python(script: &str, args: &[&Path]) {
    let python = std::env::var("DEMETER_PYTHON")
        .expect("DEMETER_PYTHON is unset: run the tests through `make test`, which bootstraps Python with torch");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn tensor(path: &Path, name: &str) -> Tensor {
    load_safetensors(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

#[test]
fn transformers_loads_checkpoints_and_computes_the_same_logits() {
    for tied in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LlamaConfig::preset(Preset::Tiny, 256);
        config.tie_word_embeddings = tied;
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Llama::new(&vs.root(), &config).unwrap();
        let parameters = named_parameters(&vs);
        // A larger init than training uses, so attention and RoPE visibly matter.
        initialize(&parameters, 99, 0.2);
        save_safetensors(&dir.path().join("model.safetensors"), &parameters).unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_hf_json()).unwrap();

        let tokens = Tensor::randint(256, [2, 24], (Kind::Int64, Device::Cpu));
        let tokens_path = dir.path().join("tokens.safetensors");
        save_safetensors(
            &tokens_path,
            &[("tokens".to_owned(), tokens.shallow_clone())],
        )
        .unwrap();
        let out = dir.path().join("logits.safetensors");
        python("hf_logits.py", &[dir.path(), &tokens_path, &out]);

        let ours = tch::no_grad(|| model.forward(&tokens));
        let theirs = tensor(&out, "logits");
        assert_eq!(ours.size(), theirs.size());
        let difference = (&ours - &theirs).abs().max().double_value(&[]);
        let scale = theirs.abs().max().double_value(&[]);
        eprintln!("tied {tied}: max |logit difference| {difference:.2e}, logits up to {scale:.2}");
        assert!(
            difference < 1e-4 * scale.max(1.0),
            "tied {tied}: max |Δlogit| = {difference} (logits up to {scale})"
        );
    }
}

#[test]
fn demo_matches_the_reference_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let (clients, steps, lr, topk, chunk, beta, wd) = (3, 4, 0.01, 8, 32, 0.9, 0.1);
    let shapes: [&[i64]; 4] = [&[128, 64], &[96], &[64, 192], &[50, 30]];
    tch::manual_seed(21);
    let initial: Vec<(String, Tensor)> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                format!("param.{i}"),
                Tensor::randn(*s, (Kind::Float, Device::Cpu)),
            )
        })
        .collect();
    let mut inputs: Vec<(String, Tensor)> = initial
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    // gradients[client][step][parameter]
    let gradients: Vec<Vec<Vec<Tensor>>> = (0..clients)
        .map(|client| {
            (0..steps)
                .map(|step| {
                    shapes
                        .iter()
                        .enumerate()
                        .map(|(i, shape)| {
                            let gradient = Tensor::randn(*shape, (Kind::Float, Device::Cpu));
                            inputs.push((
                                format!("grad.{client}.{step}.{i}"),
                                gradient.shallow_clone(),
                            ));
                            gradient
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let inputs_path = dir.path().join("inputs.safetensors");
    save_safetensors(&inputs_path, &inputs).unwrap();
    let out = dir.path().join("reference.safetensors");
    let args = [
        clients.to_string(),
        steps.to_string(),
        lr.to_string(),
        topk.to_string(),
        chunk.to_string(),
        beta.to_string(),
        wd.to_string(),
    ];
    let mut paths: Vec<&Path> = vec![&inputs_path, &out];
    paths.extend(args.iter().map(Path::new));
    python("reference_demo.py", &paths);

    let config = DemoConfig {
        momentum_decay: beta,
        topk,
        chunk,
        weight_decay: wd,
        ..DemoConfig::default()
    };
    let mut optimizers: Vec<Demo> = (0..clients)
        .map(|_| Demo::new(&initial, config.clone()).unwrap())
        .collect();
    let weights: Vec<Tensor> = initial.iter().map(|(_, t)| t.copy()).collect();
    for step in 0..steps {
        let updates: Vec<SparseUpdate> = optimizers
            .iter_mut()
            .zip(&gradients)
            .map(|(demo, g)| demo.compress_step(&g[step], lr))
            .collect();
        optimizers[0].apply(&weights, &updates.iter().collect::<Vec<_>>(), lr);
    }
    for (i, weight) in weights.iter().enumerate() {
        let reference = tensor(&out, &format!("param.{i}"));
        // Sign updates either agree exactly or differ by 2·lr where the aggregate is within
        // rounding of zero; the DCTs are computed in different orders, so allow a handful.
        let flips = (weight - &reference)
            .abs()
            .gt(1e-6)
            .sum(Kind::Int64)
            .int64_value(&[]);
        let moved = (weight - &initial[i].1)
            .abs()
            .gt(1e-6)
            .sum(Kind::Int64)
            .int64_value(&[]);
        eprintln!(
            "param.{i}: {moved} of {} weights moved, {flips} differ from the reference",
            weight.numel()
        );
        assert!(
            flips as f64 <= 1e-3 * weight.numel() as f64,
            "param.{i}: {flips} of {} weights differ",
            weight.numel()
        );
        let delta_difference = (&optimizers[0].deltas()[i] - tensor(&out, &format!("delta.{i}")))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            delta_difference < 1e-5,
            "param.{i}: momentum differs by {delta_difference}"
        );
    }
}
