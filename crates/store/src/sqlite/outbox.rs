//! The outbox relay on SQLite: the relay's write transaction holds the
//! database's one write lock, so relays on several processes take turns.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::DeliveryId;
use sqlx::{Sqlite, Transaction};

use super::queue::enqueue_in_tx;
use super::{SqliteStore, begin_write};
use crate::outbox::{OutboxRow, delivery_job_payload, event_job_payload, has_stock_effect};
use crate::webhooks::EndpointRow;
use crate::{JobTemplate, Outbox, OutboxEvent, OutboxLag, RelayOptions, RelayOutcome, Result, WebhookEndpoint};

#[async_trait]
impl Outbox for SqliteStore {
    async fn relay_batch(&self, options: &RelayOptions) -> Result<RelayOutcome> {
        let mut tx = begin_write(&self.worker).await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox_events WHERE published_at IS NULL ORDER BY seq LIMIT ?1"
        ))
        .bind(options.limit)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(RelayOutcome::default());
        }
        let events = rows
            .into_iter()
            .map(OutboxEvent::try_from)
            .collect::<Result<Vec<_>>>()?;
        let endpoints = enabled_endpoints(&mut tx).await?;
        let mut deliveries = 0;
        for event in &events {
            for endpoint in endpoints.iter().filter(|e| e.wants(&event.event_type)) {
                create_delivery(&mut tx, endpoint, event, &options.webhooks, options.now).await?;
                deliveries += 1;
            }
            if let Some(template) = &options.events {
                let job = template
                    .job(&event.aggregate_id, event_job_payload(&event.id), options.now)
                    .dedup_key(&event.id);
                enqueue_in_tx(&mut tx, &job).await?;
            }
            if let Some(template) = options
                .inventory
                .as_ref()
                .filter(|_| has_stock_effect(&event.event_type))
            {
                let job = template
                    .job(&event.aggregate_id, event_job_payload(&event.id), options.now)
                    .dedup_key(&event.id);
                enqueue_in_tx(&mut tx, &job).await?;
            }
        }
        // The write lock is held since the read, so the unpublished events
        // up to the last one read are exactly the ones relayed.
        let last = events.last().map_or(0, |e| e.seq);
        sqlx::query("UPDATE outbox_events SET published_at = ?2 WHERE published_at IS NULL AND seq <= ?1")
            .bind(last)
            .bind(options.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RelayOutcome {
            events: events.len() as u64,
            deliveries,
            ..RelayOutcome::default()
        })
    }

    async fn event(&self, id: &str) -> Result<Option<OutboxEvent>> {
        let row: Option<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox_events WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
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

async fn enabled_endpoints(tx: &mut Transaction<'static, Sqlite>) -> Result<Vec<WebhookEndpoint>> {
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
    tx: &mut Transaction<'static, Sqlite>,
    endpoint: &WebhookEndpoint,
    event: &OutboxEvent,
    jobs: &JobTemplate,
    now: DateTime<Utc>,
) -> Result<DeliveryId> {
    let id = DeliveryId::generate();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, status, created_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
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
