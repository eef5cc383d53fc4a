//! What a guarded call returns when it does not succeed, and how a caller's
//! own error says whether it is worth retrying.

use std::time::Duration;

/// Tells the policy what a failed call means. A transient error (timeout,
/// connection refused, 5xx, 429) is retried when the call is idempotent and
/// counts as a failure for the circuit breaker; a definitive one (a 4xx, a
/// declined card) is the dependency working as intended, so it is neither
/// retried nor held against the dependency.
pub trait Classify {
    fn is_transient(&self) -> bool;
}

/// Why a guarded call did not return the dependency's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The dependency already has `max_concurrency` calls in flight.
    #[error("dependency is at its concurrency limit")]
    BulkheadFull,
    /// The circuit breaker refuses calls; ask again after `retry_after`.
    #[error("dependency circuit breaker is open (retry after {} ms)", retry_after.as_millis())]
    BreakerOpen { retry_after: Duration },
    /// The deadline (the dependency's, or the request's remaining budget)
    /// passed before or during the call.
    #[error("dependency deadline exceeded")]
    DeadlineExceeded,
    /// The last attempt's error, after any retries.
    #[error("dependency call failed")]
    Failed(#[source] E),
}

impl<E> CallError<E> {
    /// The label used in metrics and logs: `bulkhead`, `breaker_open`,
    /// `deadline` or `failed`.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::BulkheadFull => "bulkhead",
            CallError::BreakerOpen { .. } => "breaker_open",
            CallError::DeadlineExceeded => "deadline",
            CallError::Failed(_) => "failed",
        }
    }

    /// How long the breaker will refuse calls, for a `Retry-After` header.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::BreakerOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The caller's own error, when the dependency was reached.
    pub fn into_failure(self) -> Option<E> {
        match self {
            CallError::Failed(error) => Some(error),
            _ => None,
        }
    }
}

impl<E: Classify> CallError<E> {
    /// True when the dependency could not give an answer (refused, out of
    /// time, or failing transiently): the case `on_unavailable` decides.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CallError::Failed(error) => error.is_transient(),
            _ => true,
        }
    }
}
