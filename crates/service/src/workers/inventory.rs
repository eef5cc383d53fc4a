//! Applies order status changes to a remote inventory node's holds
//! (`inventory.mode = "remote"`): commit when paid, consume when shipped,
//! release when the payment failed or the order was cancelled or rejected.
//!
//! The relay makes one job per such event, grouped by order, so one order's
//! changes reach the inventory node in the order they happened. Every call
//! is idempotent on the inventory node (a repeated change answers the hold
//! as it is), so a job repeated after a crash changes nothing twice.

use std::time::Duration;

use holdfast_domain::{OrderId, OrderStatus};
use holdfast_resilience::CallError;
use holdfast_store::ClaimedJob;

use super::context::WorkerContext;
use super::jobs::{JobOutcome, backoff, job_event};
use crate::pipeline::remote;
use crate::providers::inventory::InventoryError;

pub use crate::pipeline::queues::INVENTORY as QUEUE;

const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub async fn handle(ctx: &WorkerContext, job: ClaimedJob) -> JobOutcome {
    let retry = |error: String| JobOutcome::retry(backoff(job.job.receive_count, MAX_BACKOFF), error);
    let Some(inventory) = &ctx.deps.inventory else {
        // Made while this deployment ran remote inventory: keep it for a
        // node that still does, rather than dropping the change.
        return retry("inventory.mode is not \"remote\" on this node".into());
    };
    let event = match job_event(&ctx.deps.store, &job, MAX_BACKOFF).await {
        Ok(event) => event,
        Err(outcome) => return outcome,
    };
    let effect = OrderStatus::from_event_type(&event.event_type).and_then(OrderStatus::stock_effect);
    let (Some(effect), Ok(order_id)) = (effect, OrderId::parse(&event.aggregate_id)) else {
        tracing::error!(event_id = %event.id, event_type = %event.event_type, "inventory job for an event without a stock effect; dropped");
        return JobOutcome::Done;
    };
    match remote::settle(&ctx.deps, inventory, &order_id, effect).await {
        Ok(hold) => {
            tracing::debug!(order_id = %order_id, status = %hold.status, "hold settled");
            metrics::counter!("holdfast_inventory_settlements_total", "outcome" => "settled").increment(1);
            JobOutcome::Done
        }
        Err(CallError::Failed(InventoryError::NotFound)) => {
            // The order never held stock there (rejected or cancelled
            // before it was reserved): nothing to change.
            metrics::counter!("holdfast_inventory_settlements_total", "outcome" => "no_hold").increment(1);
            JobOutcome::Done
        }
        Err(CallError::Failed(InventoryError::Conflict(detail))) => {
            // E.g. a payment that arrived after the hold was released. The
            // inventory node will not take the change; retrying cannot help.
            tracing::error!(order_id = %order_id, ?effect, detail, "the inventory node refused a stock change");
            metrics::counter!("holdfast_inventory_settlements_total", "outcome" => "conflict").increment(1);
            JobOutcome::Done
        }
        Err(error) => {
            crate::telemetry::dependency_failed("inventory", &error);
            retry(format!("{:#}", anyhow::Error::new(error)))
        }
    }
}
