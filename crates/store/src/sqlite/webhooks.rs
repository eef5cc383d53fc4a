//! What the webhook log does one row at a time on SQLite, which has no arrays
//! to bind: a run of attempts, two statements an attempt. The rest is shared
//! (`impl_webhooks!` in `webhooks/sql.rs`).

use std::collections::HashMap;

use sqlx::{Sqlite, Transaction};

use crate::error::StoreError;
use crate::webhooks::delivery_status_after;
use crate::{AttemptOutcome, Result, WebhookAttempt};

/// Updates the delivery of each attempt and logs the attempt; returns each
/// delivery's endpoint id.
pub(super) async fn record_deliveries(
    tx: &mut Transaction<'static, Sqlite>,
    attempts: &[(WebhookAttempt, AttemptOutcome)],
) -> Result<HashMap<String, String>> {
    let mut endpoint_of = HashMap::with_capacity(attempts.len());
    for (attempt, outcome) in attempts {
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
        endpoint_of.insert(attempt.delivery_id.to_string(), endpoint_id);
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
    }
    Ok(endpoint_of)
}
