//! Fuzzes the payload decoder: millions of randomly damaged payloads (byte edits, truncations,
//! extensions, with and without a recomputed hash) and random byte strings. Prints how each case
//! ended; any panic aborts the run.
//!
//! `make fuzz` (FUZZ_CASES overrides the default of 1,000,000).

use std::collections::BTreeMap;

use demeter_trainer::commands::Table;
use demeter_trainer::demo::{Compressor, ValueEncoding};
use demeter_trainer::payload::{self, decode, describe, encode};
use sha2::Digest;
use tch::{Device, Kind, Tensor};

/// xorshift64*: a small, fast, reproducible source of mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn rehash(bytes: &mut [u8]) {
    if bytes.len() >= payload::HASH_LEN {
        let body = bytes.len() - payload::HASH_LEN;
        let hash = sha2::Sha256::digest(&bytes[..body]);
        bytes[body..].copy_from_slice(&hash);
    }
}

fn outcome(result: Result<impl Sized, payload::PayloadError>) -> String {
    match result {
        Ok(_) => "accepted".into(),
        Err(error) => format!("{error:?}")
            .split([' ', '(', '{'])
            .next()
            .unwrap_or("?")
            .to_owned(),
    }
}

fn main() {
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let shapes: &[&[usize]] = &[&[128, 64], &[64], &[97], &[2, 32, 48]];
    let names = ["a.weight", "b.weight", "c.bias", "d.kernel"];
    let encodings = [ValueEncoding::F32, ValueEncoding::Bf16, ValueEncoding::Sign];
    tch::manual_seed(0);
    let samples: Vec<(Compressor, Vec<u8>)> = encodings
        .iter()
        .map(|&values| {
            let compressor = Compressor::new(
                names.iter().copied().zip(shapes.iter().copied()),
                32,
                8,
                values,
                Device::Cpu,
            );
            let tensors: Vec<Tensor> = shapes
                .iter()
                .map(|s| {
                    Tensor::randn(
                        s.iter().map(|&d| d as i64).collect::<Vec<_>>(),
                        (Kind::Float, Device::Cpu),
                    )
                })
                .collect();
            let bytes = encode(
                &compressor.compress_all(&tensors),
                &payload::UNCOMMITTED,
                compressor.layouts(),
            );
            (compressor, bytes)
        })
        .collect();

    let mut rng = Rng(0x5EED);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let started = std::time::Instant::now();
    for case in 0..cases {
        let (compressor, original) = &samples[case % samples.len()];
        let mut bytes = if case % 10 == 9 {
            (0..rng.below(600)).map(|_| rng.next() as u8).collect()
        } else {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            match rng.below(4) {
                0 => bytes.truncate(rng.below(bytes.len() + 1)),
                1 => bytes.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                _ => {}
            }
            bytes
        };
        // Most cases get a valid hash, so the structural checks behind it are what is fuzzed.
        if rng.below(8) != 0 {
            rehash(&mut bytes);
        }
        let values = compressor.values();
        *outcomes
            .entry(format!(
                "decode: {}",
                outcome(decode(&bytes, compressor.layouts(), values, Device::Cpu))
            ))
            .or_default() += 1;
        *outcomes
            .entry(format!("describe: {}", outcome(describe(&bytes))))
            .or_default() += 1;
    }
    let mut table = Table::new(&["outcome", "cases"]);
    for (name, count) in &outcomes {
        table.row(vec![name.clone(), count.to_string()]);
    }
    println!("{table}");
    println!(
        "{cases} cases, no panic, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
