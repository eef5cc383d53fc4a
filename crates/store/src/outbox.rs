//! The transactional outbox: every order state change writes an event row in
//! the transaction that makes the change; the relay turns committed events
//! into jobs for the sinks (partner webhooks, NATS JetStream) and marks them
//! published, in one transaction.
//!
//! Because fan-out is itself a database write, an event is marked published
//! exactly when its delivery jobs exist: nothing is lost between the two and
//! nothing is fanned out twice. The sinks then deliver at least once, from
//! the durable queue.

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

/// The JSON payload of a NATS publish job.
/// Whether an event changes the stock its order holds.
pub(crate) fn has_stock_effect(event_type: &str) -> bool {
    holdfast_domain::OrderStatus::from_event_type(event_type).is_some_and(|status| status.stock_effect().is_some())
}

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
