//! Settings of the signaling server: limits, CORS origins, timeouts and the
//! template every new agent's `SessionSpec` is built from.

use std::path::PathBuf;
use std::time::Duration;

use super::api_key::ApiKeys;
use super::expiry::ExpiryPolicy;
use super::rate_limit::RateLimit;
use crate::config::ModelConfig;

/// Everything the server needs besides the agent factory.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Folder served at `/` (index.html, app.js, style.css); `None` = no page.
    pub web_dir: Option<PathBuf>,
    /// Model, weights and device handed to every agent.
    pub model: ModelConfig,
    pub weights: Vec<PathBuf>,
    pub device: String,
    /// Decoder of sessions that do not choose one (`"decoder"` in the body).
    pub decoder: crate::generator::DecoderKind,
    /// Concurrent agents (API sessions plus room avatars); more -> 503.
    pub max_sessions: usize,
    /// Seconds a client is told to wait (`Retry-After`) when full.
    pub retry_after_s: u64,
    /// Allowed CORS origins; `["*"]` = any; empty = same-origin only.
    pub cors_origins: Vec<String>,
    /// Time limit of one plain HTTP request (not of WebSocket connections).
    pub request_timeout: Duration,
    /// Body limit of SDP offers.
    pub max_sdp_bytes: usize,
    /// Body limit of session creation (image uploads, JSON with base64).
    pub max_image_bytes: usize,
    /// Largest accepted avatar image side, in pixels.
    pub max_image_side: u32,
    /// Body limit of `/say` WAV uploads.
    pub max_wav_bytes: usize,
    /// Longest accepted `/speak` text, in characters.
    pub max_speak_chars: usize,
    /// espeak-ng executable used by `/speak`.
    pub espeak_binary: PathBuf,
    /// Time limit of one espeak-ng run.
    pub tts_timeout: Duration,
    /// Largest talk WebSocket message (PCM frame or JSON), bytes.
    pub max_talk_message_bytes: usize,
    /// Peers per room (the avatar counts).
    pub max_room_peers: usize,
    /// Room sockets across all rooms (bounds the room state of the process).
    pub max_room_peers_total: usize,
    /// Largest room signaling message, bytes.
    pub max_room_message_bytes: usize,
    /// Messages queued to one room peer before it is dropped as too slow.
    pub room_peer_queue: usize,
    /// How often /metrics samples every session's `SessionStats`.
    pub stats_interval: Duration,
    /// On SIGTERM/SIGINT: how long running calls may go on before they are
    /// hung up (new sessions are refused from the signal on).
    pub drain_grace: Duration,
    /// When to end sessions that never connect or go idle (`expiry.rs`).
    pub expiry: ExpiryPolicy,
    /// Session-scoped HTTP requests per token (`rate_limit.rs`).
    pub token_rate: RateLimit,
    /// Keys required to start agents (`api_key.rs`); empty = open.
    pub api_keys: ApiKeys,
}

impl ServerConfig {
    /// Defaults for `model`; everything else at production-sane limits.
    pub fn new(model: ModelConfig) -> Self {
        Self {
            web_dir: None,
            model,
            weights: Vec::new(),
            device: "cpu".into(),
            decoder: Default::default(),
            max_sessions: 4,
            retry_after_s: 10,
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_sdp_bytes: 64 * 1024,
            max_image_bytes: 8 * 1024 * 1024,
            max_image_side: 4096,
            max_wav_bytes: 16 * 1024 * 1024,
            max_speak_chars: 2000,
            espeak_binary: PathBuf::from("espeak-ng"),
            tts_timeout: Duration::from_secs(20),
            max_talk_message_bytes: 128 * 1024,
            max_room_peers: 8,
            max_room_peers_total: 256,
            max_room_message_bytes: 64 * 1024,
            room_peer_queue: 64,
            stats_interval: Duration::from_secs(1),
            drain_grace: Duration::from_secs(30),
            expiry: ExpiryPolicy::default(),
            token_rate: RateLimit::default(),
            api_keys: ApiKeys::default(),
        }
    }
}
