//! Few-step flow-matching sampler as in Self-Forcing's causal inference
//! (`pipeline/causal_inference.py` with `warp_denoising_step: true`).
//!
//! Schedule: a descending list of timesteps in (0, 1000] (ours defaults to
//! `[1000, 666, 333]`), each warped by the flow shift exactly as Self-Forcing
//! warps its 4-step list `[1000, 750, 500, 250]`: with `s = t / 1000`,
//! `sigma = shift * s / (1 + (shift - 1) * s)` and the model is fed
//! `timestep = 1000 * sigma` (Self-Forcing indexes the 1000-step shifted
//! `FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True)` table at
//! `1000 - t`, which is the same number). StreamAvatar does not publish its
//! 3-step list; `[1000, 666, 333]` is the evenly spaced 3-step analogue.
//!
//! Step: the DiT predicts the flow velocity `v = noise - x0`, so
//! `x0 = x_t - sigma * v`; the next step re-noises with fresh noise:
//! `x_next = (1 - sigma_next) * x0 + sigma_next * noise`.
//! Noise comes from a seeded `StdRng`, so a stream is reproducible.

use candle_core::{DType, Device, Shape, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Errors of schedule construction.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("sampler: timestep list is empty")]
    Empty,
    #[error("sampler: timesteps must be in (0, 1000] and strictly descending, got {0:?}")]
    BadTimesteps(Vec<f64>),
    #[error("sampler: shift must be > 0, got {0}")]
    BadShift(f64),
}

/// Flow-matching shift warp of a noise level `s` in [0, 1].
pub fn warp_sigma(s: f64, shift: f64) -> f64 {
    shift * s / (1.0 + (shift - 1.0) * s)
}

/// One denoising step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerStep {
    /// Value fed to the DiT's timestep embedding (`1000 * sigma`).
    pub timestep: f64,
    /// Noise level of the input `x_t`.
    pub sigma: f64,
}

/// The warped few-step schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatchSchedule {
    steps: Vec<SamplerStep>,
}

impl FlowMatchSchedule {
    pub fn new(timesteps: &[f64], shift: f64) -> Result<Self, SamplerError> {
        if timesteps.is_empty() {
            return Err(SamplerError::Empty);
        }
        if !(shift > 0.0) || !shift.is_finite() {
            return Err(SamplerError::BadShift(shift));
        }
        let in_range = timesteps.iter().all(|t| t.is_finite() && *t > 0.0 && *t <= 1000.0);
        let descending = timesteps.windows(2).all(|w| w[0] > w[1]);
        if !in_range || !descending {
            return Err(SamplerError::BadTimesteps(timesteps.to_vec()));
        }
        let steps = timesteps
            .iter()
            .map(|t| {
                let sigma = warp_sigma(t / 1000.0, shift);
                SamplerStep { timestep: 1000.0 * sigma, sigma }
            })
            .collect();
        Ok(Self { steps })
    }

    /// The schedule of a stream config (`timesteps`, `shift`).
    pub fn from_config(cfg: &crate::config::StreamConfig) -> Result<Self, SamplerError> {
        Self::new(&cfg.timesteps, cfg.shift)
    }

    pub fn steps(&self) -> &[SamplerStep] {
        &self.steps
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Noise level after step `i` (0 after the last step).
    pub fn next_sigma(&self, i: usize) -> f64 {
        self.steps.get(i + 1).map_or(0.0, |s| s.sigma)
    }
}

/// `x0 = x_t - sigma * v`.
pub fn predict_x0(x_t: &Tensor, velocity: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
    x_t.sub(&velocity.affine(sigma, 0.0)?)
}

/// `x = (1 - sigma) * x0 + sigma * noise`.
pub fn renoise(x0: &Tensor, noise: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
    x0.affine(1.0 - sigma, 0.0)?.add(&noise.affine(sigma, 0.0)?)
}

/// Deterministic Gaussian noise from a seeded RNG.
pub struct NoiseSource {
    rng: StdRng,
}

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed) }
    }

    /// Standard normal noise of `shape` (drawn in f32 on the CPU, so the
    /// values do not depend on the device).
    pub fn sample(&mut self, shape: impl Into<Shape>, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let shape = shape.into();
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut self.rng);
                z
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warp_matches_self_forcing_table() {
        // Self-Forcing warps [1000, 750, 500, 250] with shift 5 to
        // [1000, 937.5, 833.33, 625.0].
        let s = FlowMatchSchedule::new(&[1000.0, 750.0, 500.0, 250.0], 5.0).unwrap();
        let ts: Vec<f64> = s.steps().iter().map(|x| x.timestep).collect();
        let want = [1000.0, 937.5, 833.333_333, 625.0];
        for (a, b) in ts.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{ts:?}");
        }
    }

    #[test]
    fn default_three_step_schedule() {
        let s = FlowMatchSchedule::new(&[1000.0, 666.0, 333.0], 5.0).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.steps()[0].sigma, 1.0);
        // 5 * 0.666 / (1 + 4 * 0.666) = 0.90869...
        assert!((s.steps()[1].sigma - 3.33 / 3.664).abs() < 1e-9);
        assert!((s.steps()[2].sigma - 1.665 / 2.332).abs() < 1e-9);
        assert_eq!(s.next_sigma(0), s.steps()[1].sigma);
        assert_eq!(s.next_sigma(2), 0.0);
        // shift 1 is the identity.
        let id = FlowMatchSchedule::new(&[1000.0, 500.0], 1.0).unwrap();
        assert_eq!(id.steps()[1].sigma, 0.5);
    }

    #[test]
    fn rejects_bad_lists() {
        assert_eq!(FlowMatchSchedule::new(&[], 5.0), Err(SamplerError::Empty));
        assert!(matches!(FlowMatchSchedule::new(&[500.0, 900.0], 5.0), Err(SamplerError::BadTimesteps(_))));
        assert!(matches!(FlowMatchSchedule::new(&[1001.0], 5.0), Err(SamplerError::BadTimesteps(_))));
        assert!(matches!(FlowMatchSchedule::new(&[0.0], 5.0), Err(SamplerError::BadTimesteps(_))));
        assert_eq!(FlowMatchSchedule::new(&[1000.0], 0.0), Err(SamplerError::BadShift(0.0)));
    }

    #[test]
    fn x0_and_renoise_invert_the_forward_process() {
        let dev = Device::Cpu;
        let mut n = NoiseSource::new(1);
        let x0 = n.sample((2, 3), DType::F32, &dev).unwrap();
        let noise = n.sample((2, 3), DType::F32, &dev).unwrap();
        let sigma = 0.7;
        let x_t = renoise(&x0, &noise, sigma).unwrap();
        let v = (&noise - &x0).unwrap();
        let back = predict_x0(&x_t, &v, sigma).unwrap();
        let err = (back - &x0).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err < 1e-5);
    }

    #[test]
    fn noise_is_seeded() {
        let dev = Device::Cpu;
        let a = NoiseSource::new(42).sample(16, DType::F32, &dev).unwrap().to_vec1::<f32>().unwrap();
        let b = NoiseSource::new(42).sample(16, DType::F32, &dev).unwrap().to_vec1::<f32>().unwrap();
        let c = NoiseSource::new(43).sample(16, DType::F32, &dev).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mean = a.iter().sum::<f32>() / 16.0;
        assert!(mean.abs() < 1.0);
    }
}
