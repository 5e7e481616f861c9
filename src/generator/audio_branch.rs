//! The generator's audio front end: talk and listen streaming wav2vec2
//! encoders (one batched forward per chunk), the per-branch voice-activity
//! masks applied to the features after the encoder, and the shared audio
//! projection to DiT audio tokens.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::GeneratorError;
use crate::config::ModelConfig;
use crate::model::audio::{
    apply_frame_mask, AudioError, AudioProjection, InputNormalization, StreamingAudioEncoder, Wav2Vec2Model,
};
use crate::model::dit::AudioTokens;

/// Talk + listen encoders and the projection.
pub struct AudioBranch {
    pub talk: StreamingAudioEncoder,
    pub listen: StreamingAudioEncoder,
    pub projection: AudioProjection,
    /// `DitConfig::listen_lookback_frames`.
    lookback: usize,
    /// The last `lookback` latent frames of listen tokens handed out (the
    /// next chunk's listen history); empty at the start of a stream.
    listen_history: Option<Tensor>,
}

fn err(what: &'static str) -> impl Fn(AudioError) -> GeneratorError {
    move |e| GeneratorError::Model(format!("{what}: {e}"))
}

impl AudioBranch {
    /// `wav2vec2_vb` at the `Wav2Vec2Model` root, `projection_vb` at
    /// `audio_proj`.
    pub fn new(
        config: &ModelConfig,
        wav2vec2_vb: VarBuilder,
        projection_vb: VarBuilder,
    ) -> Result<Self, GeneratorError> {
        let model = Wav2Vec2Model::new(&config.audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, wav2vec2_vb)
            .map_err(err("wav2vec2"))?;
        let fpc = config.stream.frames_per_chunk(&config.vae);
        let talk = StreamingAudioEncoder::new(model.clone(), &config.audio, config.stream.fps, fpc)
            .map_err(err("audio encoder"))?;
        let listen =
            StreamingAudioEncoder::new(model, &config.audio, config.stream.fps, fpc).map_err(err("audio encoder"))?;
        let projection = AudioProjection::new(
            &config.audio,
            config.dit.hidden_size(),
            config.dit.audio_tokens_per_frame,
            projection_vb,
        )
        .map_err(err("audio projection"))?;
        Ok(Self { talk, listen, projection, lookback: config.dit.listen_lookback_frames, listen_history: None })
    }

    pub fn ready(&self) -> bool {
        self.talk.ready() && self.listen.ready()
    }

    pub fn reset(&mut self) {
        self.talk.reset();
        self.listen.reset();
        self.listen_history = None;
    }

    /// Audio tokens `[1, C, tokens, D]` (talk, listen) of the next chunk, in `dtype`.
    pub fn next_tokens(&mut self, dtype: DType) -> Result<AudioTokens, GeneratorError> {
        let (talk, listen) =
            StreamingAudioEncoder::next_chunk_pair(&mut self.talk, &mut self.listen).map_err(err("audio encoder"))?;
        let project = |chunk: &crate::model::audio::AudioChunk| -> Result<Tensor, GeneratorError> {
            let masked = apply_frame_mask(&chunk.features, &chunk.voice_activity).map_err(err("audio mask"))?;
            let tokens = self.projection.forward_chunk(&masked, chunk.pad_frames).map_err(err("audio projection"))?;
            tokens.to_dtype(dtype).map_err(|e| GeneratorError::Model(e.to_string()))
        };
        let (talk, listen) = (project(&talk)?, project(&listen)?);
        let listen = self.with_listen_history(listen).map_err(|e| GeneratorError::Model(e.to_string()))?;
        Ok(AudioTokens { talk, listen })
    }

    /// `[1, C, n, D]` listen tokens -> `[1, h + C, n, D]` with the `h <=
    /// lookback` frames before them, and remembers the new last frames.
    fn with_listen_history(&mut self, listen: Tensor) -> candle_core::Result<Tensor> {
        if self.lookback == 0 {
            return Ok(listen);
        }
        let with_history = match self.listen_history.take() {
            Some(h) => Tensor::cat(&[&h, &listen], 1)?,
            None => listen,
        };
        let frames = with_history.dim(1)?;
        let keep = frames.min(self.lookback);
        self.listen_history = Some(with_history.narrow(1, frames - keep, keep)?.contiguous()?);
        Ok(with_history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The listen history is the last `lookback` frames handed out, across
    /// chunks; a reset forgets it.
    #[test]
    fn listen_history_carries_the_last_lookback_frames() {
        let mut config = ModelConfig::tiny();
        config.dit.listen_lookback_frames = 2;
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let mut branch = AudioBranch::new(&config, vb.pp("w2v"), vb.pp("audio_proj")).unwrap();
        let chunk = |v: f32| Tensor::full(v, (1, 3, 1, 2), &Device::Cpu).unwrap();
        let frame_values =
            |t: &Tensor| -> Vec<f32> { t.mean_keepdim(3).unwrap().flatten_all().unwrap().to_vec1().unwrap() };
        let first = branch.with_listen_history(chunk(1.0)).unwrap();
        assert_eq!(frame_values(&first), [1.0; 3], "no history at the start");
        let second = branch.with_listen_history(chunk(2.0)).unwrap();
        assert_eq!(frame_values(&second), [1.0, 1.0, 2.0, 2.0, 2.0]);
        branch.reset();
        assert_eq!(frame_values(&branch.with_listen_history(chunk(3.0)).unwrap()), [3.0; 3]);
    }
}
