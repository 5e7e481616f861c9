//! Graceful drain on SIGTERM/SIGINT. From the signal on, new sessions are
//! refused (`POST /v1/sessions` and room `request_avatar`: 503 `draining`
//! with `Retry-After`; `/readyz` answers 503 so the pod leaves the Service
//! endpoints); running calls go on until their clients hang up, at most
//! `drain_grace`; then the remaining calls are hung up cleanly (RTCP BYE,
//! peer close, talk sockets closed with 1001) and `serve` returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::state::AppState;

/// The server's drain flag.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
}

impl Drain {
    /// Start draining; true the first time.
    pub fn begin(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Sessions live when the drain began.
    pub sessions_at_start: usize,
    /// Sessions still live at the end of the grace period, hung up by the server.
    pub hung_up: usize,
    pub waited: Duration,
}

/// Refuse new sessions, wait for the live ones to end (at most `grace`),
/// then end the rest.
pub async fn drain_sessions(state: &AppState, grace: Duration) -> DrainOutcome {
    state.drain.begin();
    let started = Instant::now();
    let sessions_at_start = state.sessions.active();
    tracing::info!(sessions = sessions_at_start, grace_s = grace.as_secs_f64(), "draining: new sessions refused");
    loop {
        // Agents that ended on their own leave the table here.
        state.reap_and_sample().await;
        let left = state.sessions.active() + state.sessions.starting();
        let elapsed = started.elapsed();
        if left == 0 || elapsed >= grace {
            break;
        }
        tokio::time::sleep((grace - elapsed).min(Duration::from_millis(200))).await;
    }
    let remaining = state.sessions.list();
    let hung_up = remaining.len();
    for entry in remaining {
        state.end_session(&entry.id, "server draining: grace period over").await;
    }
    let outcome = DrainOutcome { sessions_at_start, hung_up, waited: started.elapsed() };
    tracing::info!(
        sessions = sessions_at_start,
        hung_up,
        waited_s = format!("{:.1}", outcome.waited.as_secs_f64()),
        "drain complete"
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_is_idempotent() {
        let d = Drain::default();
        assert!(!d.is_draining());
        assert!(d.begin());
        assert!(!d.begin());
        assert!(d.is_draining());
    }
}
