//! AdamW (Loshchilov & Hutter), the baseline DeMo is measured against.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// AdamW's hyperparameters (the PyTorch defaults, but for weight decay, which is 0 like DeMo's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW's moment estimates for a list of parameters.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    first_moments: Vec<Tensor>,
    second_moments: Vec<Tensor>,
}

impl AdamW {
    /// Fresh moments for `parameters`.
    pub fn new(parameters: &[Tensor], config: AdamWConfig) -> Self {
        let zeros = || {
            parameters
                .iter()
                .map(|p| p.zeros_like().to_kind(Kind::Float))
                .collect()
        };
        Self {
            config,
            step: 0,
            first_moments: zeros(),
            second_moments: zeros(),
        }
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The moment buffers, first moments then second moments (for checkpoints).
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.first_moments, &self.second_moments)
    }

    /// Restores moments and step count (resuming from a checkpoint).
    pub fn load(&mut self, step: u64, first: &[Tensor], second: &[Tensor]) {
        self.step = step;
        tch::no_grad(|| {
            for (own, saved) in self.first_moments.iter_mut().zip(first) {
                own.copy_(saved);
            }
            for (own, saved) in self.second_moments.iter_mut().zip(second) {
                own.copy_(saved);
            }
        });
    }

    /// One update of `parameters` with `gradients` (the mean over all workers).
    pub fn step(&mut self, parameters: &[Tensor], gradients: &[Tensor], lr: f64) {
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2 = 1.0 - beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (((parameter, gradient), m), v) in parameters
                .iter()
                .zip(gradients)
                .zip(&mut self.first_moments)
                .zip(&mut self.second_moments)
            {
                let gradient = gradient.to_kind(Kind::Float);
                let _ = m.g_mul_scalar_(beta1).g_add_(&(&gradient * (1.0 - beta1)));
                let _ = v
                    .g_mul_scalar_(beta2)
                    .g_add_(&(gradient.square() * (1.0 - beta2)));
                let denominator = (&*v / bias2).sqrt() + eps;
                let mut parameter = parameter.shallow_clone();
                if weight_decay != 0.0 {
                    let _ = parameter.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = parameter.g_sub_(&(&*m / &denominator * (lr / bias1)));
            }
        });
    }
}
