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
use holdfast_store::{ClaimedJob, JobTemplate, NewJob, PlaceOrderError, StatusChange, StoreError};

use super::WorkerContext;
use super::jobs::{JobOutcome, backoff, payload_str};
use crate::pipeline::checkout::{request_intent, reservation_ttl};
use crate::providers::payments::ProviderError;

pub const QUEUE: &str = "checkout";

/// Longest wait between two tries while a dependency stays unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The completion job of an accepted order: one per order.
pub fn job(template: &JobTemplate, order_id: &OrderId, now: DateTime<Utc>) -> NewJob {
    template
        .job(order_id.as_str(), serde_json::json!({ "order_id": order_id }), now)
        .dedup_key(order_id.as_str())
}

pub async fn handle(ctx: &WorkerContext, job: ClaimedJob) -> JobOutcome {
    let Some(order_id) = payload_str(&job, "order_id").and_then(|raw| OrderId::parse(raw).ok()) else {
        tracing::error!(job = %job.job.id, "checkout job without a valid order_id; dropped");
        return JobOutcome::Done;
    };
    match complete(ctx, &order_id).await {
        Ok(()) => JobOutcome::Done,
        Err(error) => {
            tracing::info!(order_id = %order_id, error = format!("{error:#}"), "accepted order not completed yet");
            JobOutcome::retry(backoff(job.job.receive_count, MAX_BACKOFF), format!("{error:#}"))
        }
    }
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
        match ctx
            .store
            .reserve_accepted(order_id, now + reservation_ttl(&ctx.config), now)
            .await
        {
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
            crate::telemetry::dependency_error("payments", unavailable.reason());
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
    match ctx.store.transition_order(&change).await {
        Ok(_) | Err(StoreError::InvalidTransition(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
