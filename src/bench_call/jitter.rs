//! Userspace network jitter for the call bench's client (`--video-jitter-ms`),
//! for machines without `sch_netem`: the impairment and the receiver's answer
//! to it, both socket-free and driven by the caller's clock.
//!
//! - [`DelayQueue`] holds each received packet for a random 0..J ms before
//!   handing it on, so packets leave in a different order than they came, as
//!   with `tc netem delay D J`. It is bounded: a packet that finds it full is
//!   dropped and counted.
//! - [`ReorderBuffer`] is the client's jitter buffer, as a browser has one:
//!   it releases packets in RTP sequence order and waits for a missing one at
//!   most `wait` after a later packet arrived (with delays below J, a packet
//!   that did not come within J after a later one is lost), then skips the gap
//!   and reports it. It is bounded the same way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Packets held back by random delays (netem-style jitter), bounded.
#[derive(Debug)]
pub struct DelayQueue<T> {
    /// (release time, arrival counter, packet), sorted by release time.
    held: Vec<(Instant, u64, T)>,
    capacity: usize,
    arrivals: u64,
    /// Packets refused because the queue was full.
    pub overflow_dropped: usize,
    /// Most packets held at once.
    pub max_depth: usize,
}

impl<T> DelayQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self { held: Vec::new(), capacity: capacity.max(1), arrivals: 0, overflow_dropped: 0, max_depth: 0 }
    }

    /// Hold `item` until `now + delay`; false (and counted) when full.
    pub fn push(&mut self, now: Instant, delay: Duration, item: T) -> bool {
        if self.held.len() >= self.capacity {
            self.overflow_dropped += 1;
            return false;
        }
        let key = (now + delay, self.arrivals);
        self.arrivals += 1;
        let at = self.held.partition_point(|(t, n, _)| (*t, *n) <= key);
        self.held.insert(at, (key.0, key.1, item));
        self.max_depth = self.max_depth.max(self.held.len());
        true
    }

    /// The next packet whose delay has passed.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.held.first() {
            Some((t, _, _)) if *t <= now => Some(self.held.remove(0).2),
            _ => None,
        }
    }

    /// When the next packet is due (None = empty).
    pub fn next_due(&self) -> Option<Instant> {
        self.held.first().map(|(t, _, _)| *t)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// What [`ReorderBuffer::pop`] hands on.
#[derive(Debug, PartialEq, Eq)]
pub enum Released<T> {
    /// The next packet in sequence order.
    Packet(T),
    /// This many sequence numbers never came in time and were skipped.
    Lost(u64),
}

/// Sequence-ordered release of RTP packets with a bounded wait for gaps.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    /// Extended sequence number -> (arrival, packet).
    held: BTreeMap<u64, (Instant, T)>,
    /// The extended sequence number released next (None before the first packet).
    next: Option<u64>,
    /// Highest extended sequence number seen (for unwrapping).
    highest: Option<u64>,
    wait: Duration,
    capacity: usize,
    /// Packets that arrived after a higher sequence number had arrived.
    pub reordered_arrivals: usize,
    /// Packets that came after their gap was skipped, or twice (discarded).
    pub late_discarded: usize,
    /// Sequence numbers skipped as lost.
    pub lost: u64,
}

impl<T> ReorderBuffer<T> {
    pub fn new(wait: Duration, capacity: usize) -> Self {
        Self {
            held: BTreeMap::new(),
            next: None,
            highest: None,
            wait,
            capacity: capacity.max(1),
            reordered_arrivals: 0,
            late_discarded: 0,
            lost: 0,
        }
    }

    /// The 64-bit sequence number of a 16-bit RTP one: the candidate nearest
    /// to the highest seen.
    fn extend(&self, seq: u16) -> u64 {
        let Some(highest) = self.highest else { return u64::from(seq) + (1 << 16) };
        let base = highest & !0xffff;
        [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
            .into_iter()
            .map(|b| b | u64::from(seq))
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(base | u64::from(seq))
    }

    /// Take a packet that arrived at `now`.
    pub fn insert(&mut self, now: Instant, seq: u16, item: T) {
        let ext = self.extend(seq);
        if self.highest.is_some_and(|h| ext < h) {
            self.reordered_arrivals += 1;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let next = *self.next.get_or_insert(ext);
        if ext < next || self.held.contains_key(&ext) {
            self.late_discarded += 1;
            return;
        }
        self.held.insert(ext, (now, item));
    }

    /// The next packet in order, or a skipped gap once it waited long enough
    /// (or the buffer is over capacity); None = wait (see [`Self::next_deadline`]).
    pub fn pop(&mut self, now: Instant) -> Option<Released<T>> {
        let next = self.next?;
        let (&first, _) = self.held.first_key_value()?;
        if first == next {
            self.next = Some(next + 1);
            return self.held.pop_first().map(|(_, (_, item))| Released::Packet(item));
        }
        let waited_out = self.gap_deadline().is_some_and(|d| d <= now);
        if waited_out || self.held.len() > self.capacity {
            let skipped = first - next;
            self.lost += skipped;
            self.next = Some(first);
            return Some(Released::Lost(skipped));
        }
        None
    }

    /// While a gap holds packets back: when it will be skipped.
    pub fn next_deadline(&self) -> Option<Instant> {
        let next = self.next?;
        match self.held.first_key_value() {
            Some((&first, _)) if first != next => self.gap_deadline(),
            _ => None,
        }
    }

    /// `wait` after the earliest arrival among the held packets: every one
    /// of them was sent after the missing packet, so with delays below
    /// `wait` the missing one would have come by then.
    fn gap_deadline(&self) -> Option<Instant> {
        self.held.values().map(|(at, _)| *at).min().map(|at| at + self.wait)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delay_queue_releases_by_due_time_and_is_bounded() {
        let t0 = Instant::now();
        let mut q = DelayQueue::new(3);
        assert!(q.push(t0, ms(30), "a"));
        assert!(q.push(t0 + ms(1), ms(5), "b"));
        assert!(q.push(t0 + ms(2), ms(5), "c"));
        assert!(!q.push(t0 + ms(3), ms(0), "d"));
        assert_eq!((q.overflow_dropped, q.max_depth), (1, 3));
        assert_eq!(q.pop_due(t0 + ms(5)), None);
        assert_eq!(q.next_due(), Some(t0 + ms(6)));
        assert_eq!(q.pop_due(t0 + ms(7)), Some("b"));
        assert_eq!(q.pop_due(t0 + ms(7)), Some("c"));
        assert_eq!(q.pop_due(t0 + ms(7)), None);
        assert_eq!(q.pop_due(t0 + ms(30)), Some("a"));
        assert!(q.is_empty());
    }

    #[test]
    fn reorder_buffer_restores_sequence_order() {
        let t0 = Instant::now();
        let mut r = ReorderBuffer::new(ms(30), 16);
        r.insert(t0, 10, 10);
        r.insert(t0, 12, 12);
        r.insert(t0, 11, 11);
        let out: Vec<_> = std::iter::from_fn(|| r.pop(t0)).collect();
        assert_eq!(out, vec![Released::Packet(10), Released::Packet(11), Released::Packet(12)]);
        assert_eq!((r.reordered_arrivals, r.lost), (1, 0));
        // a duplicate or a packet from before the release point is discarded
        r.insert(t0, 11, 11);
        assert_eq!(r.late_discarded, 1);
        assert_eq!(r.pop(t0), None);
    }

    #[test]
    fn reorder_buffer_skips_a_gap_after_the_wait() {
        let t0 = Instant::now();
        let mut r = ReorderBuffer::new(ms(30), 16);
        r.insert(t0, 1, 1);
        assert_eq!(r.pop(t0), Some(Released::Packet(1)));
        r.insert(t0 + ms(10), 4, 4);
        r.insert(t0 + ms(12), 5, 5);
        assert_eq!(r.pop(t0 + ms(39)), None);
        assert_eq!(r.next_deadline(), Some(t0 + ms(40)));
        assert_eq!(r.pop(t0 + ms(40)), Some(Released::Lost(2)));
        assert_eq!(r.pop(t0 + ms(40)), Some(Released::Packet(4)));
        assert_eq!(r.pop(t0 + ms(40)), Some(Released::Packet(5)));
        assert_eq!(r.lost, 2);
        // the lost packet turning up later is discarded
        r.insert(t0 + ms(50), 2, 2);
        assert_eq!((r.late_discarded, r.pop(t0 + ms(50))), (1, None));
    }

    #[test]
    fn reorder_buffer_is_bounded_and_unwraps_sequence_numbers() {
        let t0 = Instant::now();
        let mut r = ReorderBuffer::new(ms(1000), 2);
        r.insert(t0, 65534, 0);
        assert_eq!(r.pop(t0), Some(Released::Packet(0)));
        // 65535 is missing; 0, 1, 2 (after the wrap) arrive: over capacity
        r.insert(t0, 0, 2);
        r.insert(t0, 1, 3);
        assert_eq!(r.pop(t0), None);
        r.insert(t0, 2, 4);
        assert_eq!(r.pop(t0), Some(Released::Lost(1)));
        assert_eq!(r.pop(t0), Some(Released::Packet(2)));
        assert_eq!(r.pop(t0), Some(Released::Packet(3)));
        assert_eq!(r.pop(t0), Some(Released::Packet(4)));
        assert!(r.is_empty());
    }
}
