//! The synth renderer's frames through a VAE: each stream is encoded
//! causally (first frame, then groups of 4) and decoded by the streaming
//! decoder in chunks of the config's latent frames, as the generator
//! decodes. A generator that decodes with this VAE cannot score better than
//! this on lip sync, listening motion or identity, so it is the ceiling of
//! a VAE before any DiT is trained on its latents (`eval --vae-roundtrip`).
//! With a light decoder (`--light-decoder FILE`) the normalized posterior
//! means are decoded by it instead, as `--decoder light` generates: the
//! ceiling of that VAE + light decoder pair.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::ground_truth::GroundTruthModel;
use super::protocol::{EvalModel, ListenAudio};
use super::EvalError;
use crate::config::ModelConfig;
use crate::generator::frame_decoder::FrameDecoder;
use crate::generator::reference::frame_to_tensor;
use crate::media::frame::RgbFrame;
use crate::model::vae::{patchify_to_frames, LightDecoder, WanVae};
use crate::synth::ClipScript;

/// Ground truth, encoded and decoded by one VAE (see module docs).
pub struct VaeRoundTripModel {
    vae: WanVae,
    /// Decode with this instead of the VAE's decoder, and its file.
    light: Option<(LightDecoder, String)>,
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
        let vae = WanVae::new(&cfg.vae, load_tensors(file)?).map_err(model_err)?;
        Ok(Self::new(cfg, vae, file.display().to_string()))
    }

    /// `vae` (described as `file`) with `cfg`'s decoder chunking.
    pub fn new(cfg: &ModelConfig, vae: WanVae, file: String) -> Self {
        Self { vae, light: None, chunk_latents: cfg.stream.chunk_frames.max(1), file }
    }

    /// Decode with the light decoder of `file` (a `train light_decoder`
    /// checkpoint or `light_decoder.safetensors`) instead of the VAE's own.
    pub fn with_light_decoder(self, cfg: &ModelConfig, file: &Path) -> Result<Self, EvalError> {
        let light = LightDecoder::new(&cfg.light_decoder, &cfg.vae, load_tensors(file)?)
            .map_err(|e| EvalError::Invalid(format!("light decoder {}: {e}", file.display())))?;
        Ok(self.decoding_with(light, file.display().to_string()))
    }

    /// Decode with `light` (described as `file`).
    pub fn decoding_with(mut self, light: LightDecoder, file: String) -> Self {
        self.light = Some((light, file));
        self
    }

    /// The posterior mean of one group, normalized as the DiT's latents.
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
        let mu = moments.narrow(2, 0, z).and_then(|m| m.permute((0, 2, 1, 3, 4))).map_err(model_err)?;
        self.vae.latent_norm().normalize(&mu).map_err(model_err)
    }
}

fn load_tensors(file: &Path) -> Result<candle_nn::VarBuilder<'static>, EvalError> {
    let dev = Device::Cpu;
    let tensors = candle_core::safetensors::load(file, &dev)
        .map_err(|e| EvalError::Io { path: file.display().to_string(), reason: e.to_string() })?;
    Ok(candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev))
}

impl EvalModel for VaeRoundTripModel {
    fn describe(&self) -> String {
        match &self.light {
            Some((_, light)) => format!(
                "ground truth through the VAE {} (encode) and the light decoder {light} (streaming decode)",
                self.file
            ),
            None => format!("ground truth through the VAE {} (encode, streaming decode)", self.file),
        }
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
        let mut decoder = match &self.light {
            Some((light, _)) => FrameDecoder::Light(light.streaming()),
            None => FrameDecoder::Full { decoder: self.vae.streaming_decoder(), norm: self.vae.latent_norm().clone() },
        };
        let mut latents = vec![self.encode_group(&truth[..1], &mut cache)?];
        let mut sent = 0usize;
        let mut emit = |latents: &mut Vec<Tensor>, sink: &mut dyn FnMut(&RgbFrame) -> Result<(), EvalError>| {
            let z = Tensor::cat(latents, 2).map_err(model_err)?;
            latents.clear();
            for frame in decoder.decode_frames(&z, &Device::Cpu)? {
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
    use crate::synth::{script_clip, ClipSpec};

    fn streamed_frames(model: &mut VaeRoundTripModel, script: &ClipScript, n: usize) -> Vec<RgbFrame> {
        let mut frames = Vec::new();
        model
            .generate(script, ListenAudio::Partner, n, &mut |f| {
                frames.push(f.clone());
                Ok(())
            })
            .unwrap();
        frames
    }

    #[test]
    fn light_decoder_round_trip_streams_every_frame_and_differs_from_the_vae_decoder() -> anyhow::Result<()> {
        let cfg = ModelConfig::tiny();
        let dev = Device::Cpu;
        let size = cfg.stream.width;
        let script = script_clip(&ClipSpec::new(1 << 32, 0, 1.0, size))?;
        let vae = || WanVae::new(&cfg.vae, SeededInitBackend::var_builder(3, DType::F32, &dev));
        let light =
            LightDecoder::new(&cfg.light_decoder, &cfg.vae, SeededInitBackend::var_builder(4, DType::F32, &dev))?;
        // 18 frames: the first frame, 4 groups of 4 and a partial group;
        // more latent frames than one decoder chunk.
        let n = 18;
        let mut full = VaeRoundTripModel::new(&cfg, vae()?, "vae".into());
        let mut with_light = VaeRoundTripModel::new(&cfg, vae()?, "vae".into()).decoding_with(light, "light".into());
        assert!(with_light.describe().contains("light decoder light"), "{}", with_light.describe());
        let (a, b) = (streamed_frames(&mut full, &script, n), streamed_frames(&mut with_light, &script, n));
        assert_eq!((a.len(), b.len()), (n, n));
        for f in a.iter().chain(&b) {
            assert_eq!((f.width, f.height), (size, size));
        }
        assert!(a.iter().zip(&b).any(|(x, y)| x.data != y.data), "the light decoder was not used");
        Ok(())
    }

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
