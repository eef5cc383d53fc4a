//! A sliding time window of one-second buckets, shared by the breaker's
//! failure rate and the retry budget.
//!
//! Buckets are keyed by whole seconds since the policy was created, so the
//! window length can change at run time (a reload) without losing what the
//! window already holds: a shorter window simply drops older buckets.

use std::collections::VecDeque;
use std::ops::AddAssign;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Window<C> {
    origin: Instant,
    /// `(second since origin, counts)`, oldest first, at most one per second.
    buckets: VecDeque<(u64, C)>,
}

impl<C: Copy + Default + AddAssign> Window<C> {
    pub(crate) fn new(origin: Instant) -> Self {
        Self {
            origin,
            buckets: VecDeque::new(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    /// Adds `counts` to the bucket of `now`.
    pub(crate) fn add(&mut self, now: Instant, length: Duration, counts: C) {
        let second = self.second(now);
        match self.buckets.back_mut() {
            Some((last, bucket)) if *last == second => *bucket += counts,
            _ => self.buckets.push_back((second, counts)),
        }
        self.prune(second, length);
    }

    /// The sum over the last `length` (the current, partial second included).
    pub(crate) fn total(&mut self, now: Instant, length: Duration) -> C {
        self.prune(self.second(now), length);
        let mut total = C::default();
        for (_, counts) in &self.buckets {
            total += *counts;
        }
        total
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
    }

    fn prune(&mut self, second: u64, length: Duration) {
        let keep = length.as_secs().max(1);
        while let Some((oldest, _)) = self.buckets.front() {
            if oldest + keep <= second {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_expire_after_the_window() {
        let origin = Instant::now();
        let length = Duration::from_secs(3);
        let mut window = Window::<u64>::new(origin);
        window.add(origin, length, 1);
        window.add(origin + Duration::from_millis(900), length, 1);
        window.add(origin + Duration::from_secs(2), length, 5);
        assert_eq!(window.total(origin + Duration::from_millis(2999), length), 7);
        assert_eq!(window.total(origin + Duration::from_secs(3), length), 5);
        assert_eq!(window.total(origin + Duration::from_secs(5), length), 0);
    }

    #[test]
    fn shortening_the_window_drops_older_buckets() {
        let origin = Instant::now();
        let mut window = Window::<u64>::new(origin);
        window.add(origin, Duration::from_secs(10), 4);
        window.add(origin + Duration::from_secs(5), Duration::from_secs(10), 1);
        assert_eq!(
            window.total(origin + Duration::from_secs(5), Duration::from_secs(10)),
            5
        );
        assert_eq!(window.total(origin + Duration::from_secs(5), Duration::from_secs(2)), 1);
    }
}
