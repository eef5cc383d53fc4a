//! What the webhook log does with PostgreSQL's arrays: a run of attempts in
//! one `unnest` statement, and a set of deliveries' work in three `= ANY($1)`
//! queries. The rest is shared (`impl_webhooks!` in `webhooks/sql.rs`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use holdfast_domain::DeliveryId;

use super::{Pool, Tx};
use crate::outbox::OutboxRow;
use crate::webhooks::{DeliveryRow, EndpointRow, delivery_status_after, join_works};
use crate::{AttemptOutcome, DeliveryWork, Result, WebhookAttempt, WebhookDelivery};

/// Updates the deliveries of a run of attempts and logs the attempts, in one
/// statement; returns each delivery's endpoint id.
pub(super) async fn record_deliveries(
    tx: &mut Tx,
    attempts: &[(WebhookAttempt, AttemptOutcome)],
) -> Result<HashMap<String, String>> {
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
    Ok(updated.into_iter().collect())
}

/// The deliveries, then their endpoints and events, a query each.
pub(super) async fn delivery_works(pool: &Pool, ids: &[DeliveryId]) -> Result<Vec<DeliveryWork>> {
    let ids: Vec<&str> = ids.iter().map(DeliveryId::as_str).collect();
    let deliveries: Vec<DeliveryRow> = sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM webhook_deliveries WHERE id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(pool)
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
    .fetch_all(pool)
    .await?;
    let events: Vec<OutboxRow> = sqlx::query_as(concat!(
        "SELECT ",
        outbox_columns!(),
        " FROM outbox_events WHERE id = ANY($1)"
    ))
    .bind(&event_ids)
    .fetch_all(pool)
    .await?;
    join_works(deliveries, endpoints, events)
}
