//! Per-token request rate limits: one token bucket per session (keyed by
//! the session id, used only after the request's token was accepted), so a
//! client that loops on `/say`, `/speak` or `GET /v1/sessions/{id}` is
//! answered 429 with `Retry-After` instead of starving the process. Buckets
//! exist for live sessions only (dropped with the session), so the table
//! is bounded by the session capacity.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sustained rate and burst of one token; `per_second <= 0` disables it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 20.0, burst: 40.0 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by session id.
#[derive(Debug)]
pub struct TokenBuckets {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl TokenBuckets {
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one request from `key`'s bucket at `now`; `Err(wait)` when it
    /// is empty (`wait` until the next request is allowed).
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        if per_second <= 0.0 || !per_second.is_finite() {
            return Ok(());
        }
        let burst = burst.max(1.0);
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(key.to_string()).or_insert(Bucket { tokens: burst, last: now });
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * per_second;
        b.tokens = (b.tokens + refill).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }

    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// Drop `key`'s bucket (its session ended).
    pub fn forget(&self, key: &str) {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate_per_key() {
        let t = TokenBuckets::new(RateLimit { per_second: 10.0, burst: 3.0 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.check_at("a", t0).is_ok());
        }
        let wait = t.check_at("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(t.check_at("b", t0).is_ok(), "keys are independent");
        assert!(t.check_at("a", t0 + Duration::from_millis(100)).is_ok(), "refilled at 10/s");
        assert!(t.check_at("a", t0 + Duration::from_millis(100)).is_err());
        // Never more than the burst after a long pause.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| t.check_at("a", later).is_ok()).count(), 3);
        t.forget("a");
        t.forget("b");
        assert!(t.is_empty());
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let t = TokenBuckets::new(RateLimit { per_second: 0.0, burst: 0.0 });
        let now = Instant::now();
        assert!((0..1000).all(|_| t.check_at("a", now).is_ok()));
        assert!(t.is_empty());
    }
}
