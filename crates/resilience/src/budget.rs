//! The retry budget and the jittered backoff.
//!
//! Retries are bounded twice: per call by `max_attempts`, and per dependency
//! by a budget of `budget_percent` of the calls started in the window, so a
//! failing dependency sees at most that much extra load however many callers
//! retry at once (the retry storm that turns a slow dependency into a dead one).

use std::ops::AddAssign;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::RetryConfig;
use crate::window::Window;

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    calls: u64,
    retries: u64,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.retries += other.retries;
    }
}

#[derive(Debug)]
pub(crate) struct RetryBudget {
    window: Window<Counts>,
}

impl RetryBudget {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            window: Window::new(now),
        }
    }

    /// Counts a call that reached the dependency (its first attempt).
    pub(crate) fn record_call(&mut self, now: Instant, length: Duration) {
        self.window.add(now, length, Counts { calls: 1, retries: 0 });
    }

    /// Takes one retry from the budget, or says there is none left.
    pub(crate) fn try_withdraw(&mut self, now: Instant, length: Duration, config: &RetryConfig) -> bool {
        if config.budget_percent == 0 {
            return false;
        }
        let total = self.window.total(now, length);
        let share = total.calls.saturating_mul(u64::from(config.budget_percent)) / 100;
        let allowed = share.max(RetryConfig::MIN_RETRIES_PER_WINDOW);
        if total.retries >= allowed {
            return false;
        }
        self.window.add(now, length, Counts { calls: 0, retries: 1 });
        true
    }
}

/// The pause before retry number `retry` (1 for the first retry): "full
/// jitter", uniform between zero and `base_ms · 2^(retry-1)` capped at
/// `max_ms`, so callers that failed together do not retry together.
pub(crate) fn backoff(config: &RetryConfig, retry: u32) -> Duration {
    let doubling = 1u64.checked_shl(retry.saturating_sub(1)).unwrap_or(u64::MAX);
    let ceiling = config.base_ms.saturating_mul(doubling).min(config.max_ms);
    Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_calls() {
        let config = RetryConfig {
            budget_percent: 20,
            ..RetryConfig::default()
        };
        let length = Duration::from_secs(10);
        let now = Instant::now();
        let mut budget = RetryBudget::new(now);
        for _ in 0..100 {
            budget.record_call(now, length);
        }
        let granted = (0..100).filter(|_| budget.try_withdraw(now, length, &config)).count();
        assert_eq!(granted, 20);
        let later = now + length;
        assert!(budget.try_withdraw(later, length, &config), "the window moved on");
    }

    #[test]
    fn a_quiet_dependency_keeps_a_floor_of_retries() {
        let config = RetryConfig {
            budget_percent: 20,
            ..RetryConfig::default()
        };
        let length = Duration::from_secs(10);
        let now = Instant::now();
        let mut budget = RetryBudget::new(now);
        budget.record_call(now, length);
        let granted = (0..10).filter(|_| budget.try_withdraw(now, length, &config)).count();
        assert_eq!(granted as u64, RetryConfig::MIN_RETRIES_PER_WINDOW);
    }

    #[test]
    fn zero_percent_disables_retries() {
        let config = RetryConfig {
            budget_percent: 0,
            ..RetryConfig::default()
        };
        let length = Duration::from_secs(10);
        let now = Instant::now();
        let mut budget = RetryBudget::new(now);
        for _ in 0..1000 {
            budget.record_call(now, length);
        }
        assert!(!budget.try_withdraw(now, length, &config));
    }

    #[test]
    fn backoff_is_jittered_doubling_and_capped() {
        let config = RetryConfig {
            base_ms: 50,
            max_ms: 300,
            ..RetryConfig::default()
        };
        for retry in 1..=40 {
            let ceiling = Duration::from_millis((50u64 << (retry - 1).min(20)).min(300));
            let samples: Vec<Duration> = (0..200).map(|_| backoff(&config, retry)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "retry {retry}: {samples:?}");
            let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
            assert!(distinct.len() > 10, "retry {retry} is jittered");
        }
    }
}
