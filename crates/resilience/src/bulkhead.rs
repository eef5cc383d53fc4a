//! A bulkhead that rejects instead of queueing, with a limit that can change
//! while calls are in flight.
//!
//! It is a counter rather than a semaphore because it never waits (a caller
//! beyond the limit is refused at once, so it cannot queue past its deadline)
//! and because a reload may shrink the limit below the calls in flight: those
//! finish normally and new calls are refused until the count is under the new
//! limit, which a semaphore's fixed permit count cannot express.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct Bulkhead {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
}

/// One call's place in the bulkhead, given back on drop (also when the call
/// is cancelled).
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    bulkhead: &'a Bulkhead,
}

impl Bulkhead {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        }
    }

    pub(crate) fn try_enter(&self) -> Option<Permit<'_>> {
        let limit = self.limit.load(Ordering::Acquire);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current < limit).then_some(current + 1)
            })
            .ok()
            .map(|_| Permit { bulkhead: self })
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.bulkhead.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_beyond_the_limit_and_frees_on_drop() {
        let bulkhead = Bulkhead::new(2);
        let first = bulkhead.try_enter().expect("first");
        let _second = bulkhead.try_enter().expect("second");
        assert!(bulkhead.try_enter().is_none());
        drop(first);
        assert!(bulkhead.try_enter().is_some());
    }

    #[test]
    fn a_lower_limit_lets_calls_in_flight_finish() {
        let bulkhead = Bulkhead::new(3);
        let permits: Vec<_> = (0..3).filter_map(|_| bulkhead.try_enter()).collect();
        bulkhead.set_limit(1);
        assert_eq!(bulkhead.in_flight(), 3);
        assert!(bulkhead.try_enter().is_none());
        drop(permits);
        assert!(bulkhead.try_enter().is_some());
    }
}
