//! The `[dependencies.NAME]` configuration table and its checks.
//!
//! These types are the configuration file's contract: the service embeds them
//! in its own config, so unknown keys are refused here; the defaults are the
//! values `holdfast.example.toml` gives `[dependencies.payments]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How one outbound dependency is called: its deadline, bulkhead, retries and
/// circuit breaker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DependencyConfig {
    /// The longest one call may take, retries and backoff included, in
    /// milliseconds. A call also ends at its request's deadline when that
    /// comes first.
    pub deadline_ms: u64,
    /// Calls in flight at once; the next one is rejected at once, never queued.
    pub max_concurrency: usize,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    /// What checkout does while this dependency is unavailable.
    pub on_unavailable: OnUnavailable,
}

impl Default for DependencyConfig {
    fn default() -> Self {
        Self {
            deadline_ms: 5000,
            max_concurrency: 64,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            on_unavailable: OnUnavailable::Queue,
        }
    }
}

/// Jittered retries of idempotent calls, limited by a budget.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per call, the first one included; 1 disables retries.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; it doubles per retry.
    pub base_ms: u64,
    /// Upper bound of any one backoff.
    pub max_ms: u64,
    /// Retries may be at most this share of the calls started over the
    /// breaker's window (`breaker.window_s`), with a floor of
    /// [`RetryConfig::MIN_RETRIES_PER_WINDOW`] so a quiet dependency can still
    /// retry; 0 disables retries.
    pub budget_percent: u32,
}

impl RetryConfig {
    /// Retries always allowed per window, whatever the traffic: without a
    /// floor, a dependency called a few times a minute could never retry.
    pub const MIN_RETRIES_PER_WINDOW: u64 = 3;
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_ms: 50,
            max_ms: 1000,
            budget_percent: 20,
        }
    }
}

/// The circuit breaker's thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Share of failed calls (slow calls included) that opens the breaker.
    pub failure_rate: f64,
    /// Length of the sliding window the rate is measured over, in seconds.
    pub window_s: u64,
    /// Calls the window must hold before the rate is trusted.
    pub min_calls: u64,
    /// A call that takes at least this long counts as a failure.
    pub slow_call_ms: u64,
    /// How long the breaker stays open before it lets probes through.
    pub open_s: u64,
    /// Probes let through when half-open; all must succeed to close it.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            window_s: 10,
            min_calls: 20,
            slow_call_ms: 2000,
            open_s: 30,
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    pub fn slow_call(&self) -> Duration {
        Duration::from_millis(self.slow_call_ms)
    }

    pub fn open_for(&self) -> Duration {
        Duration::from_secs(self.open_s)
    }
}

/// What the caller does when the dependency is unavailable (breaker open,
/// bulkhead full, deadline spent, transient failure after retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Accept the work for asynchronous completion (checkout answers 202).
    Queue,
    /// Refuse at once (503 with `Retry-After`).
    Reject,
}

/// A configuration value out of range. `key` is the path below the
/// dependency's table (`breaker.failure_rate`), prefixed with
/// `dependencies.NAME.` once the dependency is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidConfig {
    pub key: String,
    pub reason: String,
}

impl InvalidConfig {
    fn new(key: &str, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// Places the key under `dependencies.<dependency>.`.
    pub fn for_dependency(self, dependency: &str) -> Self {
        Self {
            key: format!("dependencies.{dependency}.{}", self.key),
            reason: self.reason,
        }
    }
}

impl DependencyConfig {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Cross-field checks; the error names the first bad key.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let retry = &self.retry;
        let breaker = &self.breaker;
        let checks: [(&str, bool, &str); 11] = [
            ("deadline_ms", self.deadline_ms > 0, "must be at least 1"),
            ("max_concurrency", self.max_concurrency > 0, "must be at least 1"),
            (
                "retry.max_attempts",
                retry.max_attempts > 0,
                "must be at least 1 (the first attempt)",
            ),
            (
                "retry.max_ms",
                retry.max_ms >= retry.base_ms,
                "must not be below retry.base_ms",
            ),
            (
                "retry.budget_percent",
                retry.budget_percent <= 100,
                "must be between 0 and 100",
            ),
            (
                "breaker.failure_rate",
                breaker.failure_rate > 0.0 && breaker.failure_rate <= 1.0,
                "must be above 0 and at most 1",
            ),
            ("breaker.window_s", breaker.window_s > 0, "must be at least 1"),
            ("breaker.min_calls", breaker.min_calls > 0, "must be at least 1"),
            ("breaker.slow_call_ms", breaker.slow_call_ms > 0, "must be at least 1"),
            ("breaker.open_s", breaker.open_s > 0, "must be at least 1"),
            (
                "breaker.half_open_probes",
                breaker.half_open_probes > 0,
                "must be at least 1",
            ),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, reason)) => Err(InvalidConfig::new(key, reason)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_matches_the_defaults() {
        let text = r#"
            deadline_ms = 5000
            max_concurrency = 64
            retry = { max_attempts = 3, base_ms = 50, max_ms = 1000, budget_percent = 20 }
            breaker = { failure_rate = 0.5, window_s = 10, min_calls = 20, slow_call_ms = 2000, open_s = 30, half_open_probes = 3 }
            on_unavailable = "queue"
        "#;
        let parsed: DependencyConfig = toml::from_str(text).expect("the documented example parses");
        assert_eq!(parsed, DependencyConfig::default());
        assert_eq!(parsed.validate(), Ok(()));
    }

    #[test]
    fn missing_keys_take_defaults() {
        let parsed: DependencyConfig =
            toml::from_str("deadline_ms = 250\non_unavailable = \"reject\"\nretry = { max_attempts = 1 }")
                .expect("partial table parses");
        assert_eq!(parsed.deadline_ms, 250);
        assert_eq!(parsed.on_unavailable, OnUnavailable::Reject);
        assert_eq!(
            parsed.retry,
            RetryConfig {
                max_attempts: 1,
                ..RetryConfig::default()
            }
        );
        assert_eq!(parsed.breaker, BreakerConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = toml::from_str::<DependencyConfig>("timeout_ms = 5").expect_err("unknown key");
        assert!(error.to_string().contains("timeout_ms"), "{error}");
        let error = toml::from_str::<DependencyConfig>("breaker = { failure_ratio = 0.5 }").expect_err("unknown key");
        assert!(error.to_string().contains("failure_ratio"), "{error}");
        let error = toml::from_str::<DependencyConfig>("on_unavailable = \"drop\"").expect_err("unknown variant");
        assert!(error.to_string().contains("drop"), "{error}");
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut config = DependencyConfig::default();
        config.breaker.failure_rate = 1.5;
        let error = config.validate().expect_err("rate above 1");
        assert_eq!(error.key, "breaker.failure_rate");
        assert_eq!(
            error.for_dependency("payments").to_string(),
            "dependencies.payments.breaker.failure_rate: must be above 0 and at most 1"
        );

        let mut config = DependencyConfig::default();
        config.retry.base_ms = 2000;
        assert_eq!(config.validate().map_err(|e| e.key), Err("retry.max_ms".to_owned()));

        let config = DependencyConfig {
            max_concurrency: 0,
            ..DependencyConfig::default()
        };
        assert_eq!(config.validate().map_err(|e| e.key), Err("max_concurrency".to_owned()));
    }
}
