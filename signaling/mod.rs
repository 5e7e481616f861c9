//! The signaling server (axum): sessions with bearer tokens, a WHIP
//! endpoint per session, the dialog backend's talk WebSocket, one-shot
//! `/say` and `/speak`, room signaling with on-demand avatar peers,
//! `/healthz`, `/metrics`, and the static call page from `web/`. Creating
//! an agent can require an API key (`api_key.rs`).
//!
//! The server drives calls only through [`agent::CallAgent`]; the product
//! agent is `crate::session::Session` (adapter in `session_agent.rs`).
//! See docs/API.md for the wire protocol.

pub mod agent;
pub mod api_key;
pub mod auth;
pub mod avatar_image;
pub mod config;
pub mod drain;
pub mod error;
pub mod expiry;
pub mod metrics;
pub mod rate_limit;
pub mod registry;
pub mod room_ws;
pub mod rooms;
pub mod sdp_check;
pub mod server;
pub mod session_agent;
pub mod sessions;
pub mod speech;
pub mod state;
pub mod talk_protocol;
pub mod talk_ws;
pub mod tts;
pub mod wav_input;
pub mod whip;

pub use agent::{AgentFactory, AgentStartError, CallAgent};
pub use config::ServerConfig;
pub use server::{router, serve};
pub use state::AppState;

/// `?token=` on any session route (for browsers that cannot set headers).
#[derive(Debug, Default, serde::Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
}
