//! The outbox relay's PostgreSQL steps: its advisory lock, its mark in the
//! sequence (`sequence.rs` plans a pass, this reads and writes the mark), and
//! a batch's writes in a few array statements. The rest is shared
//! (`impl_outbox!` in `outbox.rs`).

use chrono::{DateTime, Utc};

use super::Tx;
use super::queue::enqueue_many_in_tx;
use super::sequence::{self, Gap, Mark};
use crate::outbox::Pass;
use crate::webhooks::NewDelivery;
use crate::{NewJob, OutboxEvent, Result};

/// The advisory lock that makes one relay run at a time across all nodes
/// ("OUTBOX" folded into an i64), so events are fanned out in sequence order.
const RELAY_LOCK: i64 = 0x4F55_5442_4F58;

/// Takes the relay's lock for this transaction (`None` if another node holds
/// it), then reads the mark.
pub(super) async fn relay_lock(tx: &mut Tx) -> Result<Option<Mark>> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RELAY_LOCK)
        .fetch_one(&mut **tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let mark = sqlx::query_as(
        "SELECT high_water, gap_since, gap_xmax IS NOT NULL AS gap_xmax_taken, \
           coalesce(pg_snapshot_xmin(pg_current_snapshot()) >= gap_xmax, false) AS gap_settled \
         FROM outbox_relay",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(mark))
}

/// Plans the pass over the rows read (see `sequence`) and stores the mark it
/// leaves.
pub(super) async fn relay_pass(tx: &mut Tx, mark: &Mark, unpublished: &[i64], now: DateTime<Utc>) -> Result<Pass> {
    let plan = sequence::plan(mark, unpublished, now);
    if plan.high_water != mark.high_water || plan.gap != Gap::Keep {
        let (gap_since, xmax) = match plan.gap {
            Gap::Clear => (None, "clear"),
            Gap::Seen(at) => (Some(at), "clear"),
            Gap::TakeXmax => (mark.gap_since, "take"),
            Gap::Keep => (mark.gap_since, "keep"),
        };
        sqlx::query(
            "UPDATE outbox_relay SET high_water = $1, gap_since = $2, \
               gap_xmax = CASE $3 WHEN 'take' THEN pg_snapshot_xmax(pg_current_snapshot()) \
                                  WHEN 'keep' THEN gap_xmax END",
        )
        .bind(plan.high_water)
        .bind(gap_since)
        .bind(xmax)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Pass {
        publish: plan.publish.len(),
        late: plan.late,
        skipped: plan.skipped,
    })
}

/// The batch's fan-out in two statements: its deliveries, then every job
/// (events, inventory, webhooks) in one enqueue, which locks the groups' head
/// rows in the one order every writer uses. Then the events are published.
pub(super) async fn relay_publish(
    tx: &mut Tx,
    events: &[OutboxEvent],
    fan_out: Vec<(Option<NewDelivery<'_>>, NewJob)>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let (deliveries, mut jobs): (Vec<_>, Vec<_>) = fan_out.into_iter().unzip();
    let deliveries: Vec<NewDelivery> = deliveries.into_iter().flatten().collect();
    let mut delivered = 0;
    if !deliveries.is_empty() {
        delivered = sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, status, created_at) \
             SELECT id, endpoint_id, event_id, event_type, 'pending', $5 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS d(id, endpoint_id, event_id, event_type)",
        )
        .bind(deliveries.iter().map(|d| d.id.as_str()).collect::<Vec<_>>())
        .bind(deliveries.iter().map(|d| d.endpoint.id.as_str()).collect::<Vec<_>>())
        .bind(deliveries.iter().map(|d| d.event.id.as_str()).collect::<Vec<_>>())
        .bind(
            deliveries
                .iter()
                .map(|d| d.event.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    // A stable sort: each group keeps its events' order.
    jobs.sort_by(|a, b| {
        (a.queue.as_bytes(), a.group_key.as_bytes()).cmp(&(b.queue.as_bytes(), b.group_key.as_bytes()))
    });
    enqueue_many_in_tx(tx, &jobs).await?;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    sqlx::query("UPDATE outbox_events SET published_at = $2 WHERE seq = ANY($1)")
        .bind(&seqs)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(delivered)
}
