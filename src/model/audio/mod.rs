//! The audio branch: raw 16 kHz talk / listen waveforms -> wav2vec2 hidden
//! states (50 Hz) -> video frame rate -> talk / listen masks (applied AFTER
//! the encoder, as in StreamAvatar) -> audio tokens per latent frame for the
//! DiT's Talk / Listen Audio Attention.
//!
//! * [`conditioner`]: `AudioConditioner`, talk + listen PCM -> DiT audio
//!   tokens per chunk (the entry point the generator uses).
//! * [`wav2vec2`]: transformers `Wav2Vec2Model` (base and large-lv60 layouts).
//! * [`frame_rate`]: time-aligned linear interpolation 50 Hz -> video fps.
//! * [`masks`]: per-video-frame talk / listen masks applied to features.
//! * [`vad`]: energy voice-activity detection deriving masks from PCM.
//! * [`projection`]: `AudioProjection` (`audio_proj.*`), features -> DiT tokens.
//! * [`stream_stats`]: running normalisation statistics for streaming.
//! * [`streaming`]: `StreamingAudioEncoder`, chunk-by-chunk features over a
//!   sliding window of left context + chunk + lookahead.

pub mod conditioner;
pub mod frame_rate;
pub mod masks;
pub mod projection;
pub mod stream_stats;
pub mod streaming;
pub mod vad;
pub mod wav2vec2;

pub use conditioner::{AudioConditioner, ChunkAudioTokens, MaskSource};
pub use frame_rate::FrameRateMap;
pub use masks::apply_frame_mask;
pub use projection::AudioProjection;
pub use streaming::{AudioChunk, ChunkGeometry, StreamingAudioEncoder};
pub use vad::{voice_activity, VadConfig};
pub use wav2vec2::{InputNormalization, Wav2Vec2Model, Wav2Vec2Output};

/// Errors of the audio branch.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("audio tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("invalid audio config: {0}")]
    Config(String),
    #[error("bad audio input: {0}")]
    BadInput(String),
    #[error("not enough audio for chunk {chunk}: need {needed} samples, have {have}")]
    NotEnoughAudio { chunk: u64, needed: u64, have: u64 },
    #[error("audio buffer full: {buffered} samples buffered, pushing {pushed} more exceeds the bound of {capacity}")]
    BufferFull { buffered: usize, pushed: usize, capacity: usize },
}
