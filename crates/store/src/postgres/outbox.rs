//! The outbox relay on PostgreSQL.

use super::Tx;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::DeliveryId;

use super::PgStore;
use super::queue::{enqueue_in_tx, enqueue_many_in_tx};
use super::sequence::{self, Gap, Mark, Plan};
use crate::outbox::{OutboxRow, delivery_job_payload, event_job_payload, has_stock_effect};
use crate::webhooks::EndpointRow;
use crate::{JobTemplate, Outbox, OutboxEvent, OutboxLag, RelayOptions, RelayOutcome, Result, WebhookEndpoint};

/// The advisory lock that makes one relay run at a time across all nodes
/// ("OUTBOX" folded into an i64), so events are fanned out in sequence order.
const RELAY_LOCK: i64 = 0x4F55_5442_4F58;

#[async_trait]
impl Outbox for PgStore {
    async fn relay_batch(&self, options: &RelayOptions) -> Result<RelayOutcome> {
        let mut tx = self.worker.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(RelayOutcome {
                busy: true,
                ..RelayOutcome::default()
            });
        }
        let mark = read_mark(&mut tx).await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox_events WHERE published_at IS NULL ORDER BY seq LIMIT $1"
        ))
        .bind(options.limit)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(RelayOutcome::default());
        }
        // Only rows that continue the sequence without a hole (see `sequence`).
        let unpublished: Vec<i64> = rows.iter().map(|row| row.seq).collect();
        let plan = sequence::plan(&mark, &unpublished, options.now);
        write_mark(&mut tx, &mark, &plan).await?;
        let events = rows
            .into_iter()
            .take(plan.publish.len())
            .map(OutboxEvent::try_from)
            .collect::<Result<Vec<_>>>()?;
        if events.is_empty() {
            tx.commit().await?;
            return Ok(RelayOutcome {
                held: true,
                ..RelayOutcome::default()
            });
        }
        let endpoints = enabled_endpoints(&mut tx).await?;
        // The whole batch's fan-out in two statements: its deliveries, then
        // every job (events, inventory, webhooks) in one enqueue, which locks
        // the groups' head rows in the one order every writer uses.
        let mut deliveries = NewDeliveries::default();
        let mut jobs = Vec::new();
        for event in &events {
            for endpoint in endpoints.iter().filter(|e| e.wants(&event.event_type)) {
                let id = deliveries.push(endpoint, event);
                jobs.push(
                    options
                        .webhooks
                        .job(endpoint.id.as_str(), delivery_job_payload(id.as_str()), options.now),
                );
            }
            if let Some(template) = &options.events {
                jobs.push(
                    template
                        .job(&event.aggregate_id, event_job_payload(&event.id), options.now)
                        .dedup_key(&event.id),
                );
            }
            if let Some(template) = options
                .inventory
                .as_ref()
                .filter(|_| has_stock_effect(&event.event_type))
            {
                jobs.push(
                    template
                        .job(&event.aggregate_id, event_job_payload(&event.id), options.now)
                        .dedup_key(&event.id),
                );
            }
        }
        // A stable sort: each group keeps its events' order.
        jobs.sort_by(|a, b| {
            (a.queue.as_bytes(), a.group_key.as_bytes()).cmp(&(b.queue.as_bytes(), b.group_key.as_bytes()))
        });
        let delivered = deliveries.insert(&mut tx, options.now).await?;
        enqueue_many_in_tx(&mut tx, &jobs).await?;
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        sqlx::query("UPDATE outbox_events SET published_at = $2 WHERE seq = ANY($1)")
            .bind(&seqs)
            .bind(options.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RelayOutcome {
            events: seqs.len() as u64,
            deliveries: delivered,
            busy: false,
            held: plan.publish.len() < unpublished.len(),
            late: plan.late,
            skipped: plan.skipped,
        })
    }

    async fn event(&self, id: &str) -> Result<Option<OutboxEvent>> {
        let row: Option<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox_events WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.worker)
        .await?;
        row.map(OutboxEvent::try_from).transpose()
    }

    async fn lag(&self, now: DateTime<Utc>) -> Result<OutboxLag> {
        let (unpublished, oldest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), min(created_at) FROM outbox_events WHERE published_at IS NULL")
                .fetch_one(&self.read)
                .await?;
        Ok(OutboxLag {
            unpublished,
            oldest_age_s: oldest.map(|at| (now - at).num_seconds().max(0)),
        })
    }
}

async fn read_mark(tx: &mut Tx) -> Result<Mark> {
    let (high_water, gap_since, gap_xmax_taken, gap_settled): (i64, Option<DateTime<Utc>>, bool, bool) =
        sqlx::query_as(
            "SELECT high_water, gap_since, gap_xmax IS NOT NULL, \
               coalesce(pg_snapshot_xmin(pg_current_snapshot()) >= gap_xmax, false) \
             FROM outbox_relay",
        )
        .fetch_one(&mut **tx)
        .await?;
    Ok(Mark {
        high_water,
        gap_since,
        gap_xmax_taken,
        gap_settled,
    })
}

async fn write_mark(tx: &mut Tx, mark: &Mark, plan: &Plan) -> Result<()> {
    if plan.high_water == mark.high_water && plan.gap == Gap::Keep {
        return Ok(());
    }
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
    Ok(())
}

async fn enabled_endpoints(tx: &mut Tx) -> Result<Vec<WebhookEndpoint>> {
    let rows: Vec<EndpointRow> = sqlx::query_as(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints WHERE disabled_at IS NULL AND deleted_at IS NULL ORDER BY id"
    ))
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter().map(WebhookEndpoint::try_from).collect()
}

/// Creates a delivery of `event` to `endpoint` and its job, grouped by
/// endpoint so the endpoint's deliveries go out one at a time, in order.
pub(super) async fn create_delivery(
    tx: &mut Tx,
    endpoint: &WebhookEndpoint,
    event: &OutboxEvent,
    jobs: &JobTemplate,
    now: DateTime<Utc>,
) -> Result<DeliveryId> {
    let id = DeliveryId::generate();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, status, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5)",
    )
    .bind(id.as_str())
    .bind(endpoint.id.as_str())
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let job = jobs.job(endpoint.id.as_str(), delivery_job_payload(id.as_str()), now);
    enqueue_in_tx(tx, &job).await?;
    Ok(id)
}

/// A relay batch's deliveries, one array per column, inserted in one statement.
#[derive(Default)]
struct NewDeliveries {
    ids: Vec<String>,
    endpoints: Vec<String>,
    events: Vec<String>,
    event_types: Vec<String>,
}

impl NewDeliveries {
    fn push(&mut self, endpoint: &WebhookEndpoint, event: &OutboxEvent) -> DeliveryId {
        let id = DeliveryId::generate();
        self.ids.push(id.as_str().to_owned());
        self.endpoints.push(endpoint.id.as_str().to_owned());
        self.events.push(event.id.clone());
        self.event_types.push(event.event_type.clone());
        id
    }

    async fn insert(&self, tx: &mut Tx, now: DateTime<Utc>) -> Result<u64> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, status, created_at) \
             SELECT id, endpoint_id, event_id, event_type, 'pending', $5 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS d(id, endpoint_id, event_id, event_type)",
        )
        .bind(&self.ids)
        .bind(&self.endpoints)
        .bind(&self.events)
        .bind(&self.event_types)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(inserted.rows_affected())
    }
}
