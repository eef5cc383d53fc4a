//! The HTTP layer's one error type, rendered as RFC 9457 problem+json with a
//! stable `code`. Client errors carry a public message; server errors are
//! logged with their cause chain and answered with an opaque body.
//! The pipeline's errors, and the store's through them, become answers in
//! one `From<pipeline::Error>`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_domain::{FieldError, ValidationErrors};
use holdfast_resilience::{CallError, Classify};
use holdfast_store::{PlaceOrderError, StoreError};
use serde::Serialize;

use crate::pipeline::error::{Unanswered, Unavailable};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after_s: Option<u64>,
    /// Which SKU fell short, for `out_of_stock` and `unknown_sku` (boxed:
    /// every handler returns this type, and most never set it).
    pub stock: Option<Box<StockProblem>>,
    /// The internal cause of a 5xx, logged and never sent.
    pub cause: Option<anyhow::Error>,
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `https://holdfast.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable: `invalid_cart`, `out_of_stock`, …
    pub code: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<StockProblem>,
}

/// The SKU a stock problem is about, machine-readable.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StockProblem {
    pub sku: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemField {
    /// Path of the offending field, e.g. `items[2].qty`.
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_s: None,
            stock: None,
            cause: None,
        }
    }

    pub fn validation(code: &'static str, errors: ValidationErrors) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, errors.to_string());
        error.errors = errors.0;
        error
    }

    pub fn field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::validation(code, ValidationErrors(vec![FieldError::new(field, message)]))
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// A dependency is down or saturated: fail fast and say when to retry.
    pub fn unavailable(code: &'static str, detail: impl Into<String>, retry_after_s: u64) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        error.retry_after_s = Some(retry_after_s);
        error
    }

    /// 503 with `Retry-After` for a guarded call that did not get
    /// `dependency`'s answer (see the `From<pipeline::Error>` below). `what`
    /// names it for the client ("the inventory node"). Counted in
    /// `holdfast_dependency_errors_total`.
    pub fn dependency<E>(dependency: &'static str, what: &'static str, error: CallError<E>) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        crate::pipeline::Error::from(Unavailable::new(dependency, what, error)).into()
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        );
        error.cause = Some(cause.into());
        error
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: format!("https://holdfast.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            code: self.code.to_owned(),
            detail: self.detail.clone(),
            errors: self
                .errors
                .iter()
                .map(|e| ProblemField {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            stock: self.stock.as_deref().cloned(),
        }
    }

    /// The serialized body, for storing as an idempotent response.
    pub fn body(&self) -> String {
        serde_json::to_string(&self.problem()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.cause {
                Some(cause) => tracing::error!(code = self.code, error = format!("{cause:#}"), "request failed"),
                None => tracing::warn!(code = self.code, detail = %self.detail, "request failed"),
            }
        }
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The one mapping of the pipeline's errors to answers: the status, the
/// problem's detail and fields, and `Retry-After` when waiting helps. The
/// `code` is the error's own.
impl From<crate::pipeline::Error> for ApiError {
    fn from(error: crate::pipeline::Error) -> Self {
        use crate::pipeline::Error;
        let code = error.code();
        match error {
            Error::Invalid { errors, .. } => Self::validation(code, errors),
            Error::NotFound(what) => Self::new(StatusCode::NOT_FOUND, code, format!("{what} not found")),
            Error::OutOfStock {
                sku,
                requested,
                available,
            } => {
                let mut error = Self::conflict(code, format!("{sku}: {requested} requested, {available} available"));
                error.errors = vec![FieldError::new(
                    format!("items[sku={sku}].qty"),
                    format!("only {available} available"),
                )];
                error.stock = Some(Box::new(StockProblem {
                    sku: sku.to_string(),
                    requested: Some(u64::from(requested)),
                    available: Some(available),
                }));
                error
            }
            Error::UnknownSku(sku) => {
                let mut error = Self::field(code, "items", format!("unknown SKU {sku}"));
                error.stock = Some(Box::new(StockProblem {
                    sku: sku.to_string(),
                    requested: None,
                    available: None,
                }));
                error
            }
            refused @ Error::PaymentRefused { .. } => Self::new(StatusCode::BAD_GATEWAY, code, refused.to_string()),
            Error::Unavailable(unavailable) => Self::unanswered(code, unavailable),
            conflict @ (Error::IdempotencyInProgress | Error::IdempotencyMismatch) => {
                Self::conflict(code, conflict.to_string())
            }
            Error::Store(store) => Self::store(code, store),
            Error::Internal(cause) => Self::internal(cause),
        }
    }
}

impl ApiError {
    fn unanswered(code: &'static str, unavailable: Unavailable) -> Self {
        let what = unavailable.what;
        let (detail, retry_after_s) = match unavailable.why {
            Unanswered::Saturated => (format!("too many calls to {what} in flight; retry shortly"), 1),
            Unanswered::Paused { retry_after } => (
                format!("{what} is failing; calls to it are paused"),
                retry_after.as_secs().max(1),
            ),
            Unanswered::OutOfTime => (format!("{what} did not answer within the request's deadline"), 1),
            Unanswered::Failing => (format!("{what} is not answering; retry later"), 2),
            Unanswered::Refused => (format!("{what} refused this node's call"), 2),
        };
        let mut error = Self::unavailable(code, detail, retry_after_s);
        error.cause = Some(unavailable.error.context(unavailable.dependency));
        error
    }

    fn store(code: &'static str, error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::new(StatusCode::NOT_FOUND, code, format!("{what} not found")),
            StoreError::Conflict(detail) => Self::conflict(code, detail),
            StoreError::InvalidTransition(e) => Self::conflict(code, e.to_string()),
            StoreError::InvalidSubscriptionTransition(e) => Self::conflict(code, e.to_string()),
            StoreError::Timeout(_) | StoreError::Unavailable(_) => {
                let kind = if matches!(error, StoreError::Timeout(_)) {
                    "timeout"
                } else {
                    "unavailable"
                };
                crate::telemetry::dependency_error("database", kind);
                let mut shed = Self::unavailable(code, "the database is not answering in time", 1);
                shed.cause = Some(error.into());
                shed
            }
            other => Self::internal(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        crate::pipeline::Error::from(error).into()
    }
}

impl From<PlaceOrderError> for ApiError {
    fn from(error: PlaceOrderError) -> Self {
        crate::pipeline::Error::from(error).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
