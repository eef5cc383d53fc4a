//! Partner webhook endpoints and their delivery log on PostgreSQL.

use std::collections::HashMap;

use super::Tx;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::{DeliveryId, WebhookEndpointId};

use super::PgStore;
use super::outbox::create_delivery;
use crate::error::StoreError;
use crate::outbox::OutboxRow;
use crate::webhooks::*;
use crate::{JobTemplate, OutboxEvent, Result};

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_endpoint(&self, endpoint: &NewWebhookEndpoint) -> Result<WebhookEndpoint> {
        let row: EndpointRow = sqlx::query_as(concat!(
            "INSERT INTO webhook_endpoints (id, url, event_types, secret, created_at) VALUES ($1, $2, $3, $4, $5) ",
            "RETURNING ",
            endpoint_columns!()
        ))
        .bind(endpoint.id.as_str())
        .bind(&endpoint.url)
        .bind(event_types_column(&endpoint.event_types))
        .bind(&endpoint.secret)
        .bind(endpoint.created_at)
        .fetch_one(&self.write)
        .await?;
        WebhookEndpoint::try_from(row)
    }

    async fn endpoints(&self) -> Result<Vec<WebhookEndpoint>> {
        let rows: Vec<EndpointRow> = sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE deleted_at IS NULL ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(WebhookEndpoint::try_from).collect()
    }

    async fn endpoint(&self, id: &WebhookEndpointId) -> Result<Option<WebhookEndpoint>> {
        let row: Option<EndpointRow> = sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(WebhookEndpoint::try_from).transpose()
    }

    async fn delete_endpoint(&self, id: &WebhookEndpointId, now: DateTime<Utc>) -> Result<bool> {
        let deleted = sqlx::query("UPDATE webhook_endpoints SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.as_str())
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn enable_endpoint(&self, id: &WebhookEndpointId) -> Result<bool> {
        let enabled = sqlx::query(
            "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id.as_str())
        .execute(&self.write)
        .await?;
        Ok(enabled.rows_affected() == 1)
    }

    async fn delivery_work(&self, id: &DeliveryId) -> Result<Option<DeliveryWork>> {
        let Some(delivery) = self.delivery(id).await? else {
            return Ok(None);
        };
        let endpoint: EndpointRow = sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(delivery.endpoint_id.as_str())
        .fetch_one(&self.worker)
        .await?;
        let event: OutboxRow = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox_events WHERE id = $1"
        ))
        .bind(&delivery.event_id)
        .fetch_one(&self.worker)
        .await?;
        Ok(Some(DeliveryWork {
            endpoint_deleted: endpoint.deleted_at.is_some(),
            endpoint: WebhookEndpoint::try_from(endpoint)?,
            event: OutboxEvent::try_from(event)?,
            delivery,
        }))
    }

    async fn record_attempt(&self, attempt: &WebhookAttempt, outcome: &AttemptOutcome) -> Result<()> {
        self.record_attempts(&[(attempt.clone(), outcome.clone())]).await
    }

    async fn record_attempts(&self, attempts: &[(WebhookAttempt, AttemptOutcome)]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let mut tx = self.worker.begin().await?;
        record_batch_in_tx(&mut tx, attempts).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_works(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryWork>> {
        let ids: Vec<&str> = ids.iter().map(DeliveryId::as_str).collect();
        let deliveries: Vec<DeliveryRow> = sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&self.worker)
        .await?;
        let deliveries = deliveries
            .into_iter()
            .map(WebhookDelivery::try_from)
            .collect::<Result<Vec<_>>>()?;
        let endpoint_ids: Vec<&str> = deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
        let event_ids: Vec<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
        let endpoints: Vec<EndpointRow> = sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE id = ANY($1)"
        ))
        .bind(&endpoint_ids)
        .fetch_all(&self.worker)
        .await?;
        let events: Vec<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox_events WHERE id = ANY($1)"
        ))
        .bind(&event_ids)
        .fetch_all(&self.worker)
        .await?;
        let endpoints: HashMap<String, (bool, WebhookEndpoint)> = endpoints
            .into_iter()
            .map(|row| {
                let deleted = row.deleted_at.is_some();
                WebhookEndpoint::try_from(row).map(|e| (e.id.as_str().to_owned(), (deleted, e)))
            })
            .collect::<Result<_>>()?;
        let events: HashMap<String, OutboxEvent> = events
            .into_iter()
            .map(|row| OutboxEvent::try_from(row).map(|e| (e.id.clone(), e)))
            .collect::<Result<_>>()?;
        let mut works = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let endpoint = endpoints.get(delivery.endpoint_id.as_str()).cloned();
            let event = events.get(&delivery.event_id).cloned();
            let (Some((endpoint_deleted, endpoint)), Some(event)) = (endpoint, event) else {
                return Err(StoreError::Corrupt(format!(
                    "delivery {} lost its endpoint or event",
                    delivery.id
                )));
            };
            works.push(DeliveryWork {
                delivery,
                endpoint,
                endpoint_deleted,
                event,
            });
        }
        Ok(works)
    }

    async fn deliveries(&self, endpoint: &WebhookEndpointId, limit: i64) -> Result<Vec<WebhookDelivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(endpoint.as_str())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(WebhookDelivery::try_from).collect()
    }

    async fn delivery(&self, id: &DeliveryId) -> Result<Option<WebhookDelivery>> {
        let row: Option<DeliveryRow> = sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.worker)
        .await?;
        row.map(WebhookDelivery::try_from).transpose()
    }

    async fn attempts(&self, delivery: &DeliveryId) -> Result<Vec<WebhookAttempt>> {
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT delivery_id, at, status_code, latency_ms, error FROM webhook_attempts \
             WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(WebhookAttempt::try_from).collect()
    }

    async fn replay(&self, replay: &Replay, jobs: &JobTemplate, now: DateTime<Utc>) -> Result<Vec<DeliveryId>> {
        let mut tx = self.write.begin().await?;
        let (endpoint_id, rows): (String, Vec<OutboxRow>) = match replay {
            Replay::Delivery(id) => {
                let found: Option<(String, String)> =
                    sqlx::query_as("SELECT endpoint_id, event_id FROM webhook_deliveries WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                let (endpoint_id, event_id) = found.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
                let rows = sqlx::query_as(concat!(
                    "SELECT ",
                    outbox_columns!(),
                    " FROM outbox_events WHERE id = $1"
                ))
                .bind(event_id)
                .fetch_all(&mut *tx)
                .await?;
                (endpoint_id, rows)
            }
            Replay::Range { endpoint, since, until } => {
                let rows = sqlx::query_as(concat!(
                    "SELECT ",
                    outbox_columns!(),
                    " FROM outbox_events WHERE created_at >= $1 AND created_at < $2 ORDER BY seq"
                ))
                .bind(since)
                .bind(until)
                .fetch_all(&mut *tx)
                .await?;
                (endpoint.as_str().to_owned(), rows)
            }
        };
        let endpoint: Option<EndpointRow> = sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(&endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        let endpoint = WebhookEndpoint::try_from(endpoint.ok_or(StoreError::NotFound(endpoint_id))?)?;
        let mut created = Vec::new();
        for row in rows {
            let event = OutboxEvent::try_from(row)?;
            // A single delivery is replayed whatever the endpoint's filter
            // says now; a range only brings what the endpoint wants.
            if matches!(replay, Replay::Range { .. }) && !endpoint.wants(&event.event_type) {
                continue;
            }
            created.push(create_delivery(&mut tx, &endpoint, &event, jobs, now).await?);
        }
        tx.commit().await?;
        Ok(created)
    }
}

/// What an attempt's outcome does to its endpoint.
async fn update_endpoint(
    tx: &mut Tx,
    endpoint_id: &str,
    attempt: &WebhookAttempt,
    outcome: &AttemptOutcome,
) -> Result<()> {
    let update = match outcome {
        AttemptOutcome::Delivered => {
            Some(sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1").bind(endpoint_id))
        }
        AttemptOutcome::Retrying => Some(
            sqlx::query("UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2) WHERE id = $1")
                .bind(endpoint_id)
                .bind(attempt.at),
        ),
        AttemptOutcome::DisableEndpoint { reason } => Some(
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2), \
                   disabled_at = coalesce(disabled_at, $2), disabled_reason = coalesce(disabled_reason, $3) \
                 WHERE id = $1",
            )
            .bind(endpoint_id)
            .bind(attempt.at)
            .bind(reason),
        ),
        AttemptOutcome::Skipped => None,
    };
    if let Some(update) = update {
        update.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Logs a run of attempts: the deliveries and the attempt log in one
/// statement, then each endpoint's state, once per change of outcome.
async fn record_batch_in_tx(tx: &mut Tx, attempts: &[(WebhookAttempt, AttemptOutcome)]) -> Result<()> {
    let ids: Vec<&str> = attempts.iter().map(|(a, _)| a.delivery_id.as_str()).collect();
    let statuses: Vec<&str> = attempts
        .iter()
        .map(|(_, o)| delivery_status_after(o).as_str())
        .collect();
    let codes: Vec<Option<i32>> = attempts.iter().map(|(a, _)| a.status_code.map(i32::from)).collect();
    let latencies: Vec<i64> = attempts.iter().map(|(a, _)| a.latency_ms).collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|(a, _)| a.error.as_deref()).collect();
    let ats: Vec<DateTime<Utc>> = attempts.iter().map(|(a, _)| a.at).collect();
    let logged: Vec<bool> = attempts.iter().map(|(_, o)| *o != AttemptOutcome::Skipped).collect();
    let updated: Vec<(String, String)> = sqlx::query_as(
        "WITH a AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], \
                    $6::timestamptz[], $7::bool[]) AS a(delivery_id, status, status_code, latency_ms, error, at, logged)), \
         d AS (UPDATE webhook_deliveries w SET attempts = w.attempts + 1, status = a.status, \
                 last_status_code = a.status_code, last_latency_ms = a.latency_ms, last_error = a.error, \
                 completed_at = CASE WHEN a.status = 'pending' THEN NULL ELSE a.at END \
               FROM a WHERE w.id = a.delivery_id RETURNING w.id, w.endpoint_id, w.attempts), \
         logged AS (INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, error) \
                    SELECT d.id, d.attempts, a.at, a.status_code, a.latency_ms, a.error \
                    FROM d JOIN a ON a.delivery_id = d.id WHERE a.logged) \
         SELECT id, endpoint_id FROM d",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&codes)
    .bind(&latencies)
    .bind(&errors)
    .bind(&ats)
    .bind(&logged)
    .fetch_all(&mut **tx)
    .await?;
    let endpoint_of: HashMap<String, String> = updated.into_iter().collect();
    let mut last: Option<(&str, &AttemptOutcome)> = None;
    for (attempt, outcome) in attempts {
        let endpoint_id = endpoint_of
            .get(attempt.delivery_id.as_str())
            .ok_or_else(|| StoreError::NotFound(attempt.delivery_id.to_string()))?;
        // The same outcome again for the same endpoint changes nothing more.
        if last == Some((endpoint_id.as_str(), outcome)) {
            continue;
        }
        last = Some((endpoint_id.as_str(), outcome));
        update_endpoint(tx, endpoint_id, attempt, outcome).await?;
    }
    Ok(())
}
