//! The transactional outbox: every order state change writes an event row in
//! the transaction that makes the change; the relay turns committed events
//! into jobs for the sinks (partner webhooks, NATS JetStream) and marks them
//! published, in one transaction.
//!
//! Because fan-out is itself a database write, an event is marked published
//! exactly when its delivery jobs exist: nothing is lost between the two and
//! nothing is fanned out twice. The sinks then deliver at least once, from
//! the durable queue.
//!
//! Both backends run the same relay ([`impl_outbox!`]) but for three steps.
//! Its lock: a transaction-scoped advisory lock on PostgreSQL, the one write
//! lock on SQLite. Its place in the sequence: PostgreSQL commits rows out of
//! sequence order and keeps a mark past the holes (`postgres/sequence.rs`);
//! SQLite's one writer commits them in order. Its writes: PostgreSQL inserts
//! a batch's deliveries and jobs with `unnest` and marks the events with
//! `= ANY($1)`; SQLite, with no arrays to bind, writes them one by one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{JobTemplate, Result};

/// An event as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxEvent {
    /// Commit-independent sequence; the relay goes in this order.
    pub seq: i64,
    /// `evt_…`: the `webhook-id` of its deliveries and the NATS `Nats-Msg-Id`.
    pub id: String,
    /// The order the event is about.
    pub aggregate_id: String,
    /// `order.paid`, `order.shipped`, …
    pub event_type: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

/// What one relay step does.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Most events relayed in one transaction.
    pub limit: i64,
    pub now: DateTime<Utc>,
    /// Delivery jobs for partner endpoints, grouped by endpoint so each
    /// endpoint receives its events in order.
    pub webhooks: JobTemplate,
    /// Publish jobs for NATS JetStream, grouped by aggregate so one order's
    /// events are published in order; `None` when no NATS is configured.
    pub events: Option<JobTemplate>,
    /// Stock-effect jobs for a remote inventory node (events whose status
    /// commits, consumes or releases stock), grouped by aggregate; `None`
    /// when inventory is local.
    pub inventory: Option<JobTemplate>,
}

/// What one relay step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Events marked published.
    pub events: u64,
    /// Webhook deliveries created.
    pub deliveries: u64,
    /// Another node held the relay: this step did nothing.
    pub busy: bool,
    /// Committed events wait behind a hole in the sequence (PostgreSQL: a
    /// transaction still running, or one whose rollback is not yet known).
    pub held: bool,
    /// Events published below the mark: their transaction held its place in
    /// the sequence so long that the relay had stepped over it.
    pub late: u64,
    /// Places in the sequence stepped over as holes nothing will fill.
    pub skipped: u64,
}

/// How far the relay is behind, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxLag {
    pub unpublished: i64,
    /// Age of the oldest unpublished event.
    pub oldest_age_s: Option<i64>,
}

#[async_trait]
pub trait Outbox: Send + Sync {
    /// Relays up to `limit` unpublished events in sequence order: for each,
    /// one webhook delivery (and its job) per enabled endpoint that wants the
    /// event's type, and a NATS publish job when `events` is set; then marks
    /// them published. One relay runs at a time across all nodes (PostgreSQL:
    /// a transaction-scoped advisory lock, SQLite: the write lock), so events
    /// are fanned out in sequence order; a node that finds the relay busy
    /// returns at once. One order's events commit one after another (each
    /// change locks the order), so they are always fanned out in the order
    /// they happened.
    async fn relay_batch(&self, options: &RelayOptions) -> Result<RelayOutcome>;

    /// One event by id (`evt_…`), published or not.
    async fn event(&self, id: &str) -> Result<Option<OutboxEvent>>;

    async fn lag(&self, now: DateTime<Utc>) -> Result<OutboxLag>;
}

/// The JSON payload of a webhook delivery job.
pub(crate) fn delivery_job_payload(delivery_id: &str) -> serde_json::Value {
    serde_json::json!({ "delivery_id": delivery_id })
}

/// Whether an event changes the stock its order holds.
pub(crate) fn has_stock_effect(event_type: &str) -> bool {
    holdfast_domain::OrderStatus::from_event_type(event_type).is_some_and(|status| status.stock_effect().is_some())
}

/// The JSON payload of a NATS publish job.
pub(crate) fn event_job_payload(event_id: &str) -> serde_json::Value {
    serde_json::json!({ "event_id": event_id })
}

/// The columns `OutboxRow` reads.
macro_rules! outbox_columns {
    () => {
        "seq, id, aggregate_id, event_type, payload, created_at, published_at"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    pub(crate) seq: i64,
    id: String,
    aggregate_id: String,
    event_type: String,
    payload: String,
    created_at: DateTime<Utc>,
    published_at: Option<DateTime<Utc>>,
}

impl TryFrom<OutboxRow> for OutboxEvent {
    type Error = crate::StoreError;

    fn try_from(row: OutboxRow) -> Result<Self> {
        Ok(OutboxEvent {
            payload: serde_json::from_str(&row.payload).map_err(|_| crate::error::corrupt("event payload", &row.id))?,
            seq: row.seq,
            id: row.id,
            aggregate_id: row.aggregate_id,
            event_type: row.event_type,
            created_at: row.created_at,
            published_at: row.published_at,
        })
    }
}

/// What a relay pass publishes of the unpublished rows it read: the first
/// `publish` of them, in sequence order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    pub(crate) publish: usize,
    /// Rows published below the mark (see `RelayOutcome::late`).
    pub(crate) late: u64,
    /// Places stepped over (see `RelayOutcome::skipped`).
    pub(crate) skipped: u64,
}

/// `Outbox` for a backend's store: the same SQL on both. Besides what every
/// backend provides (see the crate's docs), the arguments, each run in the
/// relay's transaction on the worker pool:
///
/// - `worker_reads`: the pool `Outbox::event` reads on (see `impl_webhooks!`);
/// - `relay_lock(tx)`: takes the relay's lock and reads its place in the
///   sequence (the mark), `None` when another node holds the relay;
/// - `relay_pass(tx, &mark, unpublished_seqs, now)`: which of the rows read
///   continue the sequence, as a [`Pass`], keeping the mark;
/// - `relay_publish(tx, events, fan_out, now)`: writes the fan-out
///   (`webhooks::relay_fan_out`) and marks `events` published; returns how
///   many deliveries it created.
macro_rules! impl_outbox {
    (
        $store:ty,
        worker_reads: $reads:ident,
        relay_lock: $lock:path,
        relay_pass: $pass:path,
        relay_publish: $publish:path $(,)?
    ) => {
        const _: () = {
            use chrono::{DateTime, Utc};

            use $crate::outbox::OutboxRow;
            use $crate::webhooks::EndpointRow;
            use $crate::{OutboxEvent, OutboxLag, RelayOptions, RelayOutcome, Result, WebhookEndpoint};

            #[async_trait::async_trait]
            impl $crate::Outbox for $store {
                async fn relay_batch(&self, options: &RelayOptions) -> Result<RelayOutcome> {
                    let mut tx = begin_write(&self.worker).await?;
                    let Some(mark) = $lock(&mut tx).await? else {
                        return Ok(RelayOutcome {
                            busy: true,
                            ..RelayOutcome::default()
                        });
                    };
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
                    // Only rows that continue the sequence without a hole.
                    let unpublished: Vec<i64> = rows.iter().map(|row| row.seq).collect();
                    let pass = $pass(&mut tx, &mark, &unpublished, options.now).await?;
                    let events = rows
                        .into_iter()
                        .take(pass.publish)
                        .map(OutboxEvent::try_from)
                        .collect::<Result<Vec<_>>>()?;
                    if events.is_empty() {
                        tx.commit().await?;
                        return Ok(RelayOutcome {
                            held: true,
                            ..RelayOutcome::default()
                        });
                    }
                    let endpoints: Vec<EndpointRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        endpoint_columns!(),
                        " FROM webhook_endpoints WHERE disabled_at IS NULL AND deleted_at IS NULL ORDER BY id"
                    ))
                    .fetch_all(&mut *tx)
                    .await?;
                    let endpoints = endpoints
                        .into_iter()
                        .map(WebhookEndpoint::try_from)
                        .collect::<Result<Vec<_>>>()?;
                    let fan_out = $crate::webhooks::relay_fan_out(&events, &endpoints, options);
                    let deliveries = $publish(&mut tx, &events, fan_out, options.now).await?;
                    tx.commit().await?;
                    Ok(RelayOutcome {
                        events: events.len() as u64,
                        deliveries,
                        busy: false,
                        held: events.len() < unpublished.len(),
                        late: pass.late,
                        skipped: pass.skipped,
                    })
                }

                async fn event(&self, id: &str) -> Result<Option<OutboxEvent>> {
                    let row: Option<OutboxRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        outbox_columns!(),
                        " FROM outbox_events WHERE id = $1"
                    ))
                    .bind(id)
                    .fetch_optional(&self.$reads)
                    .await?;
                    row.map(OutboxEvent::try_from).transpose()
                }

                async fn lag(&self, now: DateTime<Utc>) -> Result<OutboxLag> {
                    let (unpublished, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
                        "SELECT count(*), min(created_at) FROM outbox_events WHERE published_at IS NULL",
                    )
                    .fetch_one(&self.read)
                    .await?;
                    Ok(OutboxLag {
                        unpublished,
                        oldest_age_s: oldest.map(|at| (now - at).num_seconds().max(0)),
                    })
                }
            }
        };
    };
}
