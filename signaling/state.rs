//! Shared server state and the session lifecycle every entry point uses:
//! start an agent within capacity (not while draining), authorize a request
//! against a session (token, rate limit), end a session, reap dead and
//! expired sessions.

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;

use super::agent::{AgentFactory, AgentStartError};
use super::auth::{self, AuthCheck, SessionToken};
use super::config::ServerConfig;
use super::drain::Drain;
use super::error::ApiError;
use super::metrics::{Metrics, Stage};
use super::rate_limit::TokenBuckets;
use super::registry::{Registry, SessionEntry, SessionOrigin};
use super::rooms::RoomHub;
use crate::generator::DecoderKind;
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
    /// Set on SIGTERM/SIGINT (see `drain.rs`).
    pub drain: Arc<Drain>,
    /// Per-token request limits (see `rate_limit.rs`).
    pub token_buckets: Arc<TokenBuckets>,
}

impl AppState {
    pub fn new(config: ServerConfig, factory: Arc<dyn AgentFactory>) -> Self {
        let rooms = RoomHub::with_total_limit(config.max_room_peers, config.max_room_peers_total);
        let token_buckets = Arc::new(TokenBuckets::new(config.token_rate));
        Self {
            sessions: Registry::new(config.max_sessions),
            config: Arc::new(config),
            factory,
            metrics: Arc::new(Metrics::new()),
            rooms: Arc::new(rooms),
            drain: Arc::new(Drain::default()),
            token_buckets,
        }
    }

    /// Start one agent (on a blocking thread) and register it.
    pub async fn start_session(
        &self,
        reference: Option<RgbFrame>,
        seed: Option<u64>,
        decoder: Option<DecoderKind>,
        origin: SessionOrigin,
    ) -> Result<Arc<SessionEntry>, ApiError> {
        if self.drain.is_draining() {
            self.metrics.rejected_draining();
            return Err(ApiError::Draining { retry_after_s: self.config.retry_after_s });
        }
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
            decoder: decoder.unwrap_or(self.config.decoder),
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

    /// Look a session up, check the request's bearer token and the token's
    /// request rate; an accepted request counts as activity (`expiry.rs`).
    pub fn authorize(
        &self,
        id: &str,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Arc<SessionEntry>, ApiError> {
        let entry = self.sessions.get(id).ok_or_else(|| ApiError::UnknownSession(truncate_id(id)))?;
        match auth::check(&entry.token, auth::presented_token(headers, query_token)) {
            AuthCheck::Ok => {
                if let Err(wait) = self.token_buckets.check(&entry.id) {
                    self.metrics.rejected_rate_limited();
                    return Err(ApiError::RateLimited { retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64 });
                }
                entry.activity.touch();
                Ok(entry)
            }
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
            self.token_buckets.forget(id);
            self.metrics.forget_session(id);
            tracing::info!(session = %id, why, "session ended");
        }
    }

    /// Drop sessions whose agent died on its own and sessions that expired
    /// (never connected, idle: `expiry.rs`); refresh metrics.
    pub async fn reap_and_sample(&self) {
        let now = Instant::now();
        for entry in self.sessions.list() {
            if entry.agent.is_closed() {
                self.end_session(&entry.id, "agent closed").await;
                continue;
            }
            let liveness = entry.activity.liveness(entry.agent.stats().connected, now);
            if let Some(reason) = self.config.expiry.check(&liveness) {
                self.metrics.session_expired(reason);
                self.end_session(&entry.id, reason.as_str()).await;
            }
        }
        self.metrics.sample(&self.sessions);
    }
}

/// Ids echoed in errors are shortened (they are attacker-controlled text).
fn truncate_id(id: &str) -> String {
    id.chars().take(64).collect()
}
