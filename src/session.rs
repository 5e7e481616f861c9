//! One call: wires the WebRTC peer (`rtc`) to the media pipeline (`media`)
//! and the generator (`generator`). Listen audio from the remote peer and
//! talk audio from the dialog backend go in; H.264 video and Opus audio go
//! out, paced by one media clock. Barge-in (`TalkCommand::Clear`) drops
//! queued talk audio at once.
//!
//! The signaling server only sees the types below and [`Session`].
//!
//! Internals: `talk_queue` (bounded talk audio with utterance markers),
//! `pacer` (the sans-IO media clock and fall-behind policy), `runtime`
//! (the generator thread, the pacing task, the video encoder thread and
//! the remote-audio task).

use std::time::Duration;

pub mod pacer;
mod runtime;
pub mod talk_queue;

pub use runtime::{Session, SessionOptions};

/// Everything needed to start one agent.
#[derive(Clone, Debug)]
pub struct SessionSpec {
    pub model: crate::config::ModelConfig,
    /// Weight files; empty = the preset's bundled weights.
    pub weights: Vec<std::path::PathBuf>,
    /// "cpu", "cuda:0" or "cuda:0,cuda:1" (DiT, VAE).
    pub device: String,
    /// Avatar reference image, already decoded.
    pub reference: Option<crate::media::frame::RgbFrame>,
    /// Deterministic noise seed.
    pub seed: u64,
    /// Full or light VAE decoder.
    pub decoder: crate::generator::DecoderKind,
}

/// Errors a session reports to the signaling layer.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("malformed SDP offer: {0}")]
    BadSdp(String),
    #[error("session already has a peer connection")]
    AlreadyConnected,
    #[error("session is closed")]
    Closed,
    #[error("bad talk audio: {0}")]
    BadAudio(String),
    #[error("generator failed: {0}")]
    Generator(String),
    #[error("webrtc error: {0}")]
    Rtc(String),
}

/// Commands from the dialog backend (talk WebSocket, /say).
#[derive(Debug, Clone)]
pub enum TalkCommand {
    /// Mono PCM16 samples at `sample_rate` Hz (8000..=48000).
    Pcm { sample_rate: u32, samples: Vec<i16> },
    /// Barge-in: drop all queued talk audio now.
    Clear,
    /// The current utterance is complete.
    End,
}

/// Events back to the dialog backend.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TalkEvent {
    /// The first sample of an utterance reached the outgoing audio track.
    SpeechStarted,
    /// The utterance played out completely.
    SpeechDone { played_ms: u64 },
    /// A `clear` cut the utterance; `played_ms` of it were actually played.
    SpeechCleared { played_ms: u64 },
}

/// Live numbers for the page and /metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionStats {
    pub connected: bool,
    pub fps: f64,
    /// Audio-in to frame-out latency (talk audio in -> heard with its frames).
    pub latency_ms: f64,
    pub frames_sent: u64,
    pub frames_repeated: u64,
    pub chunks_skipped: u64,
    pub talk_queue_ms: u64,
    /// Frames that arrived after their playout slot and were dropped.
    pub frames_late: u64,
    /// PLI/FIR keyframe requests received from the remote.
    pub keyframe_requests: u64,
}

/// Time budget for a WebRTC negotiation.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
