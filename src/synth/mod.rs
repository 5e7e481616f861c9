//! Procedural talking/listening avatar videos: training data for the
//! bundled mini StreamAvatar model (real weights are not downloadable here).
//!
//! A clip is a deterministic function of `(identity id, seed, seconds, size)`:
//!
//! * [`identity`] — seeded cartoon people; training and held-out id ranges.
//! * [`conversation`] — alternating talk / listen turns from a sentence bank
//!   (`sentences.txt`, with a held-out subset), synthesised by [`espeak`]
//!   (espeak-ng with exact phoneme timing) into 16 kHz talk and listen tracks.
//! * [`phonemes`] — phonemes -> visemes -> per-frame mouth shape.
//! * [`motion`] — per-frame behaviour at 24 fps (blinks, breathing, sway,
//!   talking mouth/nods/gestures, listening reactions with a delay).
//! * [`render`] — the anti-aliased SDF rasteriser; [`avatar`] draws a person;
//!   [`framing`] is the camera (the design-space window a frame shows).
//! * [`clip`] — [`clip::render_clip`] / [`clip::script_clip`]: the in-process
//!   API (frames, audio, per-frame ground truth) for training code.
//! * [`dataset`] — the on-disk writer behind `streamavatar synth`.

pub mod avatar;
pub mod clip;
pub mod conversation;
pub mod dataset;
pub mod espeak;
pub mod framing;
pub mod identity;
pub mod motion;
pub mod phonemes;
pub mod render;
pub mod rng;

pub use clip::{render_clip, script_clip, Clip, ClipScript, ClipSpec, FrameTruth};
pub use dataset::{write_dataset, DatasetSpec, DatasetSummary, FrameFormat};
pub use identity::{Identity, IdentitySplit, HELDOUT_IDENTITY_END, HELDOUT_IDENTITY_START};

/// Errors of the synthetic data generator.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Espeak(#[from] espeak::EspeakError),
    #[error("resampling speech to 16 kHz: {0}")]
    Resample(#[from] crate::media::resample::ResampleError),
    #[error("invalid synth request: {0}")]
    InvalidSpec(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("encoding {path}: {message}")]
    Encode { path: std::path::PathBuf, message: String },
}
