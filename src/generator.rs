//! The streaming generator: push talk / listen PCM (16 kHz mono f32), pull
//! chunks of RGB frames. `AvatarSource` is the contract the call agent
//! (`session`) drives; `StreamingGenerator` (in [`streaming`]) is the real
//! StreamAvatar model behind it.

use crate::media::frame::RgbFrame;

pub mod audio_branch;
pub mod devices;
pub mod factory;
pub mod frame_decoder;
pub mod reference;
pub mod streaming;
pub mod vae_stage;

pub use audio_branch::AudioBranch;
pub use devices::DevicePlan;
pub use frame_decoder::DecoderKind;
pub use streaming::{GeneratorOptions, GeneratorWeights, StreamingGenerator};

/// Errors of a frame source.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("not enough audio pushed for the next chunk: need {needed} samples per branch, have {have}")]
    NotEnoughAudio { needed: usize, have: usize },
    #[error("model error: {0}")]
    Model(String),
    #[error("bad reference image: {0}")]
    BadReference(String),
}

/// One generated chunk (C latent frames -> C*4 video frames).
#[derive(Debug, Clone)]
pub struct VideoChunk {
    /// Chunk index since the last reset (0, 1, 2, ...).
    pub index: u64,
    /// Media time of the first frame since the last reset, in 16 kHz samples
    /// of the pushed audio: frames of chunk k show audio samples
    /// `[k * samples_per_chunk, (k + 1) * samples_per_chunk)`.
    pub audio_sample_start: u64,
    pub frames: Vec<RgbFrame>,
    /// Wall time of each stage for this chunk (zeros for sources without
    /// stages).
    pub timings: ChunkTimings,
}

/// Per-stage wall time of one chunk, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkTimings {
    /// Talk + listen wav2vec2, masks and audio projection.
    pub audio_ms: f64,
    /// One entry per DiT forward (denoising steps, plus the clean re-run
    /// with `CacheUpdate::CleanRerun`).
    pub dit_step_ms: Vec<f64>,
    /// Streaming VAE decode of the chunk and conversion to RGB.
    pub vae_ms: f64,
}

impl ChunkTimings {
    pub fn dit_ms(&self) -> f64 {
        self.dit_step_ms.iter().sum()
    }

    pub fn total_ms(&self) -> f64 {
        self.audio_ms + self.dit_ms() + self.vae_ms
    }
}

/// Anything that turns talk/listen audio into avatar video chunk by chunk.
///
/// Timing contract: chunk k covers audio samples `[k*S, (k+1)*S)` with
/// `S = samples_per_chunk()`. `next_chunk` may be called once at least
/// `(k+1)*S + lookahead_samples()` samples were pushed to *each* branch
/// (push silence to a branch that has nothing); otherwise it returns
/// `NotEnoughAudio`.
pub trait AvatarSource: Send {
    fn fps(&self) -> u32;
    /// (width, height) of the frames.
    fn frame_size(&self) -> (usize, usize);
    fn frames_per_chunk(&self) -> usize;
    /// 16 kHz samples per chunk (frames_per_chunk / fps seconds).
    fn samples_per_chunk(&self) -> usize;
    /// 16 kHz samples of future audio needed beyond a chunk.
    fn lookahead_samples(&self) -> usize;
    fn push_talk(&mut self, pcm_16k: &[f32]);
    fn push_listen(&mut self, pcm_16k: &[f32]);
    /// True when `next_chunk` would not return `NotEnoughAudio`.
    fn ready(&self) -> bool;
    fn next_chunk(&mut self) -> Result<VideoChunk, GeneratorError>;
    /// Chunks that may be in flight at once. 1 (the default): the source is
    /// driven by `next_chunk` alone. 2: its VAE runs on its own thread and it
    /// is driven by `begin_chunk` (audio + DiT of the next chunk; returns
    /// while the VAE of the previous one may still run) and
    /// `finish_chunk` / `try_finish_chunk` (frames, in order).
    fn pipeline_depth(&self) -> usize {
        1
    }
    /// Start the next chunk (see `pipeline_depth`); same audio rule as
    /// `next_chunk`.
    fn begin_chunk(&mut self) -> Result<(), GeneratorError> {
        Err(GeneratorError::Model("this source is not pipelined; call next_chunk".into()))
    }
    /// The oldest begun chunk, waiting for its frames.
    fn finish_chunk(&mut self) -> Result<VideoChunk, GeneratorError> {
        Err(GeneratorError::Model("this source is not pipelined; call next_chunk".into()))
    }
    /// The oldest begun chunk if its frames are ready.
    fn try_finish_chunk(&mut self) -> Option<Result<VideoChunk, GeneratorError>> {
        None
    }
    /// Chunks begun and not finished.
    fn chunks_in_flight(&self) -> usize {
        0
    }
    /// Start over with a new reference image (RGB frame of any size).
    fn reset(&mut self, reference: Option<&RgbFrame>) -> Result<(), GeneratorError>;
}
