//! The pipeline's one error type: what went wrong in a step, in the
//! pipeline's terms, each with the stable `code` clients know it by. The
//! HTTP layer turns it into a status and a problem body in one `From`
//! (`http/error.rs`); workers read it to decide between rejecting an order
//! and trying again.

use std::time::Duration;

use holdfast_domain::{FieldError, Sku, ValidationErrors};
use holdfast_resilience::{CallError, Classify};
use holdfast_store::{PlaceOrderError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request does not hold up against the catalogue: an unknown SKU,
    /// items priced in different currencies, a total past the maximum.
    #[error("{errors}")]
    Invalid {
        code: &'static str,
        errors: ValidationErrors,
    },
    /// What the request names does not exist (`"order"`, `"product"`).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{sku}: {requested} requested, {available} available")]
    OutOfStock { sku: Sku, requested: u32, available: i64 },
    #[error("unknown SKU {0}")]
    UnknownSku(Sku),
    /// The payment provider refused the intent for good.
    #[error("the payment provider refused the intent: {code}: {message}")]
    PaymentRefused { code: String, message: String },
    /// A dependency did not give its answer.
    #[error(transparent)]
    Unavailable(Unavailable),
    /// Another request with the same idempotency key is still running.
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInProgress,
    /// The idempotency key was used before with a different request.
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A state the code does not expect; logged, never shown.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl Error {
    /// One invalid field, as a validation error with `code`.
    pub fn field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            errors: ValidationErrors(vec![FieldError::new(field, message)]),
        }
    }

    /// The stable, machine-readable name of the problem: the `code` of the
    /// API's problem responses and of an order's cancellation cause.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { code, .. } => code,
            Self::NotFound(_) => "not_found",
            Self::OutOfStock { .. } => "out_of_stock",
            Self::UnknownSku(_) => "unknown_sku",
            Self::PaymentRefused { .. } => "payment_provider_error",
            Self::Unavailable(unavailable) => unavailable.code(),
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::IdempotencyMismatch => "idempotency_conflict",
            Self::Store(store) => match store {
                StoreError::NotFound(_) => "not_found",
                StoreError::Conflict(_) => "conflict",
                StoreError::InvalidTransition(_) | StoreError::InvalidSubscriptionTransition(_) => "invalid_transition",
                StoreError::Timeout(_) | StoreError::Unavailable(_) => "dependency_unavailable",
                _ => "internal",
            },
            Self::Internal(_) => "internal",
        }
    }
}

impl From<PlaceOrderError> for Error {
    fn from(error: PlaceOrderError) -> Self {
        match error {
            PlaceOrderError::OutOfStock {
                sku,
                requested,
                available,
            } => Self::OutOfStock {
                sku,
                requested,
                available,
            },
            PlaceOrderError::UnknownSku(sku) => Self::UnknownSku(sku),
            PlaceOrderError::Store(store) => Self::Store(store),
        }
    }
}

/// A guarded call that did not get its dependency's answer.
#[derive(Debug, thiserror::Error)]
#[error("{dependency}: {error:#}")]
pub struct Unavailable {
    /// The dependency's name, as its policy, metrics and config key use it.
    pub dependency: &'static str,
    /// How a client is told of it: "the payment provider".
    pub what: &'static str,
    pub why: Unanswered,
    /// The policy's reason, for logs and order timelines: `bulkhead`,
    /// `breaker_open`, `deadline` or `failed`.
    pub reason: &'static str,
    /// The call's error, with its cause chain.
    pub error: anyhow::Error,
}

/// Why a dependency gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Its bulkhead is full: too many calls in flight.
    Saturated,
    /// Its breaker is open; calls are refused for `retry_after`.
    Paused { retry_after: Duration },
    /// The deadline ran out before it answered.
    OutOfTime,
    /// It failed in a way worth retrying (timeout, connection, 5xx).
    Failing,
    /// It refused this node's call.
    Refused,
}

impl Unavailable {
    /// Classifies a failed guarded call to `dependency` and counts it in
    /// `holdfast_dependency_errors_total`.
    pub fn new<E>(dependency: &'static str, what: &'static str, error: CallError<E>) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        crate::telemetry::dependency_failed(dependency, &error);
        let why = match &error {
            CallError::BulkheadFull => Unanswered::Saturated,
            CallError::BreakerOpen { retry_after } => Unanswered::Paused {
                retry_after: *retry_after,
            },
            CallError::DeadlineExceeded => Unanswered::OutOfTime,
            CallError::Failed(failed) if failed.is_transient() => Unanswered::Failing,
            CallError::Failed(_) => Unanswered::Refused,
        };
        Self {
            dependency,
            what,
            why,
            reason: error.reason(),
            error: anyhow::Error::new(error),
        }
    }

    /// `overloaded` when the bulkhead is full, else `dependency_unavailable`.
    pub fn code(&self) -> &'static str {
        match self.why {
            Unanswered::Saturated => "overloaded",
            _ => "dependency_unavailable",
        }
    }
}

impl From<Unavailable> for Error {
    fn from(unavailable: Unavailable) -> Self {
        Self::Unavailable(unavailable)
    }
}
