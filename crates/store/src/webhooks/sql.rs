//! The webhook log's SQL, the same on both backends: [`impl_webhooks!`],
//! which each backend expands for its store. What stays per backend is said
//! in the parent module's docs.

/// `WebhookStore` for a backend's store: the same SQL on both. Besides what
/// every backend provides (see the crate's docs), the arguments:
///
/// - `tx`: the type `begin_write` returns;
/// - `worker_reads`: the pool the delivery worker reads on (PostgreSQL: the
///   worker pool, away from the API's reads; SQLite: the read pool, since its
///   worker pool is the one writing connection);
/// - `record_deliveries`: applies a run of attempts to their deliveries and
///   logs them, returning each delivery's endpoint id by delivery id (the
///   endpoints are updated here after);
/// - `delivery_works` (optional): `WebhookStore::delivery_works` for the
///   whole set at once, given the `worker_reads` pool.
///
/// It also defines `create_deliveries`, which SQLite's relay uses too.
macro_rules! impl_webhooks {
    (
        $store:ty,
        tx: $tx:ty,
        worker_reads: $reads:ident,
        record_deliveries: $record:path
        $(, delivery_works: $works:path)?
        $(,)?
    ) => {
        /// Writes each delivery of `fan_out` as pending, then its job, one at
        /// a time in order; returns how many deliveries it wrote.
        async fn create_deliveries(
            tx: &mut $tx,
            fan_out: &[(Option<$crate::webhooks::NewDelivery<'_>>, $crate::NewJob)],
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::Result<u64> {
            let mut created = 0;
            for (delivery, job) in fan_out {
                if let Some(delivery) = delivery {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, status, created_at) \
                         VALUES ($1, $2, $3, $4, 'pending', $5)",
                    )
                    .bind(delivery.id.as_str())
                    .bind(delivery.endpoint.id.as_str())
                    .bind(&delivery.event.id)
                    .bind(&delivery.event.event_type)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    created += 1;
                }
                queue::enqueue_in_tx(tx, job).await?;
            }
            Ok(created)
        }

        const _: () = {
            use chrono::{DateTime, Utc};
            use holdfast_domain::{DeliveryId, WebhookEndpointId};

            use $crate::outbox::OutboxRow;
            use $crate::webhooks::{AttemptRow, DeliveryRow, EndpointRow, NewDelivery, event_types_column};
            use $crate::{
                AttemptOutcome, DeliveryWork, JobTemplate, NewWebhookEndpoint, OutboxEvent, Replay, Result,
                StoreError, WebhookAttempt, WebhookDelivery, WebhookEndpoint,
            };

            #[async_trait::async_trait]
            impl $crate::WebhookStore for $store {
                async fn create_endpoint(&self, endpoint: &NewWebhookEndpoint) -> Result<WebhookEndpoint> {
                    let row: EndpointRow = sqlx::query_as(concat!(
                        "INSERT INTO webhook_endpoints (id, url, event_types, secret, created_at) ",
                        "VALUES ($1, $2, $3, $4, $5) RETURNING ",
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
                    let deleted =
                        sqlx::query("UPDATE webhook_endpoints SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
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
                    .fetch_one(&self.$reads)
                    .await?;
                    let event: OutboxRow = sqlx::query_as(concat!(
                        "SELECT ",
                        outbox_columns!(),
                        " FROM outbox_events WHERE id = $1"
                    ))
                    .bind(&delivery.event_id)
                    .fetch_one(&self.$reads)
                    .await?;
                    Ok(Some(DeliveryWork {
                        endpoint_deleted: endpoint.deleted_at.is_some(),
                        endpoint: WebhookEndpoint::try_from(endpoint)?,
                        event: OutboxEvent::try_from(event)?,
                        delivery,
                    }))
                }

                $(
                    async fn delivery_works(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryWork>> {
                        $works(&self.$reads, ids).await
                    }
                )?

                async fn record_attempt(&self, attempt: &WebhookAttempt, outcome: &AttemptOutcome) -> Result<()> {
                    self.record_attempts(&[(attempt.clone(), outcome.clone())]).await
                }

                async fn record_attempts(&self, attempts: &[(WebhookAttempt, AttemptOutcome)]) -> Result<()> {
                    if attempts.is_empty() {
                        return Ok(());
                    }
                    let mut tx = begin_write(&self.worker).await?;
                    let endpoint_of = $record(&mut tx, attempts).await?;
                    // Then each endpoint's state, once per change of outcome:
                    // the same outcome again for the same endpoint changes
                    // nothing more.
                    let mut last: Option<(&str, &AttemptOutcome)> = None;
                    for (attempt, outcome) in attempts {
                        let endpoint_id = endpoint_of
                            .get(attempt.delivery_id.as_str())
                            .ok_or_else(|| StoreError::NotFound(attempt.delivery_id.to_string()))?;
                        if last == Some((endpoint_id.as_str(), outcome)) {
                            continue;
                        }
                        last = Some((endpoint_id.as_str(), outcome));
                        let update = match outcome {
                            AttemptOutcome::Delivered => Some(
                                sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
                                    .bind(endpoint_id),
                            ),
                            AttemptOutcome::Retrying => Some(
                                sqlx::query(
                                    "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2) \
                                     WHERE id = $1",
                                )
                                .bind(endpoint_id)
                                .bind(attempt.at),
                            ),
                            AttemptOutcome::DisableEndpoint { reason } => Some(
                                sqlx::query(
                                    "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2), \
                                       disabled_at = coalesce(disabled_at, $2), \
                                       disabled_reason = coalesce(disabled_reason, $3) \
                                     WHERE id = $1",
                                )
                                .bind(endpoint_id)
                                .bind(attempt.at)
                                .bind(reason),
                            ),
                            AttemptOutcome::Skipped => None,
                        };
                        if let Some(update) = update {
                            update.execute(&mut *tx).await?;
                        }
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
                    .fetch_optional(&self.$reads)
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

                async fn replay(
                    &self,
                    replay: &Replay,
                    jobs: &JobTemplate,
                    now: DateTime<Utc>,
                ) -> Result<Vec<DeliveryId>> {
                    let mut tx = begin_write(&self.write).await?;
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
                    let mut events = Vec::with_capacity(rows.len());
                    for row in rows {
                        let event = OutboxEvent::try_from(row)?;
                        // A single delivery is replayed whatever the endpoint's
                        // filter says now; a range only brings what the
                        // endpoint wants.
                        if matches!(replay, Replay::Range { .. }) && !endpoint.wants(&event.event_type) {
                            continue;
                        }
                        events.push(event);
                    }
                    let fan_out: Vec<_> = events
                        .iter()
                        .map(|event| {
                            let (delivery, job) = NewDelivery::with_job(&endpoint, event, jobs, now);
                            (Some(delivery), job)
                        })
                        .collect();
                    create_deliveries(&mut tx, &fan_out, now).await?;
                    tx.commit().await?;
                    Ok(fan_out.into_iter().filter_map(|(delivery, _)| delivery.map(|d| d.id)).collect())
                }
            }
        };
    };
}
