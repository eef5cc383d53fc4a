//! Orders: checkout (`POST /api/v1/orders`, idempotent), reading, listing and
//! the timeline.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use holdfast_domain::{
    Address, Cart, CustomerName, Email, OrderId, OrderStatus, ValidationErrors, address::AddressFields,
};
use holdfast_store::{OrderFilter, StoredResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Storefront;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiQuery, idempotency_key, stored};
use super::state::AppState;
use super::types::{AddressIo, OrderOut};
use crate::pipeline::Error as PipelineError;
use crate::pipeline::checkout::{self, Answered, Checkout, CheckoutRequest, PaymentMethod};
use crate::pipeline::idempotency::{self, Claim};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    pub sku: String,
    pub qty: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerIn {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderIn {
    pub items: Vec<ItemIn>,
    pub customer: CustomerIn,
    pub shipping_address: AddressIo,
    /// A provider payment method id: "pm_card_visa".
    pub payment_method: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderCreated {
    pub order_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl OrderIn {
    /// Parses every field, reporting all invalid ones with their paths.
    fn parse(&self) -> Result<CheckoutRequest, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let cart = match Cart::parse(self.items.iter().map(|item| (item.sku.as_str(), item.qty))) {
            Ok(cart) => Some(cart),
            Err(cart_errors) => {
                errors.0.extend(cart_errors.0);
                None
            }
        };
        let email = errors.collect("customer.email", Email::parse(&self.customer.email));
        let name = match &self.customer.name {
            Some(raw) => errors.collect("customer.name", CustomerName::parse(raw)),
            None => None,
        };
        let a = &self.shipping_address;
        let address = match Address::parse(AddressFields {
            line1: &a.line1,
            line2: a.line2.as_deref(),
            city: &a.city,
            state: a.state.as_deref(),
            postal_code: &a.postal_code,
            country: &a.country,
        }) {
            Ok(address) => Some(address),
            Err(address_errors) => {
                errors
                    .0
                    .extend(address_errors.0.into_iter().map(|e| e.under("shipping_address")));
                None
            }
        };
        let payment_method = errors.collect("payment_method", PaymentMethod::parse(&self.payment_method));
        match (cart, email, address, payment_method) {
            (Some(cart), Some(email), Some(address), Some(payment_method)) if errors.is_empty() => {
                Ok(CheckoutRequest {
                    cart,
                    email,
                    name,
                    address,
                    payment_method,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Place an order: reserve stock for every item (all or nothing), then create
/// the payment intent.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = OrderIn,
    params(("Idempotency-Key" = String, Header, description = "Required; same key and body replay the first response")),
    responses(
        (status = 201, body = OrderCreated, description = "Stock reserved, awaiting payment"),
        (status = 202, body = OrderCreated, description = "Inventory unavailable: accepted, completed asynchronously"),
        (status = 409, body = Problem, description = "out_of_stock, idempotency_conflict or idempotency_in_progress"),
        (status = 422, body = Problem, description = "invalid_cart, unknown_sku, invalid_request"),
        (status = 503, body = Problem, description = "dependency_unavailable; see Retry-After"),
    ))]
pub async fn create_order(
    State(state): State<AppState>,
    Storefront(principal): Storefront,
    headers: HeaderMap,
    json: ApiJson<OrderIn>,
) -> ApiResult<Response> {
    let deps = &state.deps;
    let key = idempotency_key(&headers, "POST /api/v1/orders")?;
    let request = json
        .body
        .parse()
        .map_err(|errors| ApiError::validation("invalid_cart", errors))?;
    let priced = checkout::price_cart(deps, &request.cart).await?;
    let claim = Claim {
        scope: principal.key_id.to_string(),
        key,
        request_hash: json.canonical_hash,
    };
    let error = match checkout::place(deps, &claim, &request, priced, Utc::now(), &created).await {
        Ok(Answered::First(response)) => return Ok(stored(response, false)),
        Ok(Answered::Replayed(response)) => return Ok(stored(response, true)),
        // About the key, not the order: nothing to store.
        Err(error @ (PipelineError::IdempotencyInProgress | PipelineError::IdempotencyMismatch)) => {
            return Err(error.into());
        }
        Err(error) => error,
    };
    let cause = format!("checkout failed: {}", error.code());
    let error = ApiError::from(error);
    // Retryable failures are not stored, so the client's retry with the
    // same key runs again, resuming the order if one was written (as with
    // Stripe); final ones are its answer from now on.
    if error.status.is_server_error() {
        return Err(error);
    }
    let response = StoredResponse {
        status: error.status.as_u16(),
        body: error.body(),
    };
    idempotency::record_failure(deps, &claim, &response, &cause).await?;
    Ok(stored(response, false))
}

/// The answer to a checkout that went through: `201` with the intent's
/// client secret, or `202` when it was taken for later and the client polls
/// the order for its intent.
fn created(outcome: &Checkout) -> StoredResponse {
    let (status, created) = match outcome {
        Checkout::Placed(placed) => (
            StatusCode::CREATED,
            OrderCreated {
                order_id: placed.order.id.to_string(),
                status: placed.order.status.to_string(),
                client_secret: Some(placed.client_secret.clone()),
                expires_at: placed.order.expires_at,
            },
        ),
        Checkout::Accepted(order) => {
            // `pending_payment` when only the intent was left for later: its
            // stock is held until then.
            let holds_stock = order.status == OrderStatus::PendingPayment;
            (
                StatusCode::ACCEPTED,
                OrderCreated {
                    order_id: order.id.to_string(),
                    status: order.status.to_string(),
                    client_secret: None,
                    expires_at: order.expires_at.filter(|_| holds_stock),
                },
            )
        }
    };
    StoredResponse {
        status: status.as_u16(),
        // Strings and a time: serializing cannot fail.
        body: serde_json::to_string(&created).unwrap_or_default(),
    }
}

fn parse_order_id(raw: &str) -> ApiResult<OrderId> {
    OrderId::parse(raw).map_err(|_| ApiError::not_found("order"))
}

#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "ord_…")),
    responses((status = 200, body = OrderOut), (status = 404, body = Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    _auth: Storefront,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderOut>> {
    let order = state
        .deps
        .store
        .get_order(&parse_order_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Json(order.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The customer's email.
    pub customer: Option<String>,
    pub status: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub data: Vec<OrderOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(ListQuery),
    responses((status = 200, body = OrderPage), (status = 422, body = Problem)))]
pub async fn list_orders(
    State(state): State<AppState>,
    _auth: Storefront,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<OrderPage>> {
    let mut errors = ValidationErrors::default();
    let email = query
        .customer
        .as_deref()
        .and_then(|raw| errors.collect("customer", Email::parse(raw)));
    let status = query
        .status
        .as_deref()
        .and_then(|raw| errors.collect("status", OrderStatus::parse(raw)));
    let before = query
        .cursor
        .as_deref()
        .and_then(|raw| errors.collect("cursor", OrderId::parse(raw)));
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        errors.push(holdfast_domain::FieldError::new("limit", "must be from 1 to 100"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation("invalid_query", errors));
    }
    // One extra row tells whether another page exists.
    let mut orders = state
        .deps
        .store
        .list_orders(&OrderFilter {
            email,
            status,
            before,
            limit: limit + 1,
        })
        .await?;
    let has_more = orders.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    orders.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if has_more {
        orders.last().map(|o| o.id.to_string())
    } else {
        None
    };
    Ok(Json(OrderPage {
        data: orders.into_iter().map(OrderOut::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEventOut {
    pub seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub cause: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderTimeline {
    pub order_id: String,
    pub data: Vec<OrderEventOut>,
}

/// The order's timeline: every transition with its time and cause.
#[utoipa::path(get, path = "/api/v1/orders/{id}/events", tag = "orders",
    params(("id" = String, Path, description = "ord_…")),
    responses((status = 200, body = OrderTimeline), (status = 404, body = Problem)))]
pub async fn order_events(
    State(state): State<AppState>,
    _auth: Storefront,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderTimeline>> {
    let id = parse_order_id(&id)?;
    let events = state.deps.store.order_events(&id).await?;
    if events.is_empty() {
        return Err(ApiError::not_found("order"));
    }
    let data = events
        .into_iter()
        .map(|e| OrderEventOut {
            seq: e.seq,
            from: e.from.map(|s| s.to_string()),
            to: e.to.to_string(),
            cause: e.cause,
            at: e.at,
        })
        .collect();
    Ok(Json(OrderTimeline {
        order_id: id.to_string(),
        data,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(order_events))
}
