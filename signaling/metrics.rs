//! Prometheus metrics of the server (`GET /metrics`, text format 1.0.0).
//! Session counts come from the registry; per-session fps, latency, queue
//! depth and frame counters are sampled from every agent's `SessionStats`
//! on an interval and on each scrape; negotiation and agent start latency
//! are observed by the handlers.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use super::expiry::ExpiryReason;
use super::registry::Registry;
use crate::session::SessionStats;

type Labels = Vec<(String, String)>;
type F64Gauge = Gauge<f64, AtomicU64>;

/// Stages whose latency is recorded in `streamavatar_stage_latency_seconds`.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Agent start (model load, reference encode) on session creation.
    AgentStart,
    /// SDP offer in -> SDP answer out.
    Negotiation,
    /// Audio in -> generated frame out (the agent's own measurement).
    AudioToFrame,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::AgentStart => "agent_start",
            Stage::Negotiation => "negotiation",
            Stage::AudioToFrame => "audio_to_frame",
        }
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metrics plus the last stats seen per session (to turn cumulative
/// session counters into increments).
pub struct Metrics {
    registry: PromRegistry,
    sessions_active: Gauge,
    sessions_created: Counter,
    rejected_full: Counter,
    rejected_draining: Counter,
    rejected_rate_limited: Counter,
    sessions_expired: Family<Vec<(String, String)>, Counter>,
    session_fps: Family<Labels, F64Gauge>,
    session_latency_ms: Family<Labels, F64Gauge>,
    session_talk_queue_ms: Family<Labels, Gauge>,
    session_connected: Family<Labels, Gauge>,
    frames_sent: Counter,
    frames_repeated: Counter,
    chunks_skipped: Counter,
    stage_latency: Family<Labels, Histogram, fn() -> Histogram>,
    last: Mutex<HashMap<String, SessionStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn session_labels(id: &str) -> Labels {
    vec![("session".to_string(), id.to_string())]
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = PromRegistry::with_prefix("streamavatar");
        let m = Self {
            sessions_active: Gauge::default(),
            sessions_created: Counter::default(),
            rejected_full: Counter::default(),
            rejected_draining: Counter::default(),
            rejected_rate_limited: Counter::default(),
            sessions_expired: Family::default(),
            session_fps: Family::default(),
            session_latency_ms: Family::default(),
            session_talk_queue_ms: Family::default(),
            session_connected: Family::default(),
            frames_sent: Counter::default(),
            frames_repeated: Counter::default(),
            chunks_skipped: Counter::default(),
            stage_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            last: Mutex::new(HashMap::new()),
            registry: PromRegistry::default(),
        };
        registry.register("sessions_active", "Live call agents", m.sessions_active.clone());
        registry.register("sessions_created", "Call agents started since boot", m.sessions_created.clone());
        registry.register(
            "sessions_rejected_full",
            "Session requests refused because the server was at capacity",
            m.rejected_full.clone(),
        );
        registry.register(
            "sessions_rejected_draining",
            "Session requests refused because the server was draining (SIGTERM)",
            m.rejected_draining.clone(),
        );
        registry.register(
            "requests_rate_limited",
            "Session-scoped requests refused with 429 by the per-token rate limit",
            m.rejected_rate_limited.clone(),
        );
        registry.register(
            "sessions_expired",
            "Sessions ended by the server because they never connected or went idle",
            m.sessions_expired.clone(),
        );
        registry.register("session_fps", "Video frames per second sent, per session", m.session_fps.clone());
        registry.register(
            "session_latency_ms",
            "Audio-in to frame-out latency of the last chunk, per session",
            m.session_latency_ms.clone(),
        );
        registry.register(
            "session_talk_queue_ms",
            "Talk audio queued and not yet played, per session (queue depth)",
            m.session_talk_queue_ms.clone(),
        );
        registry.register("session_connected", "1 when the session has a connected peer", m.session_connected.clone());
        registry.register("frames_sent", "Video frames sent to peers", m.frames_sent.clone());
        registry.register(
            "frames_repeated",
            "Frames repeated because generation fell behind",
            m.frames_repeated.clone(),
        );
        registry.register(
            "chunks_skipped",
            "Generated chunks dropped because generation fell behind",
            m.chunks_skipped.clone(),
        );
        registry.register(
            "stage_latency_seconds",
            "Latency per stage (agent_start, negotiation, audio_to_frame)",
            m.stage_latency.clone(),
        );
        Self { registry, ..m }
    }

    pub fn session_created(&self) {
        self.sessions_created.inc();
    }

    pub fn rejected_full(&self) {
        self.rejected_full.inc();
    }

    pub fn rejected_draining(&self) {
        self.rejected_draining.inc();
    }

    pub fn rejected_rate_limited(&self) {
        self.rejected_rate_limited.inc();
    }

    pub fn session_expired(&self, reason: ExpiryReason) {
        self.sessions_expired.get_or_create(&vec![("reason".to_string(), reason.as_str().to_string())]).inc();
    }

    pub fn observe(&self, stage: Stage, elapsed: Duration) {
        self.stage_latency
            .get_or_create(&vec![("stage".to_string(), stage.label().to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// Record one sample of a session's stats.
    pub fn record_stats(&self, id: &str, stats: &SessionStats) {
        let labels = session_labels(id);
        self.session_fps.get_or_create(&labels).set(stats.fps);
        self.session_latency_ms.get_or_create(&labels).set(stats.latency_ms);
        self.session_talk_queue_ms.get_or_create(&labels).set(i64::try_from(stats.talk_queue_ms).unwrap_or(i64::MAX));
        self.session_connected.get_or_create(&labels).set(i64::from(stats.connected));
        if stats.connected && stats.latency_ms > 0.0 {
            self.observe(Stage::AudioToFrame, Duration::from_secs_f64(stats.latency_ms / 1000.0));
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = last.entry(id.to_string()).or_default();
        self.frames_sent.inc_by(stats.frames_sent.saturating_sub(prev.frames_sent));
        self.frames_repeated.inc_by(stats.frames_repeated.saturating_sub(prev.frames_repeated));
        self.chunks_skipped.inc_by(stats.chunks_skipped.saturating_sub(prev.chunks_skipped));
        *prev = stats.clone();
    }

    /// Drop a finished session's labelled series.
    pub fn forget_session(&self, id: &str) {
        let labels = session_labels(id);
        self.session_fps.remove(&labels);
        self.session_latency_ms.remove(&labels);
        self.session_talk_queue_ms.remove(&labels);
        self.session_connected.remove(&labels);
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Sample every live session (drops series of sessions that are gone).
    pub fn sample(&self, sessions: &Registry) {
        let live = sessions.list();
        self.sessions_active.set(live.len() as i64);
        let gone: Vec<String> = {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            last.keys().filter(|id| !live.iter().any(|e| &e.id == *id)).cloned().collect()
        };
        for id in gone {
            self.forget_session(&id);
        }
        for entry in live {
            self.record_stats(&entry.id, &entry.agent.stats());
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_become_series_and_counter_increments() {
        let m = Metrics::new();
        m.session_created();
        let mut s =
            SessionStats { connected: true, fps: 23.5, latency_ms: 180.0, frames_sent: 10, ..Default::default() };
        m.record_stats("abc", &s);
        s.frames_sent = 25;
        s.frames_repeated = 3;
        m.record_stats("abc", &s);
        m.observe(Stage::Negotiation, Duration::from_millis(40));
        let text = m.render();
        assert!(text.contains("streamavatar_session_fps{session=\"abc\"} 23.5"), "{text}");
        assert!(text.contains("streamavatar_frames_sent_total 25"), "{text}");
        assert!(text.contains("streamavatar_frames_repeated_total 3"), "{text}");
        assert!(text.contains("streamavatar_sessions_created_total 1"), "{text}");
        assert!(text.contains("stage=\"negotiation\""), "{text}");
        assert!(text.contains("stage=\"audio_to_frame\""), "{text}");
        m.forget_session("abc");
        assert!(!m.render().contains("session=\"abc\""));
    }
}
