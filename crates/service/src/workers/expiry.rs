//! Releases the stock of orders whose reservation expired before payment and
//! cancels them.

use chrono::{DateTime, Utc};
use holdfast_domain::OrderStatus;
use holdfast_store::{HoldAction, SharedStore, StatusChange, StoreError, TransitionOutcome};

pub const BATCH: i64 = 100;

/// Cancels every order awaiting payment whose reservation expired before
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
