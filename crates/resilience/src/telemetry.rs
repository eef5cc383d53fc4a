//! Metric names and the log lines of breaker transitions. The names are a
//! contract: the shipped alert rules and dashboard read them.
//!
//! Labels are passed on every update instead of caching metric handles,
//! because the service installs its recorder lazily and a handle taken before
//! that would record into nothing.

use crate::breaker::{BreakerState, Change};

/// Gauge: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "holdfast_breaker_state";
/// Counter, labelled `from` and `to`.
pub const BREAKER_TRANSITIONS: &str = "holdfast_breaker_transitions_total";
/// Counter, labelled `reason`: `bulkhead`, `breaker_open` or `deadline`.
pub const REJECTIONS: &str = "holdfast_dependency_rejections_total";
/// Counter: attempts cut off by the deadline.
pub const TIMEOUTS: &str = "holdfast_dependency_timeouts_total";
/// Counter: attempts after the first.
pub const RETRIES: &str = "holdfast_dependency_retries_total";
/// Histogram: duration of each attempt, until its outcome or its deadline.
pub const CALL_DURATION: &str = "holdfast_dependency_call_duration_seconds";
/// Gauges: calls in flight and the bulkhead's limit.
pub const IN_FLIGHT: &str = "holdfast_dependency_in_flight";
pub const MAX_CONCURRENCY: &str = "holdfast_dependency_max_concurrency";

/// Why a call was refused without reaching the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Bulkhead,
    BreakerOpen,
    Deadline,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Bulkhead => "bulkhead",
            Reason::BreakerOpen => "breaker_open",
            Reason::Deadline => "deadline",
        }
    }
}

/// Registers help texts with the installed recorder; call once after
/// installing it.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(BREAKER_TRANSITIONS, "Circuit breaker state changes per dependency.");
    describe_counter!(REJECTIONS, "Calls refused without reaching the dependency, by reason.");
    describe_counter!(TIMEOUTS, "Dependency attempts cut off by their deadline.");
    describe_counter!(RETRIES, "Dependency attempts after the first.");
    describe_histogram!(CALL_DURATION, Unit::Seconds, "Duration of each dependency attempt.");
    describe_gauge!(IN_FLIGHT, "Dependency calls in flight.");
    describe_gauge!(MAX_CONCURRENCY, "Bulkhead limit of calls in flight per dependency.");
}

pub(crate) fn rejected(dependency: &str, reason: Reason) {
    metrics::counter!(REJECTIONS, "dependency" => dependency.to_owned(), "reason" => reason.as_str()).increment(1);
}

pub(crate) fn state(dependency: &str, state: BreakerState) {
    metrics::gauge!(BREAKER_STATE, "dependency" => dependency.to_owned()).set(state.gauge_value());
}

pub(crate) fn transition(dependency: &str, change: &Change) {
    metrics::counter!(
        BREAKER_TRANSITIONS,
        "dependency" => dependency.to_owned(),
        "from" => change.from.as_str(),
        "to" => change.to.as_str()
    )
    .increment(1);
    state(dependency, change.to);
    let failure_rate = change.counts.failure_rate();
    let calls = change.counts.calls;
    let slow_calls = change.counts.slow;
    let (from, to) = (change.from.as_str(), change.to.as_str());
    if change.to == BreakerState::Open {
        tracing::warn!(
            dependency,
            from,
            to,
            failure_rate,
            calls,
            slow_calls,
            "circuit breaker opened"
        );
    } else {
        tracing::info!(
            dependency,
            from,
            to,
            failure_rate,
            calls,
            slow_calls,
            "circuit breaker state changed"
        );
    }
}
