//! Completes orders taken as `accepted` while inventory was unavailable:
//! reserve their stock (all or nothing) and create their payment intent, or
//! reject them with nothing held if the stock ran out meanwhile.
//!
//! Each step is idempotent, so a job repeated after a crash resumes where
//! the last attempt stopped: an order already `pending_payment` only needs
//! its intent, and the intent's key is derived from the order id.

use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_resilience::CallError;
use holdfast_store::{ClaimedJob, Order, PlaceOrderError, StatusChange, StoreError, stored_lines};

use super::context::WorkerContext;
use super::jobs::{JobOutcome, for_order};
use crate::pipeline::checkout::{request_intent, reservation_ttl};
use crate::pipeline::remote::{self, HoldRefused};
use crate::providers::inventory::RemoteInventory;
use crate::providers::payments::ProviderError;

pub use crate::pipeline::queues::{CHECKOUT as QUEUE, checkout_job as job};

/// Longest wait between two tries while a dependency stays unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub async fn handle(ctx: &WorkerContext, job: ClaimedJob) -> JobOutcome {
    for_order(
        &job,
        MAX_BACKOFF,
        |order_id| async move { complete(ctx, &order_id).await },
    )
    .await
}

/// Takes `order_id` from `accepted` to `pending_payment` with its intent.
#[tracing::instrument(skip(ctx))]
pub async fn complete(ctx: &WorkerContext, order_id: &OrderId) -> anyhow::Result<()> {
    let Some(mut order) = ctx.store.get_order(order_id).await? else {
        tracing::warn!("order not found; nothing to complete");
        return Ok(());
    };
    if order.status == OrderStatus::Accepted {
        let now = Utc::now();
        let reserved = match &ctx.inventory {
            Some(remote) => hold_remotely(ctx, remote, &order, now).await,
            None => {
                ctx.store
                    .reserve_accepted(order_id, now + reservation_ttl(&ctx.config), now)
                    .await
            }
        };
        match reserved {
            Ok(reserved) => order = reserved,
            Err(PlaceOrderError::OutOfStock {
                sku,
                requested,
                available,
            }) => {
                let cause = format!("out of stock when reserved: {sku} {requested} requested, {available} available");
                return reject(ctx, order_id, cause).await;
            }
            Err(PlaceOrderError::UnknownSku(sku)) => {
                return reject(ctx, order_id, format!("{sku} is no longer in the catalogue")).await;
            }
            Err(PlaceOrderError::Store(error)) => return Err(error.into()),
        }
    }
    if order.status != OrderStatus::PendingPayment || order.payment_intent_id.is_some() {
        return Ok(());
    }
    match request_intent(&ctx.dependencies, ctx.payments.as_ref(), &order).await {
        Ok(intent) => Ok(ctx.store.attach_payment_intent(order_id, &intent).await?),
        Err(CallError::Failed(ProviderError::Rejected { code, message })) => {
            // The provider refuses this payment for good: give the stock back.
            let cause = format!("the payment provider refused the intent: {code}: {message}");
            transition(
                ctx,
                StatusChange::new(order_id.clone(), OrderStatus::Cancelled, cause, Utc::now()),
            )
            .await
        }
        Err(unavailable) => {
            crate::telemetry::dependency_failed("payments", &unavailable);
            Err(anyhow::Error::new(unavailable))
        }
    }
}

/// Remote inventory: hold the order's stock on the inventory node (the same
/// hold again if an earlier attempt made it), then move the order to
/// `pending_payment` here. Answers as `reserve_accepted` does.
async fn hold_remotely(
    ctx: &WorkerContext,
    remote: &RemoteInventory,
    order: &Order,
    now: DateTime<Utc>,
) -> Result<Order, PlaceOrderError> {
    let lines = stored_lines(order)?;
    let expires_at = now + reservation_ttl(&ctx.config);
    match remote::hold(&ctx.config, &ctx.dependencies, remote, &order.id, &lines, expires_at).await {
        Ok(()) => {}
        Err(HoldRefused::Stock(refused)) => return Err(refused),
        Err(HoldRefused::Unavailable(unavailable)) => {
            crate::telemetry::dependency_failed("inventory", &unavailable);
            let why = format!("inventory node: {:#}", anyhow::Error::new(unavailable));
            return Err(StoreError::Unavailable(why).into());
        }
    }
    let change = StatusChange::new(
        order.id.clone(),
        OrderStatus::PendingPayment,
        "stock held by the inventory node",
        now,
    )
    .expires_at(expires_at);
    match ctx.store.transition_order(&change).await {
        Ok(_) | Err(StoreError::InvalidTransition(_)) => {}
        Err(error) => return Err(error.into()),
    }
    ctx.store
        .get_order(&order.id)
        .await?
        .ok_or_else(|| StoreError::NotFound(order.id.to_string()).into())
}

async fn reject(ctx: &WorkerContext, order_id: &OrderId, cause: String) -> anyhow::Result<()> {
    transition(
        ctx,
        StatusChange::new(order_id.clone(), OrderStatus::Rejected, cause, Utc::now()),
    )
    .await
}

async fn transition(ctx: &WorkerContext, change: StatusChange) -> anyhow::Result<()> {
    match ctx.store.transition_order(&change).await {
        Ok(_) | Err(StoreError::InvalidTransition(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
