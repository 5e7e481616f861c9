//! Shared server state and the session lifecycle every entry point uses:
//! start an agent within capacity, authorize a request against a session,
//! end a session.

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;

use super::agent::{AgentFactory, AgentStartError};
use super::auth::{self, AuthCheck, SessionToken};
use super::config::ServerConfig;
use super::error::ApiError;
use super::metrics::{Metrics, Stage};
use super::registry::{Registry, SessionEntry, SessionOrigin};
use super::rooms::RoomHub;
use crate::media::frame::RgbFrame;
use crate::session::{SessionError, SessionSpec};

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub sessions: Registry,
    pub factory: Arc<dyn AgentFactory>,
    pub metrics: Arc<Metrics>,
    pub rooms: Arc<RoomHub>,
}

impl AppState {
    pub fn new(config: ServerConfig, factory: Arc<dyn AgentFactory>) -> Self {
        let rooms = RoomHub::new(config.max_room_peers);
        Self {
            sessions: Registry::new(config.max_sessions),
            config: Arc::new(config),
            factory,
            metrics: Arc::new(Metrics::new()),
            rooms: Arc::new(rooms),
        }
    }

    /// Start one agent (on a blocking thread) and register it.
    pub async fn start_session(
        &self,
        reference: Option<RgbFrame>,
        seed: Option<u64>,
        origin: SessionOrigin,
    ) -> Result<Arc<SessionEntry>, ApiError> {
        let reservation = self.sessions.reserve().map_err(|full| {
            self.metrics.rejected_full();
            ApiError::Full { max: full.max, retry_after_s: self.config.retry_after_s }
        })?;
        let spec = SessionSpec {
            model: self.config.model.clone(),
            weights: self.config.weights.clone(),
            device: self.config.device.clone(),
            reference,
            seed: seed.unwrap_or_else(rand::random),
        };
        let factory = self.factory.clone();
        let started = Instant::now();
        let agent = tokio::task::spawn_blocking(move || factory.start(spec))
            .await
            .map_err(|e| AgentStartError::Session(SessionError::Generator(format!("agent start panicked: {e}"))))??;
        self.metrics.observe(Stage::AgentStart, started.elapsed());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let entry = SessionEntry::new(id, SessionToken::generate(), agent, origin);
        let entry = self.sessions.insert(reservation, entry);
        self.metrics.session_created();
        tracing::info!(session = %entry.id, origin = ?entry.origin, "session started");
        Ok(entry)
    }

    /// Look a session up and check the request's bearer token.
    pub fn authorize(
        &self,
        id: &str,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Arc<SessionEntry>, ApiError> {
        let entry = self.sessions.get(id).ok_or_else(|| ApiError::UnknownSession(truncate_id(id)))?;
        match auth::check(&entry.token, auth::presented_token(headers, query_token)) {
            AuthCheck::Ok => Ok(entry),
            AuthCheck::Missing => Err(ApiError::MissingToken),
            AuthCheck::Wrong => Err(ApiError::WrongToken),
        }
    }

    /// Remove a session and close its agent. Idempotent.
    pub async fn end_session(&self, id: &str, why: &str) {
        if let Some(entry) = self.sessions.remove(id) {
            if matches!(entry.origin, SessionOrigin::Room { .. }) {
                self.rooms.remove_avatar_session(id);
            }
            entry.agent.close().await;
            self.metrics.forget_session(id);
            tracing::info!(session = %id, why, "session ended");
        }
    }

    /// Drop sessions whose agent died on its own; refresh metrics.
    pub async fn reap_and_sample(&self) {
        for entry in self.sessions.list() {
            if entry.agent.is_closed() {
                self.end_session(&entry.id, "agent closed").await;
            }
        }
        self.metrics.sample(&self.sessions);
    }
}

/// Ids echoed in errors are shortened (they are attacker-controlled text).
fn truncate_id(id: &str) -> String {
    id.chars().take(64).collect()
}
