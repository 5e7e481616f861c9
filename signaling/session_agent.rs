//! The product call agent: `crate::session::Session` behind the server's
//! [`CallAgent`] / [`AgentFactory`] traits. Each new session gets its own
//! avatar source (the streaming generator) from `build_source`.
//!
//! Wiring (merge step): add `pub mod session_agent;` to `signaling/mod.rs`
//! and hand `SessionAgentFactory::new(build_source)` to `AppState::new` in
//! the `serve` arm of `src/main.rs`.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use super::agent::{AgentFactory, AgentStartError, CallAgent};
use crate::generator::AvatarSource;
use crate::session::{Session, SessionError, SessionOptions, SessionSpec, SessionStats, TalkCommand, TalkEvent};

impl CallAgent for Session {
    fn accept_offer<'a>(&'a self, offer_sdp: &'a str) -> BoxFuture<'a, Result<String, SessionError>> {
        Box::pin(Session::accept_offer(self, offer_sdp))
    }
    fn talk(&self, cmd: TalkCommand) -> Result<(), SessionError> {
        Session::talk(self, cmd)
    }
    fn subscribe_events(&self) -> broadcast::Receiver<TalkEvent> {
        Session::subscribe_events(self)
    }
    fn stats(&self) -> SessionStats {
        Session::stats(self)
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(Session::close(self))
    }
    fn is_closed(&self) -> bool {
        Session::is_closed(self)
    }
}

/// Builds the avatar source (model) for a session spec.
pub type SourceBuilder = dyn Fn(&SessionSpec) -> Result<Box<dyn AvatarSource>, String> + Send + Sync;

/// Starts one `Session` per call.
pub struct SessionAgentFactory {
    build_source: Arc<SourceBuilder>,
    options: SessionOptions,
}

impl SessionAgentFactory {
    pub fn new(
        build_source: impl Fn(&SessionSpec) -> Result<Box<dyn AvatarSource>, String> + Send + Sync + 'static,
    ) -> Self {
        Self::with_options(build_source, SessionOptions::default())
    }

    /// Every session starts with `options` (ICE servers, timeouts).
    pub fn with_options(
        build_source: impl Fn(&SessionSpec) -> Result<Box<dyn AvatarSource>, String> + Send + Sync + 'static,
        options: SessionOptions,
    ) -> Self {
        Self { build_source: Arc::new(build_source), options }
    }
}

impl AgentFactory for SessionAgentFactory {
    fn start(&self, spec: SessionSpec) -> Result<Arc<dyn CallAgent>, AgentStartError> {
        let source = (self.build_source)(&spec).map_err(|e| AgentStartError::Session(SessionError::Generator(e)))?;
        Ok(Arc::new(Session::start_with(spec, source, self.options.clone())?))
    }
}
