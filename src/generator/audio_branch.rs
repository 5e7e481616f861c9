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
        Ok(Self { talk, listen, projection })
    }

    pub fn ready(&self) -> bool {
        self.talk.ready() && self.listen.ready()
    }

    pub fn reset(&mut self) {
        self.talk.reset();
        self.listen.reset();
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
        Ok(AudioTokens { talk: project(&talk)?, listen: project(&listen)? })
    }
}
