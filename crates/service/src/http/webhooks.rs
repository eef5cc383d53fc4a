//! Partner webhook endpoints (admin): create, list, delete, re-enable, the
//! delivery log with every attempt, and replay of one delivery or a range.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use holdfast_domain::{DeliveryId, OrderStatus, WebhookEndpointId};
use holdfast_store::{NewWebhookEndpoint, Replay, WebhookAttempt, WebhookDelivery, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiQuery};
use super::state::AppState;
use crate::pipeline::queues;
use crate::providers::egress::Egress;
use holdfast_signing::WebhookSecret;

const MAX_EVENT_TYPES: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// `order.<status>` or `subscription.<event>` types, or `["*"]` for all.
    pub event_types: Vec<String>,
    /// `whsec_<base64 of 24 to 64 bytes>`; generated when absent.
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// "enabled" or "disabled".
    pub status: &'static str,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Only in the response that creates the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<WebhookEndpoint> for EndpointOut {
    fn from(endpoint: WebhookEndpoint) -> Self {
        Self {
            status: if endpoint.enabled() { "enabled" } else { "disabled" },
            id: endpoint.id.to_string(),
            url: endpoint.url,
            event_types: endpoint.event_types,
            disabled_reason: endpoint.disabled_reason,
            failing_since: endpoint.failing_since,
            created_at: endpoint.created_at,
            secret: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub data: Vec<EndpointOut>,
}

#[utoipa::path(post, path = "/api/v1/webhook-endpoints", tag = "webhooks", request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), (status = 422, body = Problem)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    let input = json.body;
    let url = parse_url(
        &input.url,
        Egress::from_config(state.deps.config.webhooks.allow_private_networks),
    )?;
    let event_types = parse_event_types(input.event_types)?;
    let secret = match input.secret {
        Some(secret) if WebhookSecret::parse(&secret).is_ok() => secret,
        Some(_) => {
            return Err(ApiError::field(
                "invalid_request",
                "secret",
                "must be whsec_ followed by the base64 of 24 to 64 bytes",
            ));
        }
        None => WebhookSecret::generate().expose(),
    };
    let endpoint = state
        .deps
        .store
        .webhooks()
        .create_endpoint(&NewWebhookEndpoint {
            id: WebhookEndpointId::generate(),
            url,
            event_types,
            secret: secret.clone(),
            created_at: Utc::now(),
        })
        .await?;
    let mut out = EndpointOut::from(endpoint);
    out.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, body = EndpointList)))]
pub async fn list_endpoints(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<EndpointList>> {
    let endpoints = state.deps.store.webhooks().endpoints().await?;
    Ok(Json(EndpointList {
        data: endpoints.into_iter().map(EndpointOut::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "we_…")),
    responses((status = 200, body = EndpointOut), (status = 404, body = Problem)))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    Ok(Json(find_endpoint(&state, &id).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "we_…")),
    responses((status = 204, description = "deleted; its delivery log stays"), (status = 404, body = Problem)))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_endpoint_id(&id)?;
    if state.deps.store.webhooks().delete_endpoint(&id, Utc::now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

/// Re-enables an endpoint disabled by a 410 or by failing too long.
/// Deliveries skipped while it was disabled can be sent with a range replay.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/enable", tag = "webhooks",
    params(("id" = String, Path, description = "we_…")),
    responses((status = 200, body = EndpointOut), (status = 404, body = Problem)))]
pub async fn enable_endpoint(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    let parsed = parse_endpoint_id(&id)?;
    if !state.deps.store.webhooks().enable_endpoint(&parsed).await? {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    Ok(Json(find_endpoint(&state, &id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<WebhookDelivery>,
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "we_…"), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 404, body = Problem)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let endpoint = find_endpoint(&state, &id).await?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("invalid_query", "limit", "must be between 1 and 100"));
    }
    let data = state.deps.store.webhooks().deliveries(&endpoint.id, limit).await?;
    Ok(Json(DeliveryList { data }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub delivery: WebhookDelivery,
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<WebhookAttempt>,
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}", tag = "webhooks",
    params(("id" = String, Path, description = "we_…"), ("delivery_id" = String, Path, description = "dlv_…")),
    responses((status = 200, body = DeliveryOut), (status = 404, body = Problem)))]
pub async fn get_delivery(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Json<DeliveryOut>> {
    let delivery = find_delivery(&state, &id, &delivery_id).await?;
    let attempts = state.deps.store.webhooks().attempts(&delivery.id).await?;
    Ok(Json(DeliveryOut { delivery, attempts }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// The new deliveries, queued behind the endpoint's other deliveries.
    pub deliveries: Vec<String>,
}

/// Sends one delivery's event again (same `webhook-id`), whatever its status.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "we_…"), ("delivery_id" = String, Path, description = "dlv_…")),
    responses((status = 202, body = Replayed), (status = 404, body = Problem)))]
pub async fn replay_delivery(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    let delivery = find_delivery(&state, &id, &delivery_id).await?;
    replay(&state, Replay::Delivery(delivery.id)).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeIn {
    /// Events created at or after this time (RFC 3339).
    pub since: DateTime<Utc>,
    /// Events created before this time (RFC 3339); default now.
    pub until: Option<DateTime<Utc>>,
}

/// Sends again every event the endpoint wants that was created in
/// `[since, until)`, in order.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/replay", tag = "webhooks", request_body = RangeIn,
    params(("id" = String, Path, description = "we_…")),
    responses((status = 202, body = Replayed), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn replay_range(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    json: ApiJson<RangeIn>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    let endpoint = find_endpoint(&state, &id).await?;
    let until = json.body.until.unwrap_or_else(Utc::now);
    if json.body.since >= until {
        return Err(ApiError::field("invalid_request", "since", "must be before until"));
    }
    let range = Replay::Range {
        endpoint: endpoint.id,
        since: json.body.since,
        until,
    };
    replay(&state, range).await
}

async fn replay(state: &AppState, which: Replay) -> ApiResult<(StatusCode, Json<Replayed>)> {
    let template = state.deps.config.queues.webhooks.template(queues::WEBHOOKS);
    let created = state
        .deps
        .store
        .webhooks()
        .replay(&which, &template, Utc::now())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            deliveries: created.iter().map(ToString::to_string).collect(),
        }),
    ))
}

fn parse_endpoint_id(raw: &str) -> ApiResult<WebhookEndpointId> {
    WebhookEndpointId::parse(raw).map_err(|_| ApiError::not_found("webhook endpoint"))
}

async fn find_endpoint(state: &AppState, raw: &str) -> ApiResult<WebhookEndpoint> {
    let id = parse_endpoint_id(raw)?;
    state
        .deps
        .store
        .webhooks()
        .endpoint(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

async fn find_delivery(state: &AppState, endpoint: &str, raw: &str) -> ApiResult<WebhookDelivery> {
    let endpoint = find_endpoint(state, endpoint).await?;
    let id = DeliveryId::parse(raw).map_err(|_| ApiError::not_found("delivery"))?;
    match state.deps.store.webhooks().delivery(&id).await? {
        Some(delivery) if delivery.endpoint_id == endpoint.id => Ok(delivery),
        _ => Err(ApiError::not_found("delivery")),
    }
}

fn parse_url(raw: &str, egress: Egress) -> ApiResult<String> {
    let invalid = |why: &str| ApiError::field("invalid_request", "url", why);
    let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("must be an http or https URL with a host"));
    }
    if let Err(refused) = egress.check_url(&url) {
        return Err(ApiError::field(
            "url_not_allowed",
            "url",
            format!(
                "{} is a {} address; webhooks reach public addresses only unless \
                 webhooks.allow_private_networks = true",
                refused.ip, refused.reason
            ),
        ));
    }
    Ok(url.to_string())
}

/// `*`, `order.<status>` for any order status, or `subscription.<event>`.
fn parse_event_types(types: Vec<String>) -> ApiResult<Vec<String>> {
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        return Err(ApiError::field(
            "invalid_request",
            "event_types",
            format!("must list 1 to {MAX_EVENT_TYPES} event types, or [\"*\"]"),
        ));
    }
    for (index, kind) in types.iter().enumerate() {
        let known = kind == "*"
            || kind
                .strip_prefix("order.")
                .is_some_and(|status| serde_json::from_value::<OrderStatus>(status.into()).is_ok())
            || kind
                .strip_prefix("subscription.")
                .is_some_and(|event| !event.is_empty() && event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if !known {
            return Err(ApiError::field(
                "invalid_request",
                &format!("event_types[{index}]"),
                format!("{kind:?} is not an event type: use \"order.<status>\", \"subscription.<event>\" or \"*\""),
            ));
        }
    }
    let mut types = types;
    types.sort();
    types.dedup();
    Ok(types)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, delete_endpoint))
        .routes(routes!(enable_endpoint))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(replay_delivery))
        .routes(routes!(replay_range))
}
