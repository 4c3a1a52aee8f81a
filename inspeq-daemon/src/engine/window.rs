//! Counting events in sliding time windows, with memory bounded whatever the event rate: restarts (few, kept as
//! instants) and forks (possibly thousands a second, kept as per-second buckets).

use std::collections::VecDeque;
use std::time::Duration;

use crate::engine::time::Timestamp;

/// Instants of recent events (restarts, worker deaths), kept for the longest window a rule asks about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instants {
    at: VecDeque<Timestamp>,
    horizon: Duration,
}

/// The history is capped: a service restarting (or losing workers) in a tight loop must not grow memory, and no rule counts
/// beyond this many (a rule asking for more is refused nothing; it just compares against the cap).
const MAX_RESTARTS_KEPT: usize = 10_000;

impl Instants {
    #[must_use]
    pub fn new(horizon: Duration) -> Self {
        Instants { at: VecDeque::new(), horizon }
    }

    pub fn record(&mut self, now: Timestamp) {
        self.prune(now);
        if self.at.len() == MAX_RESTARTS_KEPT {
            self.at.pop_front();
        }
        self.at.push_back(now);
    }

    /// Events in `(now - window, now]`.
    #[must_use]
    pub fn count(&self, now: Timestamp, window: Duration) -> usize {
        self.at.iter().filter(|t| now.since(**t) < window).count()
    }

    pub fn prune(&mut self, now: Timestamp) {
        while self.at.front().is_some_and(|t| now.since(*t) >= self.horizon) {
            self.at.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.at.clear();
    }
}

/// Forks per whole second over a window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forks {
    buckets: VecDeque<(u64, u64)>,
    window: Duration,
}

impl Forks {
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Forks { buckets: VecDeque::new(), window }
    }

    pub fn record(&mut self, now: Timestamp) {
        let second = now.since_origin().as_secs();
        match self.buckets.back_mut() {
            Some((s, n)) if *s == second => *n = n.saturating_add(1),
            _ => self.buckets.push_back((second, 1)),
        }
        self.prune(now);
    }

    fn prune(&mut self, now: Timestamp) {
        let now_s = now.since_origin().as_secs();
        let span = self.window.as_secs().max(1);
        while self.buckets.front().is_some_and(|(s, _)| now_s.saturating_sub(*s) >= span) {
            self.buckets.pop_front();
        }
    }

    /// Forks in the window ending now.
    pub fn count(&mut self, now: Timestamp) -> u64 {
        self.prune(now);
        self.buckets.iter().map(|(_, n)| *n).sum()
    }

    /// The same count without forgetting older buckets, for read-only views (`status`).
    #[must_use]
    pub fn count_at(&self, now: Timestamp) -> u64 {
        let now_s = now.since_origin().as_secs();
        let span = self.window.as_secs().max(1);
        self.buckets.iter().filter(|(s, _)| now_s.saturating_sub(*s) < span).map(|(_, n)| *n).sum()
    }

    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn clear(&mut self) {
        self.buckets.clear();
    }
}
