//! HTTP handlers for `/v1/payment_intents`, in Stripe's wire format.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::Inner;
use super::intent::{CreateParams, IntentStatus, card_error_body, parse_form};
use super::webhooks;
use crate::error::{ApiError, json_response};
use crate::gate::{gate, run_to_completion};
use crate::idempotency::{Executed, idempotency_key};
use crate::ids::unix_now;

/// Stripe's accepted `cancellation_reason` values.
const CANCELLATION_REASONS: [&str; 4] = ["duplicate", "fraudulent", "requested_by_customer", "abandoned"];

pub(super) fn router(inner: Arc<Inner>) -> Router {
    let gate_state = inner.gate.clone();
    Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .route("/v1/payment_intents/{id}", get(get_intent))
        .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
        .fallback(unknown_route)
        .layer(from_fn_with_state(gate_state, gate))
        .layer(from_fn(run_to_completion))
        .with_state(inner)
}

async fn create_intent(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let prepared = idempotency_key(&headers).and_then(|key| {
        let (form, fingerprint) = parse_form(&body)?;
        let params = CreateParams::from_form(&form)?;
        Ok((key, fingerprint, params))
    });
    let (key, fingerprint, params) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return error.into_response(),
    };
    let fingerprint = format!("POST /v1/payment_intents?{fingerprint}");
    let off_session = params.off_session;
    inner.idempotency.run(key.as_deref(), &fingerprint, || {
        let mut record = params.into_record();
        // Off-session, the card is charged now and the answer says how it went.
        let settled_now = if off_session { record.settle() } else { None };
        let intent = record.intent.clone();
        let settles_later = record.outcome.is_some() && settled_now.is_none();
        inner.intents_lock().insert(intent.id.clone(), record);
        inner.counters.intents_created.fetch_add(1, Ordering::Relaxed);
        if settles_later {
            webhooks::settle_later(inner.clone(), intent.id.clone());
        }
        if let Some(event_type) = settled_now {
            webhooks::send_event(inner.clone(), event_type, intent.clone());
        }
        // A decline is a result like any other: a retry with the same key gets it again.
        match card_error_body(&intent) {
            Some(body) => Executed::stored(StatusCode::PAYMENT_REQUIRED, body),
            None => Executed::stored(StatusCode::OK, to_json(&intent)),
        }
    })
}

async fn get_intent(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    match inner.intents_lock().get(&id) {
        Some(record) => json_response(StatusCode::OK, to_json(&record.intent)),
        None => ApiError::missing_resource("payment_intent", &id).into_response(),
    }
}

async fn cancel_intent(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = idempotency_key(&headers).and_then(|key| {
        let (form, fingerprint) = parse_form(&body)?;
        let reason = form.get("cancellation_reason").cloned();
        if reason.as_deref().is_some_and(|r| !CANCELLATION_REASONS.contains(&r)) {
            return Err(ApiError::invalid_param(
                "cancellation_reason",
                "parameter_invalid_string",
                format!(
                    "Invalid cancellation_reason: must be one of {}",
                    CANCELLATION_REASONS.join(", ")
                ),
            ));
        }
        Ok((key, fingerprint, reason))
    });
    let (key, fingerprint, reason) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return error.into_response(),
    };
    let fingerprint = format!("POST /v1/payment_intents/{id}/cancel?{fingerprint}");
    inner.idempotency.run(key.as_deref(), &fingerprint, || {
        let mut intents = inner.intents_lock();
        let Some(record) = intents.get_mut(&id) else {
            return Executed::error(&ApiError::missing_resource("payment_intent", &id), true);
        };
        let status = record.intent.status;
        if matches!(status, IntentStatus::Succeeded | IntentStatus::Canceled) {
            let error = ApiError {
                code: Some("payment_intent_unexpected_state"),
                ..ApiError::invalid_request(format!(
                    "You cannot cancel this PaymentIntent because it has a status of {}.",
                    status.as_str()
                ))
            };
            return Executed::error(&error, true);
        }
        record.intent.status = IntentStatus::Canceled;
        record.intent.canceled_at = Some(unix_now());
        record.intent.cancellation_reason = reason;
        let intent = record.intent.clone();
        drop(intents);
        webhooks::send_event(inner.clone(), "payment_intent.canceled", intent.clone());
        Executed::stored(StatusCode::OK, to_json(&intent))
    })
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::invalid_request(format!("Unrecognized request URL ({method}: {}).", uri.path()))
    }
    .into_response()
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Serialising plain structs of strings and integers to a String cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}
