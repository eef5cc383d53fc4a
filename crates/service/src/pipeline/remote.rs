//! Calls to a remote inventory node (`inventory.mode = "remote"`), each under
//! the `inventory` policy: its deadline (and what is left of the request's),
//! bulkhead, retry budget and breaker. Holds are keyed by the order id, so
//! their calls are idempotent and may be retried.

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use holdfast_domain::{FieldError, OrderId, Quantity, Sku, StockEffect};
use holdfast_resilience::{CallError, CallOptions, Registry};
use holdfast_store::PlaceOrderError;
use serde::Serialize;

use super::checkout::policy;
use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::providers::inventory::{HoldOut, InventoryError, LevelOut, RemoteInventory};

/// Why the inventory node did not hold an order's stock.
#[derive(Debug)]
pub enum HoldRefused {
    /// It answered: too little stock, or a SKU it does not know.
    Stock(PlaceOrderError),
    /// It could not answer in time, is refusing calls, or refused this
    /// node's call: the order can be taken for later.
    Unavailable(CallError<InventoryError>),
}

/// Holds `lines` for `order_id` on the inventory node, until
/// `inventory.hold_grace_s` after the order's payment deadline `paid_by`, so
/// this node's expiry always releases the hold before the inventory node's.
pub async fn hold(
    config: &Config,
    dependencies: &Registry,
    inventory: &RemoteInventory,
    order_id: &OrderId,
    lines: &[(Sku, Quantity)],
    paid_by: DateTime<Utc>,
) -> Result<(), HoldRefused> {
    let grace = chrono::Duration::seconds(i64::try_from(config.inventory.hold_grace_s).unwrap_or(i64::MAX));
    let until = paid_by.checked_add_signed(grace).unwrap_or(paid_by);
    let policy = policy(dependencies, "inventory")
        .map_err(|e| HoldRefused::Unavailable(CallError::Failed(InventoryError::Unavailable(e.to_string()))))?;
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    match policy.call(options, || inventory.hold(order_id, lines, until)).await {
        Ok(_) => Ok(()),
        Err(CallError::Failed(InventoryError::OutOfStock {
            sku,
            requested,
            available,
        })) => Err(HoldRefused::Stock(PlaceOrderError::OutOfStock {
            sku,
            requested: u32::try_from(requested).unwrap_or(u32::MAX),
            available,
        })),
        Err(CallError::Failed(InventoryError::UnknownSku(sku))) => {
            Err(HoldRefused::Stock(PlaceOrderError::UnknownSku(sku)))
        }
        Err(unavailable) => Err(HoldRefused::Unavailable(unavailable)),
    }
}

/// Applies a status change's stock effect to the order's hold.
pub async fn settle(
    dependencies: &Registry,
    inventory: &RemoteInventory,
    order_id: &OrderId,
    effect: StockEffect,
) -> Result<HoldOut, CallError<InventoryError>> {
    let action = match effect {
        StockEffect::Commit => "commit",
        StockEffect::Consume => "consume",
        StockEffect::Release => "release",
    };
    let policy =
        policy(dependencies, "inventory").map_err(|e| CallError::Failed(InventoryError::Unavailable(e.to_string())))?;
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    policy.call(options, || inventory.settle(order_id, action)).await
}

/// A SKU's stock levels, read through from the inventory node.
pub async fn level(state: &AppState, sku: &Sku) -> Result<LevelOut, ApiError> {
    let inventory = remote(state)?;
    let policy = policy(&state.dependencies, "inventory").map_err(ApiError::internal)?;
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    match policy.call(options, || inventory.level(sku)).await {
        Ok(level) => Ok(level),
        Err(CallError::Failed(InventoryError::NotFound)) => Err(ApiError::not_found("product")),
        Err(error) => Err(unavailable(error)),
    }
}

/// Sends an admin call on to the inventory node; its answer comes back as is.
pub async fn forward(
    state: &AppState,
    method: Method,
    path: &str,
    body: &impl Serialize,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let inventory = remote(state)?;
    let body = serde_json::to_value(body).map_err(ApiError::internal)?;
    let policy = policy(&state.dependencies, "inventory").map_err(ApiError::internal)?;
    let options = CallOptions::non_idempotent().with_deadline(crate::deadline::request_deadline());
    policy
        .call(options, || inventory.forward(method.clone(), path, &body))
        .await
        .map_err(unavailable)
}

/// The inventory node refused a forwarded call: the same status, its detail
/// and field errors.
pub fn refused(status: StatusCode, body: &serde_json::Value) -> ApiError {
    let text = |key: &str| body.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let mut error = ApiError::new(
        status,
        "inventory_refused",
        format!("the inventory node refused: {}: {}", text("code"), text("detail")),
    );
    if let Some(fields) = body.get("errors").and_then(|v| v.as_array()) {
        error.errors = fields
            .iter()
            .map(|f| {
                let get = |key: &str| f.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                FieldError::new(get("field"), get("message"))
            })
            .collect();
    }
    error
}

/// 503 with `Retry-After`: the inventory node is unreachable, slow, failing,
/// saturated, refusing this node, or its breaker is open.
fn unavailable(error: CallError<InventoryError>) -> ApiError {
    ApiError::dependency("inventory", "the inventory node", error)
}

fn remote(state: &AppState) -> Result<&RemoteInventory, ApiError> {
    state
        .inventory
        .as_deref()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("inventory.mode is not \"remote\"")))
}
