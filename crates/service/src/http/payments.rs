//! Payments: (re)creating an order's intent, and the provider's signed
//! webhook, which only records the event (the inbox) and answers at once.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_store::InboxEvent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Storefront;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiJson;
use super::state::AppState;
use crate::pipeline::checkout::create_payment_intent;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentIn {
    pub order_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntentOut {
    pub order_id: String,
    pub payment_intent_id: String,
    pub client_secret: String,
}

/// (Re)create the payment intent of an order awaiting payment. Safe to call
/// again: the provider call is keyed by the order id.
#[utoipa::path(post, path = "/api/v1/payments/intent", tag = "payments", request_body = IntentIn,
    responses((status = 200, body = IntentOut), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem)))]
pub async fn create_intent(
    State(state): State<AppState>,
    _auth: Storefront,
    json: ApiJson<IntentIn>,
) -> ApiResult<Json<IntentOut>> {
    let order_id =
        OrderId::parse(&json.body.order_id).map_err(|e| ApiError::field("invalid_request", "order_id", e.message))?;
    let order = state
        .deps
        .store
        .get_order(&order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    if order.status != OrderStatus::PendingPayment {
        return Err(ApiError::conflict(
            "order_not_payable",
            format!("order {} is {}, not pending_payment", order.id, order.status),
        ));
    }
    let intent = create_payment_intent(&state.deps, &order).await?;
    state.deps.store.attach_payment_intent(&order.id, &intent).await?;
    Ok(Json(IntentOut {
        order_id: order.id.to_string(),
        payment_intent_id: intent.intent_id,
        client_secret: intent.client_secret,
    }))
}

#[derive(Debug, Deserialize)]
struct EventEnvelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// True when this event id had been received before (a no-op).
    pub duplicate: bool,
}

/// The payment provider's callback. The signature is checked on the raw
/// body; the event is recorded once (its id is unique) and applied
/// asynchronously, so the provider gets its 2xx at once.
#[utoipa::path(post, path = "/api/v1/payments/webhook", tag = "payments",
    request_body(content = String, content_type = "application/json", description = "The provider's event, exactly as signed"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>")),
    responses((status = 200, body = WebhookAck), (status = 400, body = Problem)))]
pub async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<WebhookAck>> {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    holdfast_signing::verify_stripe_signature(
        state.deps.config.payments.webhook_secret.expose(),
        signature,
        &body,
        Utc::now().timestamp(),
        Duration::from_secs(state.deps.config.payments.webhook_tolerance_s),
    )
    .map_err(|e| ApiError::bad_request("invalid_signature", e.to_string()))?;
    let envelope: EventEnvelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("malformed_event", format!("the event is not a provider event: {e}")))?;
    let payload =
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("malformed_event", "not UTF-8"))?;
    let recorded = state
        .deps
        .store
        .record_inbox_event(&InboxEvent {
            id: envelope.id,
            event_type: envelope.event_type,
            payload,
            received_at: Utc::now(),
        })
        .await?;
    if recorded {
        state.inbox_ready.notify_one();
    }
    Ok(Json(WebhookAck {
        received: true,
        duplicate: !recorded,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_intent))
        .routes(routes!(webhook))
}
