//! The call-agent contract the signaling server drives.
//!
//! The server never depends on how a call is implemented: it starts agents
//! through an [`AgentFactory`] and talks to each one through [`CallAgent`],
//! whose operations mirror `crate::session::Session` one to one (see
//! `session_agent.rs` for the adapter). Tests plug in their own agents.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::session::{SessionError, SessionSpec, SessionStats, TalkCommand, TalkEvent};

/// One running call agent (one avatar, at most one WebRTC peer).
pub trait CallAgent: Send + Sync + 'static {
    /// Apply a remote SDP offer and return the SDP answer.
    fn accept_offer<'a>(&'a self, offer_sdp: &'a str) -> BoxFuture<'a, Result<String, SessionError>>;
    /// Queue talk audio or a control command; never blocks.
    fn talk(&self, cmd: TalkCommand) -> Result<(), SessionError>;
    /// Talk events (speech started / done / cleared).
    fn subscribe_events(&self) -> broadcast::Receiver<TalkEvent>;
    /// Live numbers for the page and /metrics.
    fn stats(&self) -> SessionStats;
    /// Hang up and release everything the agent holds.
    fn close(&self) -> BoxFuture<'_, ()>;
    fn is_closed(&self) -> bool;
}

/// Starts agents. `start` may be slow (model loading): the server calls it
/// on a blocking thread.
pub trait AgentFactory: Send + Sync + 'static {
    fn start(&self, spec: SessionSpec) -> Result<Arc<dyn CallAgent>, AgentStartError>;
}

/// Why an agent could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AgentStartError {
    /// This build or configuration cannot run agents at all (API: 501).
    #[error("call agent not supported here: {0}")]
    Unsupported(String),
    /// The agent failed to start (API: 500).
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A factory for builds without a call agent: every start fails with a clear
/// "not supported" error, which the API reports as 501.
#[derive(Debug, Default, Clone)]
pub struct NoAgentFactory {
    pub reason: String,
}

impl AgentFactory for NoAgentFactory {
    fn start(&self, _spec: SessionSpec) -> Result<Arc<dyn CallAgent>, AgentStartError> {
        Err(AgentStartError::Unsupported(self.reason.clone()))
    }
}
