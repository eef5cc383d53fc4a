//! Partner webhook endpoints and their delivery log on PostgreSQL.

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
        for (attempt, outcome) in attempts {
            record_in_tx(&mut tx, attempt, outcome).await?;
        }
        tx.commit().await?;
        Ok(())
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

/// Logs one attempt and applies its outcome to the delivery and endpoint.
async fn record_in_tx(tx: &mut Tx, attempt: &WebhookAttempt, outcome: &AttemptOutcome) -> Result<()> {
    let endpoint_id: Option<String> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $2, last_status_code = $3, \
           last_latency_ms = $4, last_error = $5, \
           completed_at = CASE WHEN $2 = 'pending' THEN NULL ELSE $6 END \
         WHERE id = $1 RETURNING endpoint_id",
    )
    .bind(attempt.delivery_id.as_str())
    .bind(delivery_status_after(outcome).as_str())
    .bind(attempt.status_code.map(i32::from))
    .bind(attempt.latency_ms)
    .bind(&attempt.error)
    .bind(attempt.at)
    .fetch_optional(&mut **tx)
    .await?;
    let endpoint_id = endpoint_id.ok_or_else(|| StoreError::NotFound(attempt.delivery_id.to_string()))?;
    if *outcome != AttemptOutcome::Skipped {
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, error) \
             SELECT $1, attempts, $2, $3, $4, $5 FROM webhook_deliveries WHERE id = $1",
        )
        .bind(attempt.delivery_id.as_str())
        .bind(attempt.at)
        .bind(attempt.status_code.map(i32::from))
        .bind(attempt.latency_ms)
        .bind(&attempt.error)
        .execute(&mut **tx)
        .await?;
    }
    let update = match outcome {
        AttemptOutcome::Delivered => {
            Some(sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1").bind(&endpoint_id))
        }
        AttemptOutcome::Retrying => Some(
            sqlx::query("UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2) WHERE id = $1")
                .bind(&endpoint_id)
                .bind(attempt.at),
        ),
        AttemptOutcome::DisableEndpoint { reason } => Some(
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2), \
                   disabled_at = coalesce(disabled_at, $2), disabled_reason = coalesce(disabled_reason, $3) \
                 WHERE id = $1",
            )
            .bind(&endpoint_id)
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
