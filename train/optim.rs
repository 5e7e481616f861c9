//! AdamW (decoupled weight decay, PyTorch defaults) whose state — step
//! count and first / second moments per named variable — can be written to
//! and read from a safetensors file, so a resumed run continues exactly.
//! (candle-nn's `AdamW` keeps its moments private.)

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Tensor, Var};

/// Hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0 = off).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, max_grad_norm: 1.0 }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// AdamW over a fixed list of named variables.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> candle_core::Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { cfg, slots, step: 0 })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update from `grads`; returns the global gradient norm (before
    /// clipping). Variables without a gradient are left untouched.
    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<f32> {
        let mut sq = 0f64;
        for s in &self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        let clip = if self.cfg.max_grad_norm > 0.0 && norm > self.cfg.max_grad_norm {
            self.cfg.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else { continue };
            // Detached: a gradient can carry the op graph of its step (it is
            // computed from tracked tensors), and the moments would chain
            // every step's graph to the next: memory grew by ~1 GB/min in
            // the session-3 VAE run until the kernel killed it.
            let g = (g.detach() * clip)?;
            s.m = ((&s.m * b1)? + (&g * (1.0 - b1))?)?.detach();
            s.v = ((&s.v * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
            let mhat = (&s.m / bc1)?;
            let vhat = (&s.v / bc2)?;
            let update = (mhat / (vhat.sqrt()? + self.cfg.eps)?)?;
            let decayed = (s.var.as_tensor() * (1.0 - self.cfg.lr * self.cfg.weight_decay))?;
            s.var.set(&(decayed - (update * self.cfg.lr)?)?.detach())?;
        }
        Ok(norm as f32)
    }

    /// Moments as `m.<name>` / `v.<name>` tensors.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restore moments and the step count; every slot must be present.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> candle_core::Result<()> {
        for s in &mut self.slots {
            let (Some(m), Some(v)) = (tensors.get(&format!("m.{}", s.name)), tensors.get(&format!("v.{}", s.name)))
            else {
                candle_core::bail!("optimizer state lacks moments for `{}`", s.name)
            };
            if m.shape() != s.var.shape() || v.shape() != s.var.shape() {
                candle_core::bail!("optimizer state for `{}` has the wrong shape", s.name)
            }
            s.m = m.to_device(s.var.device())?;
            s.v = v.to_device(s.var.device())?;
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn minimises_a_quadratic_and_state_roundtrips() -> anyhow::Result<()> {
        let x = Var::new(&[3f32, -2.0], &Device::Cpu)?;
        let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.0, ..Default::default() };
        let mut opt = AdamW::new(vec![("x".into(), x.clone())], cfg)?;
        for _ in 0..100 {
            let loss = x.as_tensor().sqr()?.sum_all()?;
            opt.step(&loss.backward()?)?;
        }
        let end = x.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(end < 0.05, "loss {end}");
        let state = opt.state_tensors();
        let y = Var::new(&[0f32, 0.0], &Device::Cpu)?;
        let mut opt2 = AdamW::new(vec![("x".into(), y)], cfg)?;
        opt2.load_state(&state, opt.steps())?;
        assert_eq!(opt2.steps(), 100);
        assert!(opt2.load_state(&HashMap::new(), 0).is_err());
        Ok(())
    }

    /// The moments hold values, not the step's op graph (which would chain
    /// every step's forward and backward graph into memory).
    #[test]
    fn moments_do_not_keep_the_graph() -> anyhow::Result<()> {
        let w = Var::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let x = Var::new(&[[0.5f32], [-1.0]], &Device::Cpu)?;
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default())?;
        for _ in 0..3 {
            // d/dw of sum((w x)^2) is built from the tracked x: it has an op graph.
            let loss = w.as_tensor().matmul(x.as_tensor())?.sqr()?.sum_all()?;
            let grads = loss.backward()?;
            assert!(grads.get(w.as_tensor()).is_some_and(|g| g.track_op()));
            opt.step(&grads)?;
        }
        assert!(opt.slots.iter().all(|s| !s.m.track_op() && !s.v.track_op()));
        Ok(())
    }
}
