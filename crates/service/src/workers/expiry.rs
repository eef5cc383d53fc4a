//! Releases the stock of orders whose reservation expired before payment and
//! cancels them; also cancels a failed checkout (back in `accepted`, its
//! stock already returned) that no retry resumed before then. Hands the
//! checkout worker the checkouts that stopped between their two
//! transactions, so their payment is not left waiting for a client retry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_domain::OrderStatus;
use holdfast_store::{HoldAction, JobTemplate, SharedStore, StatusChange, StoreError, TransitionOutcome};

use crate::pipeline::queues;

pub const BATCH: i64 = 100;

/// Cancels every order awaiting payment (or a failed checkout awaiting its
/// retry) whose reservation expired before
/// `now`; returns how many it cancelled. Safe on many nodes at once: the
/// transition locks the order, and a second sweeper finds it already done.
pub async fn sweep_once(store: &SharedStore, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let expired = store.expired_orders(now, BATCH).await?;
    let mut cancelled = 0;
    for order_id in expired {
        let change = StatusChange::new(
            order_id,
            OrderStatus::Cancelled,
            "reservation expired before payment",
            now,
        );
        match store.transition_order(&change).await {
            Ok(TransitionOutcome::Changed { .. }) => cancelled += 1,
            Ok(TransitionOutcome::Unchanged) => {}
            // Paid in the meantime: the payment won the race, as it should.
            Err(StoreError::InvalidTransition(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(cancelled)
}

/// Enqueues the checkout job of every order whose checkout stopped after its
/// first transaction (the node died, or the database went away before the
/// second one): awaiting payment, no payment intent recorded, and placed more
/// than `grace` before `now`. `grace` outlasts any request, so the order's
/// own request has given up by then. The worker creates the intent (or finds
/// it: its key is the order id) and records it; a client retry with the key
/// meanwhile resumes the same order and the same intent. Orders have one job
/// per queue (deduplicated by the order id), so sweeping again before the
/// worker gets to it changes nothing. Returns how many it found.
pub async fn resume_stalled_once(
    store: &SharedStore,
    checkout: &JobTemplate,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    // A grace past the calendar's range leaves nothing old enough.
    let Some(before) = chrono::TimeDelta::from_std(grace)
        .ok()
        .and_then(|grace| now.checked_sub_signed(grace))
    else {
        return Ok(0);
    };
    let stalled = store.stalled_checkouts(before, BATCH).await?;
    for order_id in &stalled {
        tracing::info!(%order_id, "checkout stopped between its transactions; the checkout worker completes it");
        store
            .queue()
            .enqueue(&queues::checkout_job(checkout, order_id, now))
            .await?;
    }
    Ok(stalled.len())
}

/// Releases every stock hold (the inventory node's reservations for remote
/// order nodes) still unpaid past its expiry; returns how many it released.
/// The order node releases its holds itself when its orders expire; this
/// catches the holds of order nodes that never came back.
pub async fn sweep_holds_once(store: &SharedStore, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let expired = store.holds().expired(now, BATCH).await?;
    let mut released = 0;
    for id in expired {
        match store.holds().settle(&id, HoldAction::Release, now).await {
            Ok(_) => released += 1,
            // Settled meanwhile by its order node: nothing to do.
            Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(released)
}
