//! Calls to a remote inventory node (`inventory.mode = "remote"`), each under
//! the `inventory` policy: its deadline (and what is left of the request's),
//! bulkhead, retry budget and breaker. Holds are keyed by the order id, so
//! their calls are idempotent and may be retried.

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, Quantity, Sku, StockEffect};
use holdfast_resilience::{CallError, CallOptions};

use super::deps::Deps;
use super::error::{Error, Unavailable};
use crate::providers::inventory::{HoldOut, InventoryError, LevelOut, RemoteInventory};

/// Holds `lines` for `order_id` on the inventory node, until
/// `inventory.hold_grace_s` after the order's payment deadline `paid_by`, so
/// this node's expiry always releases the hold before the inventory node's.
/// Too little stock or an unknown SKU is the inventory node's answer; any
/// other failure is `Unavailable`, and the order can be taken for later.
pub async fn hold(
    deps: &Deps,
    inventory: &RemoteInventory,
    order_id: &OrderId,
    lines: &[(Sku, Quantity)],
    paid_by: DateTime<Utc>,
) -> Result<(), Error> {
    let grace = chrono::Duration::seconds(i64::try_from(deps.config.inventory.hold_grace_s).unwrap_or(i64::MAX));
    let until = paid_by.checked_add_signed(grace).unwrap_or(paid_by);
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    let held = deps
        .dependencies
        .inventory
        .call(options, || inventory.hold(order_id, lines, until))
        .await;
    match held {
        Ok(_) => Ok(()),
        Err(CallError::Failed(InventoryError::OutOfStock {
            sku,
            requested,
            available,
        })) => Err(Error::OutOfStock {
            sku,
            requested: u32::try_from(requested).unwrap_or(u32::MAX),
            available,
        }),
        Err(CallError::Failed(InventoryError::UnknownSku(sku))) => Err(Error::UnknownSku(sku)),
        Err(unavailable) => Err(Unavailable::new("inventory", "inventory", unavailable).into()),
    }
}

/// Applies a status change's stock effect to the order's hold.
pub async fn settle(
    deps: &Deps,
    inventory: &RemoteInventory,
    order_id: &OrderId,
    effect: StockEffect,
) -> Result<HoldOut, CallError<InventoryError>> {
    let action = match effect {
        StockEffect::Commit => "commit",
        StockEffect::Consume => "consume",
        StockEffect::Release => "release",
    };
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    deps.dependencies
        .inventory
        .call(options, || inventory.settle(order_id, action))
        .await
}

/// A SKU's stock levels, read through from the inventory node.
pub async fn level(deps: &Deps, sku: &Sku) -> Result<LevelOut, Error> {
    let inventory = deps
        .inventory
        .as_deref()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("inventory.mode is not \"remote\"")))?;
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    match deps.dependencies.inventory.call(options, || inventory.level(sku)).await {
        Ok(level) => Ok(level),
        Err(CallError::Failed(InventoryError::NotFound)) => Err(Error::NotFound("product")),
        Err(error) => Err(Unavailable::new("inventory", "the inventory node", error).into()),
    }
}
