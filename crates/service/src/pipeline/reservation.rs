//! Reserving an order's stock, all or nothing: in this node's database
//! (`inventory.mode = "local"`), or as a hold on the inventory node
//! (`"remote"`, see `remote`). Checkout reserves a new order's stock in its
//! first transaction, with the idempotency key and the order; the checkout worker reserves the stock of an order
//! taken as `accepted` while inventory was unavailable. Both come here, so
//! local and remote inventory are told apart in one place.

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderStatus, Quantity, Sku};
use holdfast_resilience::{CallError, CallOptions, Classify};
use holdfast_store::{
    CheckoutBegin, CheckoutStart, IdempotencyBegin, IdempotentRequest, NewOrder, Order, PlaceOrderError, StatusChange,
    Stock, StoreError, stored_lines,
};

use super::deps::Deps;
use super::error::{Error, Unavailable};
use super::remote;
use crate::providers::inventory::RemoteInventory;

/// An order taken as `accepted` earlier, whose stock is to be reserved now,
/// to be paid by `paid_by`.
#[derive(Debug, Clone, Copy)]
pub struct Reserve<'a> {
    pub order: &'a Order,
    pub paid_by: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// How long an order holds its stock while it waits for payment.
pub fn reservation_ttl(config: &crate::config::Config) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(config.checkout.reservation_ttl_s).unwrap_or(900))
}

/// Checkout's first write transaction: claims the idempotency `key` and
/// writes `order` (status `pending_payment`) with its stock reserved, its
/// timeline and outbox rows, or finds what an earlier request with the key
/// left (see `CheckoutBegin`). Fails with `OutOfStock` or `UnknownSku` when
/// inventory answers no (nothing is written, the key neither), and with
/// `Unavailable` when it cannot answer, so the order can be taken for later.
#[tracing::instrument(skip_all, fields(order_id = %order.id))]
pub async fn begin(deps: &Deps, key: &IdempotentRequest, order: &NewOrder) -> Result<CheckoutBegin, Error> {
    match &deps.inventory {
        Some(inventory) => begin_remotely(deps, inventory, key, order).await,
        None => begin_locally(deps, key, order).await,
    }
}

/// Reserves the stock of an order taken as `accepted` and records it as
/// `pending_payment`, or returns it as it is when it had moved on already.
/// Fails with `OutOfStock` or `UnknownSku` when inventory answers no,
/// `Unavailable` when it cannot answer, and `Store` when the order's own
/// write fails.
#[tracing::instrument(skip_all, fields(order_id = %order.order.id))]
pub async fn reserve(deps: &Deps, order: Reserve<'_>) -> Result<Order, Error> {
    match &deps.inventory {
        Some(inventory) => reserve_remotely(deps, inventory, order).await,
        None => Ok(deps
            .store
            .reserve_accepted(&order.order.id, order.paid_by, order.now)
            .await?),
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

/// Stock in this node's database, reserved in checkout's first transaction.
/// The transaction runs under the inventory policy, so a locked stock table
/// costs the request at most its deadline; the worker's reservation does
/// not, and its queue stops claiming while that policy's breaker is open.
async fn begin_locally(deps: &Deps, key: &IdempotentRequest, order: &NewOrder) -> Result<CheckoutBegin, Error> {
    let start = CheckoutStart {
        key,
        order,
        stock: Stock::Reserve,
        jobs: &[],
        answer: None,
    };
    let options = CallOptions::non_idempotent().with_deadline(crate::deadline::request_deadline());
    let begun = deps
        .dependencies
        .inventory
        .call(options, || async {
            deps.store.checkouts().begin(&start).await.map_err(Placing)
        })
        .await;
    match begun {
        Ok(begun) => Ok(begun),
        Err(CallError::Failed(Placing(error))) if !database_unavailable(&error) => Err(error.into()),
        Err(unavailable) => Err(Unavailable::new("inventory", "inventory", unavailable).into()),
    }
}

/// Stock on the inventory node: hold it there (keyed by the order id, so a
/// retry finds the same hold), then claim the key and record the order here
/// without touching any stock table. The order id comes from the key as it
/// stands (a taken-over key keeps its first attempt's order). A hold whose
/// order is never recorded (this node died, its database failed in
/// between, or another request with the key won) is released by the
/// inventory node when it expires.
async fn begin_remotely(
    deps: &Deps,
    inventory: &RemoteInventory,
    key: &IdempotentRequest,
    order: &NewOrder,
) -> Result<CheckoutBegin, Error> {
    let id = match deps.store.checkouts().peek(key).await? {
        IdempotencyBegin::New(id) => id,
        IdempotencyBegin::Replay(answer) => return Ok(CheckoutBegin::Replay(answer)),
        IdempotencyBegin::InProgress => return Ok(CheckoutBegin::InProgress),
        IdempotencyBegin::Mismatch => return Ok(CheckoutBegin::Mismatch),
    };
    let mut order = order.clone();
    order.id = holdfast_domain::OrderId::from_trusted(id);
    let key = IdempotentRequest {
        resource_id: order.id.to_string(),
        ..key.clone()
    };
    let lines: Vec<(Sku, Quantity)> = order.lines.iter().map(|(sku, qty, _)| (sku.clone(), *qty)).collect();
    remote::hold(deps, inventory, &order.id, &lines, order.expires_at).await?;
    let start = CheckoutStart {
        key: &key,
        order: &order,
        stock: Stock::Untouched,
        jobs: &[],
        answer: None,
    };
    Ok(deps.store.checkouts().begin(&start).await?)
}

/// Stock on the inventory node for an order taken as `accepted`: hold it
/// there, then move the order to `pending_payment` here.
async fn reserve_remotely(deps: &Deps, inventory: &RemoteInventory, reserve: Reserve<'_>) -> Result<Order, Error> {
    let Reserve { order, paid_by, now } = reserve;
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
