//! The table of live sessions: capacity reservations, per-session token,
//! agent handle, WHIP connection state and talk-socket occupancy. Plain
//! synchronous state (std mutexes held for map operations only); the HTTP
//! handlers are thin shells around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use super::agent::CallAgent;
use super::auth::SessionToken;
use super::expiry::Activity;

/// Where a session came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOrigin {
    /// `POST /v1/sessions`.
    Api,
    /// `request_avatar` in a room: the avatar's room and peer id.
    Room { room: String, peer_id: String },
}

/// WHIP state of one session (one peer connection at most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhipState {
    Idle,
    /// An offer is being answered.
    Negotiating,
    /// Answered; `resource` is the last path segment of the Location URL.
    Connected {
        resource: String,
    },
}

/// Refusals of WHIP state transitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipConflict {
    #[error("session already has a peer connection (DELETE it first)")]
    AlreadyConnected,
    #[error("another offer for this session is being answered")]
    Negotiating,
}

/// One live session.
pub struct SessionEntry {
    pub id: String,
    pub token: SessionToken,
    pub agent: Arc<dyn CallAgent>,
    pub origin: SessionOrigin,
    pub created: Instant,
    /// Last use and connection history (see `expiry.rs`).
    pub activity: Activity,
    whip: Mutex<WhipState>,
    talk_busy: AtomicBool,
    closed_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for SessionEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEntry").field("id", &self.id).field("origin", &self.origin).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these short critical sections cannot leave the
    // plain data inconsistent; keep serving instead of propagating poison.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionEntry {
    pub fn new(id: String, token: SessionToken, agent: Arc<dyn CallAgent>, origin: SessionOrigin) -> Self {
        let created = Instant::now();
        Self {
            id,
            token,
            agent,
            origin,
            created,
            activity: Activity::new(created),
            whip: Mutex::new(WhipState::Idle),
            talk_busy: AtomicBool::new(false),
            closed_tx: watch::channel(false).0,
        }
    }

    pub fn whip_state(&self) -> WhipState {
        lock(&self.whip).clone()
    }

    /// Idle -> Negotiating. The returned guard moves the state on to
    /// Connected ([`Negotiation::succeed`]) or, when dropped without success
    /// (error, timeout, client gone, panic), back to Idle.
    pub fn begin_negotiation(self: &Arc<Self>) -> Result<Negotiation, WhipConflict> {
        let mut s = lock(&self.whip);
        match *s {
            WhipState::Idle => {
                *s = WhipState::Negotiating;
                Ok(Negotiation { entry: self.clone(), succeeded: false })
            }
            WhipState::Negotiating => Err(WhipConflict::Negotiating),
            WhipState::Connected { .. } => Err(WhipConflict::AlreadyConnected),
        }
    }

    /// True when `resource` is the current WHIP resource.
    pub fn owns_resource(&self, resource: &str) -> bool {
        matches!(&*lock(&self.whip), WhipState::Connected { resource: r } if r == resource)
    }

    /// Claim the single talk socket; the guard frees it on drop.
    pub fn claim_talk(self: &Arc<Self>) -> Option<TalkClaim> {
        self.talk_busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| TalkClaim(self.clone()))
    }

    /// Resolves when the session is removed (tasks attached to it stop).
    pub fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    fn mark_closed(&self) {
        self.closed_tx.send_replace(true);
    }
}

/// An offer being answered; see [`SessionEntry::begin_negotiation`].
pub struct Negotiation {
    entry: Arc<SessionEntry>,
    succeeded: bool,
}

impl Negotiation {
    /// Negotiating -> Connected with WHIP resource `resource`.
    pub fn succeed(mut self, resource: String) {
        let mut s = lock(&self.entry.whip);
        if *s == WhipState::Negotiating {
            *s = WhipState::Connected { resource };
        }
        self.succeeded = true;
    }
}

impl Drop for Negotiation {
    fn drop(&mut self) {
        if !self.succeeded {
            let mut s = lock(&self.entry.whip);
            if *s == WhipState::Negotiating {
                *s = WhipState::Idle;
            }
        }
    }
}

/// Exclusive use of a session's talk socket.
pub struct TalkClaim(Arc<SessionEntry>);

impl Drop for TalkClaim {
    fn drop(&mut self) {
        self.0.talk_busy.store(false, Ordering::Release);
    }
}

/// The session table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server is at its session capacity ({max})")]
pub struct Full {
    pub max: usize,
}

/// A capacity slot held while an agent starts; released on drop unless
/// turned into a session by [`Registry::insert`].
pub struct Reservation {
    registry: Arc<RegistryInner>,
    armed: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.registry.table).reserved -= 1;
        }
    }
}

struct Table {
    sessions: HashMap<String, Arc<SessionEntry>>,
    /// Slots held by agents still starting.
    reserved: usize,
    total_created: u64,
}

struct RegistryInner {
    table: Mutex<Table>,
    max: usize,
}

/// All live sessions, shared by the handlers.
#[derive(Clone)]
pub struct Registry(Arc<RegistryInner>);

impl Registry {
    pub fn new(max_sessions: usize) -> Self {
        Self(Arc::new(RegistryInner {
            table: Mutex::new(Table { sessions: HashMap::new(), reserved: 0, total_created: 0 }),
            max: max_sessions,
        }))
    }

    /// Hold a slot for an agent about to start.
    pub fn reserve(&self) -> Result<Reservation, Full> {
        let mut t = lock(&self.0.table);
        if t.sessions.len() + t.reserved >= self.0.max {
            return Err(Full { max: self.0.max });
        }
        t.reserved += 1;
        Ok(Reservation { registry: self.0.clone(), armed: true })
    }

    /// Turn a reservation into a live session.
    pub fn insert(&self, mut reservation: Reservation, entry: SessionEntry) -> Arc<SessionEntry> {
        let entry = Arc::new(entry);
        let mut t = lock(&self.0.table);
        t.reserved -= 1;
        reservation.armed = false;
        t.total_created += 1;
        t.sessions.insert(entry.id.clone(), entry.clone());
        entry
    }

    pub fn get(&self, id: &str) -> Option<Arc<SessionEntry>> {
        lock(&self.0.table).sessions.get(id).cloned()
    }

    /// Remove a session and signal its tasks; the caller closes the agent.
    pub fn remove(&self, id: &str) -> Option<Arc<SessionEntry>> {
        let removed = lock(&self.0.table).sessions.remove(id);
        if let Some(e) = &removed {
            e.mark_closed();
        }
        removed
    }

    pub fn list(&self) -> Vec<Arc<SessionEntry>> {
        lock(&self.0.table).sessions.values().cloned().collect()
    }

    pub fn active(&self) -> usize {
        lock(&self.0.table).sessions.len()
    }

    /// Agents still starting (capacity reserved, not yet in the table).
    pub fn starting(&self) -> usize {
        lock(&self.0.table).reserved
    }

    pub fn total_created(&self) -> u64 {
        lock(&self.0.table).total_created
    }

    pub fn capacity(&self) -> usize {
        self.0.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SessionError, SessionStats, TalkCommand, TalkEvent};
    use futures::future::BoxFuture;

    struct Inert;
    impl CallAgent for Inert {
        fn accept_offer<'a>(&'a self, _o: &'a str) -> BoxFuture<'a, Result<String, SessionError>> {
            Box::pin(async { Err(SessionError::Closed) })
        }
        fn talk(&self, _c: TalkCommand) -> Result<(), SessionError> {
            Ok(())
        }
        fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<TalkEvent> {
            tokio::sync::broadcast::channel(1).1
        }
        fn stats(&self) -> SessionStats {
            SessionStats::default()
        }
        fn close(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn is_closed(&self) -> bool {
            false
        }
    }

    fn entry(id: &str) -> SessionEntry {
        SessionEntry::new(id.into(), SessionToken::generate(), Arc::new(Inert), SessionOrigin::Api)
    }

    #[test]
    fn capacity_counts_reservations_and_sessions() {
        let r = Registry::new(2);
        let a = r.reserve().unwrap();
        let b = r.reserve().unwrap();
        assert_eq!(r.reserve().err(), Some(Full { max: 2 }));
        drop(b); // a failed start frees its slot
        r.insert(a, entry("s1"));
        let c = r.reserve().unwrap();
        assert!(r.reserve().is_err());
        r.insert(c, entry("s2"));
        assert_eq!(r.active(), 2);
        r.remove("s1").unwrap();
        assert!(r.reserve().is_ok());
        assert_eq!(r.total_created(), 2);
    }

    #[test]
    fn whip_state_machine() {
        let e = Arc::new(entry("s"));
        let n = e.begin_negotiation().unwrap();
        assert_eq!(e.begin_negotiation().err(), Some(WhipConflict::Negotiating));
        drop(n); // failed, timed out or cancelled: back to idle
        assert_eq!(e.whip_state(), WhipState::Idle);
        e.begin_negotiation().unwrap().succeed("r1".into());
        assert!(e.owns_resource("r1"));
        assert!(!e.owns_resource("r2"));
        assert_eq!(e.begin_negotiation().err(), Some(WhipConflict::AlreadyConnected));
    }

    #[test]
    fn talk_claim_is_exclusive_and_released_on_drop() {
        let e = Arc::new(entry("s"));
        let c = e.claim_talk().unwrap();
        assert!(e.claim_talk().is_none());
        drop(c);
        assert!(e.claim_talk().is_some());
    }

    #[test]
    fn removal_signals_closed() {
        let r = Registry::new(1);
        let e = r.insert(r.reserve().unwrap(), entry("s"));
        let rx = e.closed_signal();
        assert!(!*rx.borrow());
        r.remove("s");
        assert!(*rx.borrow());
        assert!(r.get("s").is_none());
    }
}
