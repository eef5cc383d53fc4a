//! Completes orders taken as `accepted` while inventory was unavailable:
//! reserve their stock (all or nothing) and create their payment intent, or
//! reject them with nothing held if the stock ran out meanwhile.
//!
//! Each step is idempotent, so a job repeated after a crash resumes where
//! the last attempt stopped: an order already `pending_payment` only needs
//! its intent, and the intent's key is derived from the order id.

use std::time::Duration;

use chrono::Utc;
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_resilience::CallError;
use holdfast_store::{ClaimedJob, StatusChange, StoreError};

use super::context::WorkerContext;
use super::jobs::{JobOutcome, for_order};
use crate::pipeline::Error;
use crate::pipeline::checkout::request_intent;
use crate::pipeline::reservation::{self, Reserve, reservation_ttl};
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
    let deps = &ctx.deps;
    let Some(mut order) = deps.store.get_order(order_id).await? else {
        tracing::warn!("order not found; nothing to complete");
        return Ok(());
    };
    if order.status == OrderStatus::Accepted {
        let now = Utc::now();
        let accepted = Reserve {
            order: &order,
            paid_by: now + reservation_ttl(&deps.config),
            now,
        };
        match reservation::reserve(deps, accepted).await {
            Ok(reserved) => order = reserved,
            Err(Error::OutOfStock {
                sku,
                requested,
                available,
            }) => {
                let cause = format!("out of stock when reserved: {sku} {requested} requested, {available} available");
                return reject(ctx, order_id, cause).await;
            }
            Err(Error::UnknownSku(sku)) => {
                return reject(ctx, order_id, format!("{sku} is no longer in the catalogue")).await;
            }
            Err(Error::Unavailable(unavailable)) => {
                // Not the store's outage: retried with the receive's backoff.
                return Err(anyhow::anyhow!("inventory node unavailable: {:#}", unavailable.error));
            }
            Err(error) => return Err(error.into()),
        }
    }
    if order.status != OrderStatus::PendingPayment || order.payment_intent_id.is_some() {
        return Ok(());
    }
    match request_intent(deps, &order).await {
        Ok(intent) => Ok(deps.store.attach_payment_intent(order_id, &intent).await?),
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

async fn reject(ctx: &WorkerContext, order_id: &OrderId, cause: String) -> anyhow::Result<()> {
    transition(
        ctx,
        StatusChange::new(order_id.clone(), OrderStatus::Rejected, cause, Utc::now()),
    )
    .await
}

async fn transition(ctx: &WorkerContext, change: StatusChange) -> anyhow::Result<()> {
    match ctx.deps.store.transition_order(&change).await {
        Ok(_) | Err(StoreError::InvalidTransition(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
