//! The front door shared by both sandboxes: counts calls, adds latency, injects
//! failures and checks the bearer token, before any handler runs.
//!
//! Injected failures are answered before the handler so nothing is created or stored:
//! a client retrying with the same idempotency key then gets a clean first execution.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::error::ApiError;

/// Which bearer tokens a sandbox accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthRule {
    /// Any `sk_test_…` key, like Stripe in test mode.
    StripeTestKey,
    /// Any non-empty token.
    AnyBearer,
}

/// Fault settings and call counters; atomics so setters work while serving.
#[derive(Debug)]
pub(crate) struct Gate {
    failure_rate_bits: AtomicU64,
    latency_nanos: AtomicU64,
    pub api_calls: AtomicU64,
    pub injected_failures: AtomicU64,
    auth: AuthRule,
}

impl Gate {
    pub fn new(auth: AuthRule, failure_rate: f64, latency: Duration) -> Self {
        let gate = Self {
            failure_rate_bits: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            api_calls: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
            auth,
        };
        gate.set_failure_rate(failure_rate);
        gate.set_latency(latency);
        gate
    }

    /// Clamped to 0..=1; a NaN counts as 0 so a bad flag cannot fail every call.
    pub fn set_failure_rate(&self, rate: f64) {
        let rate = if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) };
        self.failure_rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn failure_rate(&self) -> f64 {
        f64::from_bits(self.failure_rate_bits.load(Ordering::Relaxed))
    }

    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    fn roll_failure(&self) -> bool {
        let rate = self.failure_rate();
        rate > 0.0 && rand::thread_rng().gen_bool(rate)
    }

    fn check_auth(&self, request: &Request) -> Result<(), ApiError> {
        let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            return Err(ApiError::unauthorized(
                "You did not provide an API key. Provide it in the Authorization header (Authorization: Bearer YOUR_SECRET_KEY).",
            ));
        };
        let token = header.strip_prefix("Bearer ").map(str::trim).unwrap_or_default();
        let accepted = match self.auth {
            AuthRule::StripeTestKey => token.starts_with("sk_test_") && token.len() > "sk_test_".len(),
            AuthRule::AnyBearer => !token.is_empty(),
        };
        if accepted {
            Ok(())
        } else {
            Err(ApiError::unauthorized("Invalid API Key provided."))
        }
    }
}

/// Axum middleware: latency, then injected failure, then authentication.
pub(crate) async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    gate.api_calls.fetch_add(1, Ordering::Relaxed);
    let latency = gate.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if gate.roll_failure() {
        gate.injected_failures.fetch_add(1, Ordering::Relaxed);
        return ApiError::injected_failure().into_response();
    }
    if let Err(error) = gate.check_auth(&request) {
        return error.into_response();
    }
    next.run(request).await
}

/// Runs the call (latency included) in a task of its own, as a real provider
/// finishes a call whose client has gone: hyper drops a request's future when
/// its client disconnects, which would make a killed client's shipment or
/// payment vanish instead of being made with only its answer lost.
pub async fn run_to_completion(request: Request, next: Next) -> Response {
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "sandbox call failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
