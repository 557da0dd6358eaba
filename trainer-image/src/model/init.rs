//! Initial weights from the run seed, identical on every client whatever its device.
//!
//! Torch's CPU and CUDA generators produce different streams, and a process-wide generator is
//! shared with everything else that draws random numbers. Demeter's clients must all start from
//! the same weights, so each parameter is filled from its own counter-based stream keyed by the
//! run seed and the parameter's name: N(0, std²) for matrices (Box–Muller over SplitMix64), ones
//! for norm gains.

use tch::{Kind, Tensor};

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of the parameter name: a stable key, unlike std's randomized hasher.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01B3)
    })
}

/// `count` draws from N(0, std²), the i-th depending only on (`key`, i).
fn normal(key: u64, count: usize, std: f64) -> Vec<f32> {
    let uniform =
        |counter: u64| (splitmix64(key ^ splitmix64(counter)) >> 11) as f64 / (1u64 << 53) as f64;
    (0..count as u64)
        .map(|i| {
            let u1 = uniform(2 * i).max(f64::MIN_POSITIVE);
            let u2 = uniform(2 * i + 1);
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// Overwrites `parameters` with the initial weights of run `seed`.
pub fn initialize(parameters: &[(String, Tensor)], seed: u64, std: f64) {
    tch::no_grad(|| {
        for (name, tensor) in parameters {
            let mut tensor = tensor.shallow_clone();
            if name.ends_with("norm.weight") {
                let _ = tensor.fill_(1.0);
                continue;
            }
            let values = normal(seed ^ name_key(name), tensor.numel(), std);
            let source = Tensor::from_slice(&values)
                .view(tensor.size().as_slice())
                .to_kind(Kind::Float);
            tensor.copy_(&source);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_standard_normal_and_reproducible() {
        let draws = normal(9, 200_000, 1.0);
        let mean = draws.iter().map(|&x| f64::from(x)).sum::<f64>() / draws.len() as f64;
        let variance = draws
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / draws.len() as f64;
        assert!(
            mean.abs() < 0.01 && (variance - 1.0).abs() < 0.01,
            "mean {mean}, variance {variance}"
        );
        assert_eq!(draws[..10], normal(9, 10, 1.0)[..]);
        assert_ne!(draws[..10], normal(10, 10, 1.0)[..]);
    }
}
