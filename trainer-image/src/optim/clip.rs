//! Gradient clipping by global norm.

use tch::{Kind, Tensor};

/// The L2 norm of all of `tensors` together, summed in f64.
pub fn global_norm(tensors: &[Tensor]) -> f64 {
    tch::no_grad(|| {
        tensors
            .iter()
            .map(|t| {
                t.to_kind(Kind::Double)
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[])
            })
            .sum::<f64>()
            .sqrt()
    })
}

/// Scales `gradients` in place so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_global_norm(gradients: &mut [Tensor], max_norm: f64) -> f64 {
    let norm = global_norm(gradients);
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        tch::no_grad(|| {
            for gradient in gradients.iter_mut() {
                let _ = gradient.g_mul_scalar_(scale);
            }
        });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_only_above_the_limit() {
        let mut gradients = vec![Tensor::from_slice(&[3.0f32]), Tensor::from_slice(&[4.0f32])];
        assert!((clip_global_norm(&mut gradients, 10.0) - 5.0).abs() < 1e-9);
        assert_eq!(gradients[0].double_value(&[0]), 3.0);
        assert!((clip_global_norm(&mut gradients, 1.0) - 5.0).abs() < 1e-9);
        assert!((gradients[1].double_value(&[0]) - 0.8).abs() < 1e-5);
    }
}
