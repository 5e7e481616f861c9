//! Light decoder stage: trains the TAEHV-style light decoder
//! (`model::vae::light_decoder`, `--decoder light`) for a trained VAE, so a
//! config can decode with it instead of the VAE's own decoder (on the CPU
//! the `mini` light decoder costs ~40 % of the full one, docs/BENCHMARKS.md).
//!
//! The VAE is frozen: each clip is encoded to its posterior mean, normalised
//! like the DiT's latents (the light decoder takes normalized latents), and
//! the light decoder, streamed from the start of the clip like at inference,
//! learns to reproduce the clip itself: L1 + L2, and weighted, the edge
//! L1, the chroma L1, the face-region L1, the temporal L1 and the temporal
//! L1 inside the face (the terms of the VAE stage, see `vae_stage.rs`: the
//! face term keeps the eyes and mouth sharp, the temporal terms keep the
//! decoder from flickering, which buries the listening motion, and make it
//! follow head nods). Targets are the real frames,
//! not the VAE decoder's output, so the light decoder is not capped by the
//! VAE decoder's blur.
//!
//! Random square crops as in the VAE stage (`crop`): both networks are
//! fully convolutional.

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::model::vae::{LightDecoder, WanVae};

use super::data::ClipSource;
use super::params::ParamStore;
use super::runner::{Stage, StepLoss};
use super::vae_stage::{
    add_face_and_temporal_terms, check_crop, chroma_l1, edge_l1, load_clip_batch, FaceTemporalWeights,
};
use super::TrainError;

/// Scale of each MemBlock's last conv at initialisation (see `init`).
pub const RESIDUAL_INIT_SCALE: f64 = 0.1;

/// Loss weights of the light decoder stage.
#[derive(Debug, Clone, Copy)]
pub struct LightLossWeights {
    pub edge: f64,
    pub chroma: f64,
    /// Face-region term (0 = off).
    pub face: f64,
    /// Temporal (flicker) term (0 = off).
    pub temporal: f64,
    /// Temporal term inside the face (0 = off; needs `face > 0`).
    pub face_temporal: f64,
    /// Mouth term (region and temporal L1 inside the mouth box; 0 = off).
    pub mouth: f64,
    /// Head-motion term (changes over several frames inside the face; 0 = off).
    pub head_motion: f64,
}

impl Default for LightLossWeights {
    fn default() -> Self {
        Self { edge: 0.5, chroma: 0.5, face: 0.0, temporal: 0.0, face_temporal: 0.0, mouth: 0.0, head_motion: 0.0 }
    }
}

/// See module docs.
pub struct LightDecoderStage {
    cfg: ModelConfig,
    vae: WanVae,
    params: ParamStore,
    data: ClipSource,
    batch: usize,
    weights: LightLossWeights,
    device: Device,
    seed: u64,
    crop: Option<usize>,
}

impl LightDecoderStage {
    /// `vae`: the frozen, trained VAE (its latent statistics normalise);
    /// the stage trains on its device.
    pub fn new(
        cfg: ModelConfig,
        vae: WanVae,
        data: ClipSource,
        batch: usize,
        weights: LightLossWeights,
        seed: u64,
    ) -> Self {
        let device = vae.device().clone();
        Self {
            params: ParamStore::new(seed, &device),
            cfg,
            vae,
            data,
            batch: batch.max(1),
            weights,
            device,
            seed,
            crop: None,
        }
    }

    /// Train on random `side x side` crops.
    pub fn with_crop(mut self, side: usize) -> Result<Self, TrainError> {
        self.crop = Some(check_crop(&self.cfg, &self.data, side)?);
        Ok(self)
    }

    /// (Re)build the light decoder from the current variables.
    pub fn decoder(&self) -> Result<LightDecoder, TrainError> {
        Ok(LightDecoder::new(&self.cfg.light_decoder, &self.cfg.vae, self.params.var_builder())?)
    }
}

impl Stage for LightDecoderStage {
    fn name(&self) -> &'static str {
        "light_decoder"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        self.decoder()?;
        // Start every MemBlock near the identity: its residual branch's last
        // conv scaled by RESIDUAL_INIT_SCALE (a resumed run overwrites this).
        // With plain Kaiming weights the nine residual sums blow the first
        // outputs up (loss ~4-7 on [-1, 1] frames) and the run stalls at L1
        // ~0.19 (docs/TRAINING.md, session 7).
        for (name, var) in self.params.named_vars() {
            if name.ends_with(".conv.4.weight") {
                var.set(&(var.as_tensor() * RESIDUAL_INIT_SCALE)?)?;
            }
        }
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let decoder = self.decoder()?;
        let (video, mask) = load_clip_batch(
            &self.data,
            &self.device,
            self.batch,
            cursor,
            self.weights.face > 0.0 || self.weights.mouth > 0.0 || self.weights.head_motion > 0.0,
            self.weights.mouth > 0.0,
            self.crop,
            step,
            self.seed,
        )?;
        let z = self.vae.latent_norm().normalize(&self.vae.encode(&video)?.mu)?.detach();
        let recon = decoder.streaming().decode_chunk_unclamped(&z)?;
        let l1 = (&recon - &video)?.abs()?.mean_all()?;
        let l2 = (&recon - &video)?.sqr()?.mean_all()?;
        let edge = edge_l1(&recon, &video)?;
        let chroma = chroma_l1(&recon, &video)?;
        let loss = (((&l1 + &l2)? + (&edge * self.weights.edge)?)? + (&chroma * self.weights.chroma)?)?;
        let s = |t: &Tensor| t.to_scalar::<f32>().unwrap_or(f32::NAN);
        let mut parts = vec![("l1", s(&l1)), ("l2", s(&l2)), ("edge", s(&edge)), ("chroma", s(&chroma))];
        let weights = FaceTemporalWeights {
            edge: self.weights.edge,
            face: self.weights.face,
            temporal: self.weights.temporal,
            face_temporal: self.weights.face_temporal,
            mouth: self.weights.mouth,
            head_motion: self.weights.head_motion,
        };
        let loss = add_face_and_temporal_terms(loss, &mut parts, &recon, &video, mask.as_ref(), weights)?;
        Ok((loss, parts))
    }
}
