//! The synth renderer's frames through a VAE: each stream is encoded
//! causally (first frame, then groups of 4) and decoded by the streaming
//! decoder in chunks of the config's latent frames, as the generator
//! decodes. A generator that decodes with this VAE cannot score better than
//! this on lip sync, listening motion or identity, so it is the ceiling of
//! a VAE before any DiT is trained on its latents (`eval --vae-roundtrip`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::ground_truth::GroundTruthModel;
use super::protocol::{EvalModel, ListenAudio};
use super::EvalError;
use crate::config::ModelConfig;
use crate::generator::reference::{frame_to_tensor, video_to_frames};
use crate::media::frame::RgbFrame;
use crate::model::vae::{patchify_to_frames, WanVae};
use crate::synth::ClipScript;

/// Ground truth, encoded and decoded by one VAE (see module docs).
pub struct VaeRoundTripModel {
    vae: WanVae,
    chunk_latents: usize,
    file: String,
}

fn model_err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Invalid(format!("VAE round trip: {e}"))
}

impl VaeRoundTripModel {
    /// The VAE of `file` (a `vae.safetensors` or a VAE training checkpoint)
    /// with `cfg`'s VAE config, on the CPU.
    pub fn load(cfg: &ModelConfig, file: &Path) -> Result<Self, EvalError> {
        let dev = Device::Cpu;
        let tensors = candle_core::safetensors::load(file, &dev)
            .map_err(|e| EvalError::Io { path: file.display().to_string(), reason: e.to_string() })?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let vae = WanVae::new(&cfg.vae, vb).map_err(model_err)?;
        Ok(Self { vae, chunk_latents: cfg.stream.chunk_frames.max(1), file: file.display().to_string() })
    }

    fn encode_group(
        &self,
        frames: &[RgbFrame],
        cache: &mut [crate::model::vae::CacheSlot],
    ) -> Result<Tensor, EvalError> {
        let dev = self.vae.device();
        let per_frame: Vec<Tensor> =
            frames.iter().map(|f| frame_to_tensor(f, DType::F32, dev)).collect::<Result<_, _>>()?;
        let video = Tensor::stack(&per_frame, 2).map_err(model_err)?; // [1, 3, T, H, W]
        let x = patchify_to_frames(&video, self.vae.config().patch_size).map_err(model_err)?;
        let moments = self.vae.encoder().encode_step(&x, cache).map_err(model_err)?;
        let z = self.vae.config().z_dim;
        // mu, [1, z, T', h, w]
        moments.narrow(2, 0, z).and_then(|m| m.permute((0, 2, 1, 3, 4))).map_err(model_err)
    }
}

impl EvalModel for VaeRoundTripModel {
    fn describe(&self) -> String {
        format!("ground truth through the VAE {} (encode, streaming decode)", self.file)
    }

    fn generate(
        &mut self,
        script: &ClipScript,
        listen: ListenAudio,
        n_frames: usize,
        sink: &mut dyn FnMut(&RgbFrame) -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        let mut truth = Vec::with_capacity(n_frames);
        GroundTruthModel.generate(script, listen, n_frames, &mut |f| {
            truth.push(f.clone());
            Ok(())
        })?;
        if truth.is_empty() {
            return Ok(());
        }
        // Complete the last group of 4 by repeating the last frame; only
        // the `n_frames` real ones reach the sink.
        while (truth.len() - 1) % 4 != 0 {
            truth.push(truth[truth.len() - 1].clone());
        }
        let mut cache = self.vae.encoder().new_cache();
        let mut decoder = self.vae.streaming_decoder();
        let mut latents = vec![self.encode_group(&truth[..1], &mut cache)?];
        let mut sent = 0usize;
        let mut emit = |latents: &mut Vec<Tensor>, sink: &mut dyn FnMut(&RgbFrame) -> Result<(), EvalError>| {
            let z = Tensor::cat(latents, 2).map_err(model_err)?;
            latents.clear();
            let video = decoder.decode_chunk(&z).map_err(model_err)?;
            for frame in video_to_frames(&video)? {
                if sent < n_frames {
                    sink(&frame)?;
                    sent += 1;
                }
            }
            Ok::<(), EvalError>(())
        };
        for group in truth[1..].chunks(4) {
            latents.push(self.encode_group(group, &mut cache)?);
            if latents.len() == self.chunk_latents {
                emit(&mut latents, sink)?;
            }
        }
        if !latents.is_empty() {
            emit(&mut latents, sink)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::SeededInitBackend;

    #[test]
    fn streaming_encode_matches_the_whole_clip_encode() -> anyhow::Result<()> {
        let cfg = ModelConfig::tiny();
        let vae = WanVae::new(&cfg.vae, SeededInitBackend::var_builder(3, DType::F32, &Device::Cpu))?;
        let video = Tensor::randn(0f32, 0.5, (1, 3, 9, 32, 32), &Device::Cpu)?;
        let whole = vae.encode(&video)?.mu;
        let x = patchify_to_frames(&video, cfg.vae.patch_size)?;
        let mut cache = vae.encoder().new_cache();
        let mut steps = vec![vae.encoder().encode_step(&x.narrow(1, 0, 1)?, &mut cache)?];
        for start in [1, 5] {
            steps.push(vae.encoder().encode_step(&x.narrow(1, start, 4)?, &mut cache)?);
        }
        let streamed = Tensor::cat(&steps, 1)?.narrow(2, 0, cfg.vae.z_dim)?.permute((0, 2, 1, 3, 4))?;
        let diff = (whole - streamed)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "streaming encode differs by {diff}");
        Ok(())
    }
}
