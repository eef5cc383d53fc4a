//! Fulfillment: a paid order gets a warehouse shipment and becomes
//! `shipped` with its tracking number.
//!
//! The job is enqueued by the transition to `paid`, in the same transaction,
//! so a paid order always has one. Every step is idempotent: the warehouse
//! call carries the order id in its idempotency key (a job repeated after a
//! crash gets the same shipment back), the order moves to `fulfilling` once
//! the warehouse has the shipment, and `shipped` is recorded once.

use std::time::Duration;

use chrono::Utc;
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_resilience::CallOptions;
use holdfast_store::{ClaimedJob, Order, StatusChange, StoreError};

use super::context::WorkerContext;
use super::jobs::{JobOutcome, for_order};
use crate::providers::warehouse::{ShipmentItem, ShipmentRequest};

pub use crate::pipeline::queues::{FULFILLMENT as QUEUE, fulfillment_job as job};

/// Longest wait between two tries of one fulfillment.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub async fn handle(ctx: &WorkerContext, job: ClaimedJob) -> JobOutcome {
    for_order(
        &job,
        MAX_BACKOFF,
        |order_id| async move { fulfill(ctx, &order_id).await },
    )
    .await
}

/// Takes `order_id` from `paid` to `shipped`, resuming wherever a previous
/// attempt stopped.
#[tracing::instrument(skip(ctx))]
pub async fn fulfill(ctx: &WorkerContext, order_id: &OrderId) -> anyhow::Result<()> {
    let Some(order) = ctx.deps.store.get_order(order_id).await? else {
        tracing::warn!("order not found; nothing to fulfil");
        return Ok(());
    };
    if !matches!(order.status, OrderStatus::Paid | OrderStatus::Fulfilling) {
        // Shipped already (a repeated job), or no longer shippable.
        return Ok(());
    }
    // The shipment first: while the warehouse cannot take it, the order
    // stays `paid` and the job retries.
    let request = shipment_request(&order);
    // Idempotent: the shipment's key is derived from the order id.
    let shipment = ctx
        .deps
        .dependencies
        .warehouse
        .call(CallOptions::idempotent(), || ctx.warehouse.create_shipment(&request))
        .await
        .map_err(|error| {
            crate::telemetry::dependency_failed("warehouse", &error);
            anyhow::Error::new(error)
        })?;
    if order.status == OrderStatus::Paid {
        let cause = format!("shipment {} created at the warehouse", shipment.id);
        transition(
            ctx,
            StatusChange::new(order_id.clone(), OrderStatus::Fulfilling, cause, Utc::now()),
        )
        .await?;
    }
    let shipped = StatusChange::new(
        order_id.clone(),
        OrderStatus::Shipped,
        format!("shipped: {} tracking {}", shipment.id, shipment.tracking_id),
        Utc::now(),
    )
    .tracking_number(shipment.tracking_id);
    transition(ctx, shipped).await
}

async fn transition(ctx: &WorkerContext, change: StatusChange) -> anyhow::Result<()> {
    match ctx.deps.store.transition_order(&change).await {
        Ok(_) => Ok(()),
        // Cancelled meanwhile: nothing to ship.
        Err(StoreError::InvalidTransition(e)) => {
            tracing::warn!(error = %e, "order left the fulfillment path");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

fn shipment_request(order: &Order) -> ShipmentRequest {
    let address = match serde_json::to_value(&order.address) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    ShipmentRequest {
        order_id: order.id.to_string(),
        items: order
            .lines
            .iter()
            .map(|line| ShipmentItem {
                sku: line.sku.clone(),
                qty: line.qty,
            })
            .collect(),
        address,
        idempotency_key: format!("ship_{}", order.id),
    }
}
