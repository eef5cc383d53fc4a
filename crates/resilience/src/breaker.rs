//! The circuit breaker's state machine, free of I/O and clocks: every method
//! takes `now`, so the rules can be tested step by step.
//!
//! Closed: every call is admitted and its outcome goes into a time window;
//! once the window holds `min_calls` calls and the share of failures (slow
//! calls included) reaches `failure_rate`, the breaker opens. Open: calls are
//! refused until `open_s` has passed, then it turns half-open. Half-open:
//! exactly `half_open_probes` calls are admitted; one failure reopens it, and
//! when all of them succeed it closes with an empty window.
//!
//! Each transition starts a new generation. An outcome from an earlier
//! generation (a call admitted before the breaker opened that ends later) is
//! ignored, so only the probes decide a half-open breaker.

use std::ops::AddAssign;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::window::Window;

/// How long a caller refused because every half-open probe is taken should
/// wait: the probes are already in flight, so the answer comes soon.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The value of `holdfast_breaker_state`: 0 closed, 1 half-open, 2 open
    /// (the `HoldfastBreakerOpen` alert reads `== 2`).
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CallCounts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl AddAssign for CallCounts {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }
}

impl CallCounts {
    pub(crate) fn failure_rate(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }
}

/// Permission to make one call, to be reported back with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub(crate) generation: u64,
    pub(crate) probe: bool,
}

/// A state change, for the caller to log, count and publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Change {
    pub(crate) from: BreakerState,
    pub(crate) to: BreakerState,
    pub(crate) counts: CallCounts,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: BreakerState,
    generation: u64,
    window: Window<CallCounts>,
    opened_at: Option<(Instant, SystemTime)>,
    probes_admitted: u32,
    probe_successes: u32,
    transitions: u64,
}

impl Breaker {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            state: BreakerState::Closed,
            generation: 0,
            window: Window::new(now),
            opened_at: None,
            probes_admitted: 0,
            probe_successes: 0,
            transitions: 0,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    pub(crate) fn transitions(&self) -> u64 {
        self.transitions
    }

    pub(crate) fn opened_at(&self) -> Option<SystemTime> {
        self.opened_at.map(|(_, wall)| wall)
    }

    /// Turns an open breaker half-open once `open_s` has passed. Called on
    /// admission and when the state is observed, so an idle dependency does
    /// not read "open" (and page) long after it would admit probes.
    pub(crate) fn tick(&mut self, now: Instant, config: &BreakerConfig) -> Option<Change> {
        if self.state == BreakerState::Open && self.open_remaining(now, config).is_zero() {
            return Some(self.transition(now, BreakerState::HalfOpen, config));
        }
        None
    }

    /// Time until an open breaker lets probes through.
    pub(crate) fn open_remaining(&self, now: Instant, config: &BreakerConfig) -> Duration {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some((at, _))) => (at + config.open_for()).saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    pub(crate) fn admit(
        &mut self,
        now: Instant,
        config: &BreakerConfig,
    ) -> (Result<Admitted, Duration>, Option<Change>) {
        let change = self.tick(now, config);
        let admission = match self.state {
            BreakerState::Closed => Ok(Admitted {
                generation: self.generation,
                probe: false,
            }),
            BreakerState::Open => Err(self.open_remaining(now, config)),
            BreakerState::HalfOpen if self.probes_admitted < config.half_open_probes => {
                self.probes_admitted += 1;
                Ok(Admitted {
                    generation: self.generation,
                    probe: true,
                })
            }
            BreakerState::HalfOpen => Err(HALF_OPEN_RETRY_AFTER),
        };
        (admission, change)
    }

    /// Records the outcome of an admitted call. `failed` is the caller's
    /// verdict; a call at least `slow_call_ms` long counts as failed too.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        config: &BreakerConfig,
        admitted: Admitted,
        failed: bool,
        elapsed: Duration,
    ) -> Option<Change> {
        if admitted.generation != self.generation {
            return None;
        }
        let slow = elapsed >= config.slow_call();
        let failure = failed || slow;
        match self.state {
            BreakerState::Closed => {
                let counts = CallCounts {
                    calls: 1,
                    failures: u64::from(failure),
                    slow: u64::from(slow),
                };
                let length = window_length(config);
                self.window.add(now, length, counts);
                let total = self.window.total(now, length);
                let tripped = total.calls >= config.min_calls && total.failure_rate() >= config.failure_rate;
                tripped.then(|| self.transition(now, BreakerState::Open, config))
            }
            BreakerState::HalfOpen if failure => Some(self.transition(now, BreakerState::Open, config)),
            BreakerState::HalfOpen => {
                self.probe_successes += 1;
                (self.probe_successes >= config.half_open_probes)
                    .then(|| self.transition(now, BreakerState::Closed, config))
            }
            // Unreachable in practice: opening starts a new generation.
            BreakerState::Open => None,
        }
    }

    /// Gives back the slot of a probe whose call was cancelled before it
    /// finished, so a dropped request cannot leave the breaker half-open with
    /// no probe left to decide it.
    pub(crate) fn release(&mut self, admitted: Admitted) {
        if admitted.probe && admitted.generation == self.generation && self.state == BreakerState::HalfOpen {
            self.probes_admitted = self.probes_admitted.saturating_sub(1);
        }
    }

    pub(crate) fn window_counts(&mut self, now: Instant, config: &BreakerConfig) -> CallCounts {
        self.window.total(now, window_length(config))
    }

    fn transition(&mut self, now: Instant, to: BreakerState, config: &BreakerConfig) -> Change {
        let counts = self.window.total(now, window_length(config));
        let change = Change {
            from: self.state,
            to,
            counts,
        };
        self.state = to;
        self.generation += 1;
        self.transitions += 1;
        self.probes_admitted = 0;
        self.probe_successes = 0;
        match to {
            BreakerState::Open => self.opened_at = Some((now, SystemTime::now())),
            // A recovered dependency starts with a clean slate: failures from
            // before the outage must not trip it again at once.
            BreakerState::Closed => {
                self.opened_at = None;
                self.window.clear();
            }
            BreakerState::HalfOpen => {}
        }
        change
    }
}

fn window_length(config: &BreakerConfig) -> Duration {
    Duration::from_secs(config.window_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            window_s: 10,
            min_calls: 4,
            slow_call_ms: 100,
            open_s: 30,
            half_open_probes: 2,
        }
    }

    fn admit(breaker: &mut Breaker, now: Instant, config: &BreakerConfig) -> Admitted {
        breaker.admit(now, config).0.expect("admitted")
    }

    fn outcome(breaker: &mut Breaker, now: Instant, config: &BreakerConfig, failed: bool) -> Option<Change> {
        let admitted = admit(breaker, now, config);
        breaker.record(now, config, admitted, failed, Duration::from_millis(1))
    }

    #[test]
    fn opens_at_the_failure_rate_once_min_calls_are_in() {
        let config = config();
        let now = Instant::now();
        let mut breaker = Breaker::new(now);
        assert_eq!(outcome(&mut breaker, now, &config, true), None);
        assert_eq!(outcome(&mut breaker, now, &config, true), None);
        assert_eq!(
            outcome(&mut breaker, now, &config, true),
            None,
            "3 calls are below min_calls"
        );
        let change = outcome(&mut breaker, now, &config, false).expect("3 of 4 failed");
        assert_eq!((change.from, change.to), (BreakerState::Closed, BreakerState::Open));
        assert_eq!(
            change.counts,
            CallCounts {
                calls: 4,
                failures: 3,
                slow: 0
            }
        );
        assert_eq!(breaker.admit(now, &config).0, Err(Duration::from_secs(30)));
        assert_eq!(
            breaker.admit(now + Duration::from_secs(10), &config).0,
            Err(Duration::from_secs(20))
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let config = config();
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        for _ in 0..3 {
            outcome(&mut breaker, start, &config, true);
        }
        let later = start + Duration::from_secs(11);
        for _ in 0..3 {
            assert_eq!(outcome(&mut breaker, later, &config, false), None);
        }
        assert_eq!(
            outcome(&mut breaker, later, &config, true),
            None,
            "1 of 4 in the window failed"
        );
    }

    #[test]
    fn slow_successes_count_as_failures() {
        let config = config();
        let now = Instant::now();
        let mut breaker = Breaker::new(now);
        let mut last = None;
        for _ in 0..4 {
            let admitted = admit(&mut breaker, now, &config);
            last = breaker.record(now, &config, admitted, false, Duration::from_millis(100));
        }
        let change = last.expect("four slow calls open the breaker");
        assert_eq!(
            change.counts,
            CallCounts {
                calls: 4,
                failures: 4,
                slow: 4
            }
        );
    }

    #[test]
    fn half_open_admits_exactly_the_probes_and_closes_when_all_succeed() {
        let config = config();
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        for _ in 0..4 {
            outcome(&mut breaker, start, &config, true);
        }
        let later = start + Duration::from_secs(30);
        let (first, change) = breaker.admit(later, &config);
        assert_eq!(change.map(|c| c.to), Some(BreakerState::HalfOpen));
        let first = first.expect("first probe");
        let second = admit(&mut breaker, later, &config);
        assert_eq!(
            breaker.admit(later, &config).0,
            Err(HALF_OPEN_RETRY_AFTER),
            "only two probes"
        );

        assert_eq!(breaker.record(later, &config, first, false, Duration::ZERO), None);
        let change = breaker
            .record(later, &config, second, false, Duration::ZERO)
            .expect("closes");
        assert_eq!(change.to, BreakerState::Closed);
        assert_eq!(
            breaker.window_counts(later, &config),
            CallCounts::default(),
            "fresh window"
        );
    }

    #[test]
    fn a_failed_probe_reopens_and_late_outcomes_are_ignored() {
        let config = config();
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        let straggler = admit(&mut breaker, start, &config);
        for _ in 0..4 {
            outcome(&mut breaker, start, &config, true);
        }
        let later = start + Duration::from_secs(31);
        let probe = admit(&mut breaker, later, &config);
        assert_eq!(breaker.record(later, &config, straggler, false, Duration::ZERO), None);
        let change = breaker
            .record(later, &config, probe, true, Duration::ZERO)
            .expect("reopens");
        assert_eq!((change.from, change.to), (BreakerState::HalfOpen, BreakerState::Open));
        assert_eq!(breaker.admit(later, &config).0, Err(Duration::from_secs(30)));
        assert_eq!(breaker.transitions(), 3);
    }

    #[test]
    fn a_cancelled_probe_returns_its_slot() {
        let config = BreakerConfig {
            half_open_probes: 1,
            ..config()
        };
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        for _ in 0..4 {
            outcome(&mut breaker, start, &config, true);
        }
        let later = start + Duration::from_secs(30);
        let probe = admit(&mut breaker, later, &config);
        assert!(breaker.admit(later, &config).0.is_err());
        breaker.release(probe);
        assert!(breaker.admit(later, &config).0.is_ok());
    }
}
