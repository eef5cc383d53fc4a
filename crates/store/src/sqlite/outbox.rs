//! The outbox relay's SQLite steps. The relay's write transaction holds the
//! database's one write lock, so relays on several processes take turns and
//! rows commit in sequence order: there is no mark to keep. With no arrays to
//! bind, a batch is written one delivery and one job at a time. The rest is
//! shared (`impl_outbox!` in `outbox.rs`).

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

use super::create_deliveries;
use crate::outbox::Pass;
use crate::webhooks::NewDelivery;
use crate::{NewJob, OutboxEvent, Result};

type Tx = Transaction<'static, Sqlite>;

/// `BEGIN IMMEDIATE` took the lock already.
pub(super) async fn relay_lock(_tx: &mut Tx) -> Result<Option<()>> {
    Ok(Some(()))
}

/// Every row read continues the sequence.
pub(super) async fn relay_pass(_tx: &mut Tx, _mark: &(), unpublished: &[i64], _now: DateTime<Utc>) -> Result<Pass> {
    Ok(Pass {
        publish: unpublished.len(),
        ..Pass::default()
    })
}

/// Each delivery and job one at a time, in the fan-out's order, then the
/// events published.
pub(super) async fn relay_publish(
    tx: &mut Tx,
    events: &[OutboxEvent],
    fan_out: Vec<(Option<NewDelivery<'_>>, NewJob)>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let delivered = create_deliveries(tx, &fan_out, now).await?;
    // The write lock is held since the read, so the unpublished events up to
    // the last one read are exactly the ones relayed.
    let last = events.last().map_or(0, |e| e.seq);
    sqlx::query("UPDATE outbox_events SET published_at = $2 WHERE published_at IS NULL AND seq <= $1")
        .bind(last)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(delivered)
}
