//! Reserving an order's stock, all or nothing: in this node's database
//! (`inventory.mode = "local"`), or as a hold on the inventory node
//! (`"remote"`, see `remote`). Checkout reserves a new order's stock as it
//! records the order; the checkout worker reserves the stock of an order
//! taken as `accepted` while inventory was unavailable. Both come here, so
//! local and remote inventory are told apart in one place.

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderStatus, Quantity, Sku};
use holdfast_resilience::{CallError, CallOptions, Classify};
use holdfast_store::{NewOrder, Order, PlaceOrderError, StatusChange, StoreError, stored_lines};

use super::deps::Deps;
use super::error::{Error, Unavailable};
use super::remote;
use crate::providers::inventory::RemoteInventory;

/// The order whose stock is to be reserved.
#[derive(Debug, Clone, Copy)]
pub enum Reserve<'a> {
    /// A new order at checkout: written with its reservation, its timeline
    /// and outbox rows in one transaction.
    New(&'a NewOrder),
    /// An order taken as `accepted` earlier, to be paid by `paid_by` once
    /// its stock is reserved.
    Accepted {
        order: &'a Order,
        paid_by: DateTime<Utc>,
        now: DateTime<Utc>,
    },
}

/// How long an order holds its stock while it waits for payment.
pub fn reservation_ttl(config: &crate::config::Config) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(config.checkout.reservation_ttl_s).unwrap_or(900))
}

/// Reserves the order's stock and records it as `pending_payment`, or as it
/// is when it had moved on already. Fails with `OutOfStock` or `UnknownSku`
/// when inventory answers no, `Unavailable` when it cannot answer (so the
/// order can wait for it), and `Store` when the order's own write fails
/// (`Conflict`: an earlier attempt recorded it).
#[tracing::instrument(skip_all, fields(order_id = %order.order_id()))]
pub async fn reserve(deps: &Deps, order: Reserve<'_>) -> Result<Order, Error> {
    match &deps.inventory {
        Some(inventory) => reserve_remotely(deps, inventory, order).await,
        None => reserve_locally(deps, order).await,
    }
}

impl Reserve<'_> {
    fn order_id(&self) -> &holdfast_domain::OrderId {
        match self {
            Self::New(order) => &order.id,
            Self::Accepted { order, .. } => &order.id,
        }
    }
}

/// A local reservation's failure as the inventory policy sees it: the
/// database timing out or unreachable is the dependency being unavailable;
/// out of stock is inventory answering.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Placing(PlaceOrderError);

impl Classify for Placing {
    fn is_transient(&self) -> bool {
        database_unavailable(&self.0)
    }
}

fn database_unavailable(error: &PlaceOrderError) -> bool {
    matches!(error, PlaceOrderError::Store(store) if store.is_retryable())
}

/// Stock in this node's database. At checkout the write runs under the
/// inventory policy, so a locked stock table costs the request at most its
/// deadline; the worker's reservation does not, and its queue stops
/// claiming while that policy's breaker is open.
async fn reserve_locally(deps: &Deps, order: Reserve<'_>) -> Result<Order, Error> {
    let new_order = match order {
        Reserve::New(new_order) => new_order,
        Reserve::Accepted { order, paid_by, now } => {
            return Ok(deps.store.reserve_accepted(&order.id, paid_by, now).await?);
        }
    };
    let options = CallOptions::non_idempotent().with_deadline(crate::deadline::request_deadline());
    let placed = deps
        .dependencies
        .inventory
        .call(options, || async {
            deps.store.place_order(new_order).await.map_err(Placing)
        })
        .await;
    match placed {
        Ok(order) => Ok(order),
        Err(CallError::Failed(Placing(error))) if !database_unavailable(&error) => Err(error.into()),
        Err(unavailable) => Err(Unavailable::new("inventory", "inventory", unavailable).into()),
    }
}

/// Stock on the inventory node: hold it there (keyed by the order id, so a
/// retry finds the same hold), then record the order here without touching
/// any stock table. A hold whose order is never recorded (this node died,
/// or its database failed in between) is released by the inventory node
/// when it expires.
async fn reserve_remotely(deps: &Deps, inventory: &RemoteInventory, order: Reserve<'_>) -> Result<Order, Error> {
    match order {
        Reserve::New(new_order) => {
            let lines: Vec<(Sku, Quantity)> = new_order
                .lines
                .iter()
                .map(|(sku, qty, _)| (sku.clone(), *qty))
                .collect();
            remote::hold(deps, inventory, &new_order.id, &lines, new_order.expires_at).await?;
            Ok(deps.store.accept_order(new_order, &[]).await?)
        }
        Reserve::Accepted { order, paid_by, now } => {
            let lines = stored_lines(order)?;
            remote::hold(deps, inventory, &order.id, &lines, paid_by).await?;
            let change = StatusChange::new(
                order.id.clone(),
                OrderStatus::PendingPayment,
                "stock held by the inventory node",
                now,
            )
            .expires_at(paid_by);
            match deps.store.transition_order(&change).await {
                Ok(_) | Err(StoreError::InvalidTransition(_)) => {}
                Err(error) => return Err(error.into()),
            }
            deps.store
                .get_order(&order.id)
                .await?
                .ok_or_else(|| StoreError::NotFound(order.id.to_string()).into())
        }
    }
}
