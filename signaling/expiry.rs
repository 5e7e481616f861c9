//! Ending sessions nobody uses. A session whose peer has not connected
//! `connect_timeout` after its creation is ended (created and abandoned, or
//! an offer whose ICE never completed); so is a session without a connected
//! peer that saw no authorized request and no talk message for
//! `idle_timeout`. A session with a connected peer never expires here: the
//! agent itself ends when its peer goes away.
//!
//! The policy is a pure function of a session's [`Liveness`]; the server's
//! sampler (`AppState::reap_and_sample`) applies it every `stats_interval`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When sessions expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// From creation to a connected peer.
    pub connect_timeout: Duration,
    /// Without a connected peer and without requests.
    pub idle_timeout: Duration,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(180), idle_timeout: Duration::from_secs(300) }
    }
}

/// What the server knows about a session's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Since creation.
    pub age: Duration,
    /// Since the last authorized request or talk message (or creation).
    pub since_activity: Duration,
    pub connected_now: bool,
    pub ever_connected: bool,
}

/// Why a session was expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryReason {
    NeverConnected,
    Idle,
}

impl ExpiryReason {
    /// Log text and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryReason::NeverConnected => "never_connected",
            ExpiryReason::Idle => "idle",
        }
    }
}

impl ExpiryPolicy {
    /// `Some(reason)` when the session should end now.
    pub fn check(&self, l: &Liveness) -> Option<ExpiryReason> {
        if l.connected_now {
            None
        } else if !l.ever_connected && l.age >= self.connect_timeout {
            Some(ExpiryReason::NeverConnected)
        } else if l.since_activity >= self.idle_timeout {
            Some(ExpiryReason::Idle)
        } else {
            None
        }
    }
}

/// Lock-free activity record of one session (touched on every request).
#[derive(Debug)]
pub struct Activity {
    created: Instant,
    /// Milliseconds after `created` of the last activity.
    last_ms: AtomicU64,
    ever_connected: AtomicBool,
}

impl Activity {
    pub fn new(created: Instant) -> Self {
        Self { created, last_ms: AtomicU64::new(0), ever_connected: AtomicBool::new(false) }
    }

    /// Something used the session just now.
    pub fn touch(&self) {
        self.last_ms.fetch_max(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The session's liveness at `now`, given whether its peer is connected.
    pub fn liveness(&self, connected_now: bool, now: Instant) -> Liveness {
        if connected_now {
            self.ever_connected.store(true, Ordering::Relaxed);
        }
        let age = now.saturating_duration_since(self.created);
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Liveness {
            age,
            since_activity: age.saturating_sub(last),
            connected_now,
            ever_connected: self.ever_connected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ExpiryPolicy =
        ExpiryPolicy { connect_timeout: Duration::from_secs(60), idle_timeout: Duration::from_secs(300) };

    fn l(age: u64, since: u64, now: bool, ever: bool) -> Liveness {
        Liveness {
            age: Duration::from_secs(age),
            since_activity: Duration::from_secs(since),
            connected_now: now,
            ever_connected: ever,
        }
    }

    #[test]
    fn never_connected_sessions_expire_after_the_connect_timeout_even_when_polled() {
        assert_eq!(P.check(&l(59, 0, false, false)), None);
        assert_eq!(P.check(&l(60, 0, false, false)), Some(ExpiryReason::NeverConnected));
    }

    #[test]
    fn connected_sessions_never_expire_and_disconnected_ones_expire_when_idle() {
        assert_eq!(P.check(&l(10_000, 10_000, true, true)), None);
        assert_eq!(P.check(&l(10_000, 299, false, true)), None);
        assert_eq!(P.check(&l(10_000, 300, false, true)), Some(ExpiryReason::Idle));
    }

    #[test]
    fn activity_tracks_last_touch_and_remembers_a_connection() {
        let t0 = Instant::now() - Duration::from_secs(100);
        let a = Activity::new(t0);
        let now = t0 + Duration::from_secs(100);
        let before = a.liveness(false, now);
        assert!(before.since_activity >= Duration::from_secs(99) && !before.ever_connected);
        a.touch();
        assert!(a.liveness(false, Instant::now()).since_activity < Duration::from_secs(1));
        assert!(a.liveness(true, Instant::now()).ever_connected);
        assert!(a.liveness(false, Instant::now()).ever_connected, "a connection is remembered");
    }
}
