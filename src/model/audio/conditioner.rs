//! `AudioConditioner`: the whole audio branch for one call, chunk by chunk.
//! Talk PCM (TTS) and listen PCM (remote caller) go in; per chunk it returns
//! the talk and listen audio tokens for the DiT's Talk / Listen Audio
//! Attention: both streams are encoded in one batched wav2vec2 window
//! forward, resampled to video fps, masked AFTER the encoder (explicit masks
//! or energy VAD), and projected by the shared [`AudioProjection`].

use candle_core::Tensor;

use super::masks::{apply_frame_mask, validate_mask};
use super::projection::{AudioProjection, FRAMES_PER_LATENT};
use super::streaming::{AudioChunk, StreamingAudioEncoder};
use super::vad::VadConfig;
use super::wav2vec2::Wav2Vec2Model;
use super::AudioError;
use crate::config::ModelConfig;

/// Where a chunk's mask comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskSource {
    /// Energy VAD on the stream's own PCM.
    Vad,
    /// Caller-given per-video-frame mask: either the chunk's F frames (the
    /// projection's pad frames then repeat the edge values) or all
    /// `pad + F + pad` frames.
    Explicit(Vec<f32>),
}

/// Audio conditioning for one chunk.
#[derive(Debug, Clone)]
pub struct ChunkAudioTokens {
    pub index: u64,
    /// [1, chunk_frames, audio_tokens_per_frame, D]
    pub talk: Tensor,
    /// [1, chunk_frames, audio_tokens_per_frame, D]
    pub listen: Tensor,
    /// Masks actually applied to the chunk's F frames.
    pub talk_mask: Vec<f32>,
    pub listen_mask: Vec<f32>,
}

pub struct AudioConditioner {
    talk: StreamingAudioEncoder,
    listen: StreamingAudioEncoder,
    projection: AudioProjection,
}

impl AudioConditioner {
    /// `fps` and frames per chunk come from `cfg.stream` / `cfg.vae`.
    pub fn new(model: Wav2Vec2Model, projection: AudioProjection, cfg: &ModelConfig) -> Result<Self, AudioError> {
        let fps = cfg.stream.fps;
        let frames = cfg.stream.frames_per_chunk(&cfg.vae);
        if frames % FRAMES_PER_LATENT != 0 {
            return Err(AudioError::Config(format!(
                "{frames} video frames per chunk is not a whole number of latent frames"
            )));
        }
        if projection.proj_window() != cfg.audio.proj_window {
            return Err(AudioError::Config("projection and audio config disagree on proj_window".into()));
        }
        Ok(Self {
            talk: StreamingAudioEncoder::new(model.clone(), &cfg.audio, fps, frames)?,
            listen: StreamingAudioEncoder::new(model, &cfg.audio, fps, frames)?,
            projection,
        })
    }

    pub fn with_vad(mut self, vad: VadConfig) -> Self {
        self.talk = self.talk.with_vad(vad);
        self.listen = self.listen.with_vad(vad);
        self
    }

    pub fn push_talk(&mut self, pcm_16k: &[f32]) -> Result<(), AudioError> {
        self.talk.push(pcm_16k)
    }

    pub fn push_listen(&mut self, pcm_16k: &[f32]) -> Result<(), AudioError> {
        self.listen.push(pcm_16k)
    }

    /// Samples each stream must have received before the next chunk.
    pub fn samples_needed(&self) -> u64 {
        self.talk.samples_needed()
    }

    /// (talk, listen) samples pushed so far.
    pub fn pushed_samples(&self) -> (u64, u64) {
        (self.talk.pushed_samples(), self.listen.pushed_samples())
    }

    pub fn ready(&self) -> bool {
        self.talk.ready() && self.listen.ready()
    }

    pub fn next_chunk_index(&self) -> u64 {
        self.talk.next_chunk_index()
    }

    pub fn reset(&mut self) {
        self.talk.reset();
        self.listen.reset();
    }

    /// Encode, mask and project the next chunk of both streams.
    pub fn next_chunk(
        &mut self,
        talk_mask: &MaskSource,
        listen_mask: &MaskSource,
    ) -> Result<ChunkAudioTokens, AudioError> {
        if !self.ready() {
            let (t, l) = self.pushed_samples();
            return Err(AudioError::NotEnoughAudio {
                chunk: self.next_chunk_index(),
                needed: self.samples_needed(),
                have: t.min(l),
            });
        }
        // Check explicit masks before the encoders advance.
        let g = self.talk.geometry();
        let n = g.frames_per_chunk + 2 * g.pad_frames;
        let all_silent_vad = vec![0.0; n];
        full_mask(&all_silent_vad, g.pad_frames, talk_mask)?;
        full_mask(&all_silent_vad, g.pad_frames, listen_mask)?;
        let (talk, listen) = StreamingAudioEncoder::next_chunk_pair(&mut self.talk, &mut self.listen)?;
        let (talk_tokens, talk_mask) = self.project(&talk, talk_mask)?;
        let (listen_tokens, listen_mask) = self.project(&listen, listen_mask)?;
        Ok(ChunkAudioTokens { index: talk.index, talk: talk_tokens, listen: listen_tokens, talk_mask, listen_mask })
    }

    fn project(&self, chunk: &AudioChunk, source: &MaskSource) -> Result<(Tensor, Vec<f32>), AudioError> {
        let mask = full_mask(&chunk.voice_activity, chunk.pad_frames, source)?;
        let masked = apply_frame_mask(&chunk.features, &mask)?;
        let tokens = self.projection.forward_chunk(&masked, chunk.pad_frames)?;
        let core = mask.get(chunk.pad_frames..mask.len().saturating_sub(chunk.pad_frames)).unwrap_or_default().to_vec();
        Ok((tokens, core))
    }
}

/// The mask over all `pad + F + pad` frames of a chunk (`vad` has that length).
fn full_mask(vad: &[f32], pad: usize, source: &MaskSource) -> Result<Vec<f32>, AudioError> {
    let n = vad.len();
    let core = n.saturating_sub(2 * pad);
    match source {
        MaskSource::Vad => Ok(vad.to_vec()),
        MaskSource::Explicit(m) if m.len() == n => {
            validate_mask(m)?;
            Ok(m.clone())
        }
        MaskSource::Explicit(m) if m.len() == core && core > 0 => {
            validate_mask(m)?;
            let mut full = vec![m[0]; pad];
            full.extend_from_slice(m);
            full.extend(std::iter::repeat_n(m[core - 1], pad));
            Ok(full)
        }
        MaskSource::Explicit(m) => Err(AudioError::BadInput(format!(
            "explicit mask has {} frames; expected {core} (chunk) or {n} (chunk with pads)",
            m.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audio::InputNormalization;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn conditioner() -> (AudioConditioner, ModelConfig) {
        let cfg = ModelConfig::tiny();
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model =
            Wav2Vec2Model::new(&cfg.audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, vb.pp("wav2vec2"))
                .unwrap();
        let proj = AudioProjection::new(
            &cfg.audio,
            cfg.dit.hidden_size(),
            cfg.dit.audio_tokens_per_frame,
            vb.pp("audio_proj"),
        )
        .unwrap();
        (AudioConditioner::new(model, proj, &cfg).unwrap(), cfg)
    }

    #[test]
    fn talk_and_listen_tokens_per_chunk() -> anyhow::Result<()> {
        let (mut c, cfg) = conditioner();
        let talk: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.04).sin() * 0.3).collect();
        c.push_talk(&talk)?;
        assert!(matches!(c.next_chunk(&MaskSource::Vad, &MaskSource::Vad), Err(AudioError::NotEnoughAudio { .. })));
        c.push_listen(&vec![0.0; 16_000])?;
        let out = c.next_chunk(&MaskSource::Vad, &MaskSource::Vad)?;
        let shape = [1, cfg.stream.chunk_frames, cfg.dit.audio_tokens_per_frame, cfg.dit.hidden_size()];
        assert_eq!(out.talk.dims(), &shape);
        assert_eq!(out.listen.dims(), &shape);
        assert_eq!(out.talk_mask, vec![1.0; 12]);
        assert_eq!(out.listen_mask, vec![0.0; 12]);
        Ok(())
    }

    #[test]
    fn explicit_masks_and_errors() -> anyhow::Result<()> {
        let (mut c, _) = conditioner();
        let talk: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.04).sin() * 0.3).collect();
        c.push_talk(&talk)?;
        c.push_listen(&talk)?;
        let mut m = vec![1.0; 12];
        m[11] = 0.0;
        assert!(c.next_chunk(&MaskSource::Explicit(vec![1.0; 5]), &MaskSource::Vad).is_err());
        let out = c.next_chunk(&MaskSource::Explicit(m.clone()), &MaskSource::Explicit(vec![0.0; 12]))?;
        assert_eq!(out.talk_mask, m);
        // A fully masked stream gives the projection of all-zero features:
        // every latent frame gets the same tokens.
        let l = out.listen;
        let d = (l.narrow(1, 0, 1)? - l.narrow(1, 2, 1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6);
        Ok(())
    }
}
