//! Stage 1: the causal VAE. Loss per clip (video in [-1, 1]):
//! `L1 + L2 + edge_weight * L1(spatial gradients) + kl_weight * KL`, with
//! the reconstruction from a reparameterised sample `z = mu + sigma * eps`
//! decoded by the same streaming decoder used at inference (chunks of 3
//! latent frames, causal cache), so training and streaming decode agree.

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::model::vae::WanVae;

use super::data::ClipSource;
use super::params::ParamStore;
use super::runner::{Stage, StepLoss};
use super::TrainError;

/// Loss weights of stage 1.
#[derive(Debug, Clone, Copy)]
pub struct VaeLossWeights {
    pub kl: f64,
    pub edge: f64,
}

impl Default for VaeLossWeights {
    fn default() -> Self {
        Self { kl: 1e-4, edge: 0.5 }
    }
}

/// Stage 1 state.
pub struct VaeStage {
    cfg: ModelConfig,
    params: ParamStore,
    data: ClipSource,
    batch: usize,
    weights: VaeLossWeights,
    device: Device,
    seed: u64,
}

impl VaeStage {
    pub fn new(cfg: ModelConfig, data: ClipSource, batch: usize, weights: VaeLossWeights, seed: u64) -> Self {
        let device = Device::Cpu;
        Self { params: ParamStore::new(seed, &device), cfg, data, batch: batch.max(1), weights, device, seed }
    }

    /// (Re)build the VAE from the current variables.
    pub fn vae(&self) -> Result<WanVae, TrainError> {
        Ok(WanVae::new(&self.cfg.vae, self.params.var_builder())?)
    }
}

/// Mean absolute horizontal + vertical finite differences of `a - b`
/// (`[B, C, T, H, W]`): penalises blurred edges.
pub fn edge_l1(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let d = (a - b)?;
    let (h, w) = (d.dim(3)?, d.dim(4)?);
    let dy = (d.narrow(3, 1, h - 1)? - d.narrow(3, 0, h - 1)?)?.abs()?.mean_all()?;
    let dx = (d.narrow(4, 1, w - 1)? - d.narrow(4, 0, w - 1)?)?.abs()?.mean_all()?;
    dy + dx
}

impl Stage for VaeStage {
    fn name(&self) -> &'static str {
        "vae"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        self.vae().map(|_| ())
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let vae = self.vae()?;
        let mut clips = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            clips.push(self.data.clip(*cursor, &self.device)?.video);
            *cursor += 1;
        }
        let video = Tensor::cat(&clips, 0)?;
        let post = vae.encode(&video)?;
        let eps = crate::model::sampler::NoiseSource::new(self.seed ^ step.wrapping_mul(0x2545_F491)).sample(
            post.mu.shape().clone(),
            candle_core::DType::F32,
            &self.device,
        )?;
        let z = (&post.mu + (eps * (&post.logvar * 0.5)?.exp()?)?)?;
        let recon = vae.decode(&z)?;
        let l1 = (&recon - &video)?.abs()?.mean_all()?;
        let l2 = (&recon - &video)?.sqr()?.mean_all()?;
        let edge = edge_l1(&recon, &video)?;
        // KL(N(mu, sigma) || N(0, 1)), mean over latent elements.
        let kl = ((post.mu.sqr()? + post.logvar.exp()? - &post.logvar)? - 1.0)?.mean_all()? * 0.5;
        let kl = kl?;
        let loss = (((&l1 + &l2)? + (&edge * self.weights.edge)?)? + (&kl * self.weights.kl)?)?;
        let s = |t: &Tensor| t.to_scalar::<f32>().unwrap_or(f32::NAN);
        Ok((loss, vec![("l1", s(&l1)), ("l2", s(&l2)), ("edge", s(&edge)), ("kl", s(&kl))]))
    }
}
