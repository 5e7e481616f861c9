//! `SeededInitBackend`: deterministic random weights for a model built
//! without a checkpoint (the `tiny` preset before trained weights exist).
//! Every tensor is drawn from an RNG seeded by (seed, tensor name), so the
//! values do not depend on construction order, and a name asked twice gets
//! the same tensor.
//!
//! Init policy (PyTorch-like, since candle's default hint is "zeros"):
//! a `Const(0)` hint on a `*weight`/`weight_*`/`*gamma` tensor is treated as "no hint":
//! rank >= 2 weights get Kaiming-normal (fan-in, gain 1), rank-1 weights and
//! norm gains get ones; `scale_shift_table`/`prompt_embeds` get N(0, 1/sqrt(d));
//! everything else honours the hint.
//!
//! On CPU the values come from a seeded `StdRng` (bit-identical everywhere).
//! On a GPU they are drawn on the device by cuRAND, seeded per tensor the
//! same way (deterministic for a device, but different values from the CPU
//! draw): the `full` config's ~5 B parameters take seconds there instead of
//! minutes of host RNG and copies.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

pub struct SeededInitBackend {
    seed: u64,
    cache: Mutex<HashMap<String, Tensor>>,
}

/// FNV-1a, stable across runs and platforms.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl SeededInitBackend {
    pub fn new(seed: u64) -> Self {
        Self { seed, cache: Mutex::new(HashMap::new()) }
    }

    /// A `VarBuilder` with deterministic random weights.
    pub fn var_builder(seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Self::new(seed)), dtype, device.clone())
    }

    fn effective_init(name: &str, shape: &Shape, hint: Init) -> Init {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let default_zero = matches!(hint, Init::Const(v) if v == 0.0);
        if leaf == "scale_shift_table" || leaf == "prompt_embeds" {
            let d = shape.dims().last().copied().unwrap_or(1).max(1) as f64;
            return Init::Randn { mean: 0.0, stdev: 1.0 / d.sqrt() };
        }
        // `weight_g` / `weight_v` / `original0/1`: weight norm, where an
        // all-zero `v` would give 0/0.
        let is_weight =
            leaf.ends_with("weight") || leaf.starts_with("weight_") || leaf == "gamma" || leaf.starts_with("original");
        if default_zero && is_weight {
            if shape.rank() >= 2 {
                return candle_nn::init::DEFAULT_KAIMING_NORMAL;
            }
            return Init::Const(1.0);
        }
        hint
    }

    /// The distribution a tensor is drawn from: the init policy with
    /// Kaiming resolved to its normal / uniform bounds.
    fn distribution(name: &str, shape: &Shape, hint: Init) -> Draw {
        match Self::effective_init(name, shape, hint) {
            Init::Const(v) => Draw::Const(v),
            Init::Randn { mean, stdev } => Draw::Normal { mean, std: stdev },
            Init::Uniform { lo, up } => Draw::Uniform { lo, up },
            Init::Kaiming { dist, fan, non_linearity } => {
                let fan = fan.for_shape(shape).max(1);
                let std = non_linearity.gain() / (fan as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Normal => Draw::Normal { mean: 0.0, std },
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        Draw::Uniform { lo: -b, up: b }
                    }
                }
            }
        }
    }

    /// Host draw from a `StdRng` seeded by (seed, tensor name).
    fn draw(&self, name: &str, shape: &Shape, hint: Init) -> Vec<f32> {
        let n = shape.elem_count();
        let mut rng = StdRng::seed_from_u64(self.seed ^ fnv1a(name));
        match Self::distribution(name, shape, hint) {
            Draw::Const(v) => vec![v as f32; n],
            Draw::Normal { mean, std } => (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (mean + std * z) as f32
                })
                .collect(),
            Draw::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..=up) as f32).collect(),
        }
    }

    /// The same distribution drawn in f32 by the device's own generator,
    /// reseeded with (seed, tensor name).
    fn draw_on_device(&self, name: &str, shape: &Shape, hint: Init, dev: &Device) -> candle_core::Result<Tensor> {
        dev.set_seed(self.seed ^ fnv1a(name))?;
        match Self::distribution(name, shape, hint) {
            Draw::Const(v) => Tensor::full(v as f32, shape, dev),
            Draw::Normal { mean, std } => Tensor::randn(mean as f32, std as f32, shape, dev),
            Draw::Uniform { lo, up } => Tensor::rand(lo as f32, up as f32, shape, dev),
        }
    }
}

/// A resolved init distribution.
enum Draw {
    Const(f64),
    Normal { mean: f64, std: f64 },
    Uniform { lo: f64, up: f64 },
}

impl SimpleBackend for SeededInitBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut cache =
            self.cache.lock().map_err(|_| candle_core::Error::Msg("seeded weights cache poisoned".into()))?;
        if let Some(t) = cache.get(name) {
            if t.shape() != &s {
                candle_core::bail!("seeded weights: `{name}` asked with shape {s:?} and {:?}", t.shape());
            }
            return t.to_dtype(dtype)?.to_device(dev);
        }
        let t = if dev.is_cpu() {
            let values = self.draw(name, &s, h);
            Tensor::from_vec(values, s, &Device::Cpu)?.to_dtype(dtype)?
        } else {
            self.draw_on_device(name, &s, h, dev)?.to_dtype(dtype)?
        };
        cache.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("seeded weights: `{name}` must be requested with a shape")
    }

    /// A random model has every optional module (e.g. the talk/listen audio
    /// attention); only the shape-less `prompt_embeds` is reported absent, so
    /// `load_prompt_embeds` asks for it with its full shape.
    fn contains_tensor(&self, name: &str) -> bool {
        !super::is_unshaped(name) && !super::is_measured_stat(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_any_order() {
        let a = SeededInitBackend::var_builder(7, DType::F32, &Device::Cpu);
        let b = SeededInitBackend::var_builder(7, DType::F32, &Device::Cpu);
        let a1 = a.get((4, 3), "x.weight").unwrap();
        let a2 = a.get(5, "y.bias").unwrap();
        let b2 = b.get(5, "y.bias").unwrap();
        let b1 = b.get((4, 3), "x.weight").unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a1), v(&b1));
        assert_eq!(v(&a2), v(&b2));
        // A weight with the default hint is random, not zeros.
        assert!(v(&a1).iter().any(|x| *x != 0.0));
        let c = SeededInitBackend::var_builder(8, DType::F32, &Device::Cpu);
        assert_ne!(v(&a1), v(&c.get((4, 3), "x.weight").unwrap()));
        // Norm gains default to one.
        assert_eq!(v(&a.get(3, "norm.weight").unwrap()), vec![1.0; 3]);
    }
}
