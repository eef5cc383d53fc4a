//! Partner webhook endpoints, their deliveries and every delivery attempt.
//!
//! A delivery is one event for one endpoint; the outbox relay creates it with
//! its job in the `webhooks` queue (grouped by endpoint, so each endpoint gets
//! its events in order). The delivery worker records every attempt here: the
//! log a partner's support question is answered from.
//!
//! Both backends run the same SQL (`impl_webhooks!` in `sql.rs`) but for two
//! things. Recording a run of attempts is one `unnest` statement on
//! PostgreSQL and two statements an attempt on SQLite, which has no arrays to
//! bind. PostgreSQL reads a set of deliveries' work in three `= ANY($1)`
//! queries; SQLite reads one delivery at a time (the trait's default).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::{DeliveryId, WebhookEndpointId};
use serde::Serialize;

use crate::error::corrupt;
use crate::outbox::{OutboxRow, delivery_job_payload, event_job_payload, has_stock_effect};
use crate::{JobTemplate, NewJob, OutboxEvent, RelayOptions, Result, StoreError};

#[macro_use]
mod sql;

#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub id: WebhookEndpointId,
    pub url: String,
    /// `order.paid`, … or `*` for every type.
    pub event_types: Vec<String>,
    /// `whsec_<base64>`.
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, PartialEq, Serialize)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// Set when deliveries stopped: the endpoint answered 410, failed for
    /// too long, or an operator disabled it.
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// Start of the current unbroken run of failed attempts.
    pub failing_since: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("secret", &"<redacted>")
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|t| t == "*" || t == event_type)
    }

    pub fn enabled(&self) -> bool {
        self.disabled_at.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; its job is queued or backing off.
    Pending,
    Succeeded,
    /// Given up: the endpoint answered 410, or was disabled.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(raw: &str) -> Result<Self> {
        match raw {
            "pending" => Ok(Self::Pending),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            _ => Err(corrupt("delivery status", raw)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub id: DeliveryId,
    pub endpoint_id: WebhookEndpointId,
    /// The event's id: the `webhook-id` header, the same on every attempt
    /// and every replay, so receivers deduplicate on it.
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookAttempt {
    pub delivery_id: DeliveryId,
    pub at: DateTime<Utc>,
    /// `None` when no response came (connect error, timeout).
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What an attempt means for its delivery and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx: the delivery succeeded and the endpoint is healthy again.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed for good; the endpoint is disabled for `reason` (410, or failing
    /// past the disable threshold).
    DisableEndpoint { reason: String },
    /// The endpoint was already disabled or deleted: nothing was sent.
    Skipped,
}

/// What the delivery worker needs for one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryWork {
    pub delivery: WebhookDelivery,
    pub endpoint: WebhookEndpoint,
    /// The endpoint was deleted after the delivery was created.
    pub endpoint_deleted: bool,
    pub event: OutboxEvent,
}

/// Which deliveries a replay sends again.
#[derive(Debug, Clone)]
pub enum Replay {
    /// One delivery's event, to its endpoint.
    Delivery(DeliveryId),
    /// Every event the endpoint wants, created in `[since, until)`.
    Range {
        endpoint: WebhookEndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_endpoint(&self, endpoint: &NewWebhookEndpoint) -> Result<WebhookEndpoint>;
    /// Endpoints not deleted, oldest first.
    async fn endpoints(&self) -> Result<Vec<WebhookEndpoint>>;
    async fn endpoint(&self, id: &WebhookEndpointId) -> Result<Option<WebhookEndpoint>>;
    /// Deletes the endpoint (its delivery log stays); `false` if unknown.
    async fn delete_endpoint(&self, id: &WebhookEndpointId, now: DateTime<Utc>) -> Result<bool>;
    /// Re-enables a disabled endpoint and clears its failure run.
    async fn enable_endpoint(&self, id: &WebhookEndpointId) -> Result<bool>;

    /// The delivery, its endpoint and its event; `None` if unknown.
    async fn delivery_work(&self, id: &DeliveryId) -> Result<Option<DeliveryWork>>;
    /// `delivery_work` for several deliveries at once; unknown ids are left
    /// out. A backend may read them in a few queries for the whole set.
    async fn delivery_works(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryWork>> {
        let mut works = Vec::with_capacity(ids.len());
        for id in ids {
            works.extend(self.delivery_work(id).await?);
        }
        Ok(works)
    }
    /// Logs an attempt and applies its outcome to the delivery and endpoint,
    /// in one transaction.
    async fn record_attempt(&self, attempt: &WebhookAttempt, outcome: &AttemptOutcome) -> Result<()>;
    /// `record_attempt` for several attempts, in order, in one transaction:
    /// one commit for a whole run of an endpoint's deliveries.
    async fn record_attempts(&self, attempts: &[(WebhookAttempt, AttemptOutcome)]) -> Result<()>;
    /// An endpoint's deliveries, newest first.
    async fn deliveries(&self, endpoint: &WebhookEndpointId, limit: i64) -> Result<Vec<WebhookDelivery>>;
    async fn delivery(&self, id: &DeliveryId) -> Result<Option<WebhookDelivery>>;
    async fn attempts(&self, delivery: &DeliveryId) -> Result<Vec<WebhookAttempt>>;
    /// Creates a new delivery (and job) for each replayed event; returns the
    /// new deliveries' ids.
    async fn replay(&self, replay: &Replay, jobs: &JobTemplate, now: DateTime<Utc>) -> Result<Vec<DeliveryId>>;
}

pub(crate) fn event_types_column(types: &[String]) -> String {
    serde_json::Value::from(types.to_vec()).to_string()
}

pub(crate) fn parse_event_types(raw: &str) -> Result<Vec<String>> {
    serde_json::from_str(raw).map_err(|_| corrupt("endpoint event types", raw))
}

pub(crate) fn status_code_column(value: Option<i32>) -> Result<Option<u16>> {
    value
        .map(|code| u16::try_from(code).map_err(|_| corrupt("status code", &code.to_string())))
        .transpose()
}

/// The columns `EndpointRow` reads.
macro_rules! endpoint_columns {
    () => {
        "id, url, event_types, secret, created_at, disabled_at, disabled_reason, failing_since, deleted_at"
    };
}

/// The columns `DeliveryRow` reads.
macro_rules! delivery_columns {
    () => {
        "id, endpoint_id, event_id, event_type, status, attempts, last_status_code, last_latency_ms, last_error, \
         created_at, completed_at"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct EndpointRow {
    id: String,
    url: String,
    event_types: String,
    secret: String,
    created_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
    disabled_reason: Option<String>,
    failing_since: Option<DateTime<Utc>>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
}

impl TryFrom<EndpointRow> for WebhookEndpoint {
    type Error = crate::StoreError;

    fn try_from(row: EndpointRow) -> Result<Self> {
        Ok(WebhookEndpoint {
            event_types: parse_event_types(&row.event_types)?,
            id: WebhookEndpointId::from_trusted(row.id),
            url: row.url,
            secret: row.secret,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
            disabled_reason: row.disabled_reason,
            failing_since: row.failing_since,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_latency_ms: Option<i64>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<DeliveryRow> for WebhookDelivery {
    type Error = crate::StoreError;

    fn try_from(row: DeliveryRow) -> Result<Self> {
        Ok(WebhookDelivery {
            status: DeliveryStatus::parse(&row.status)?,
            attempts: u32::try_from(row.attempts).map_err(|_| corrupt("attempts", &row.attempts.to_string()))?,
            last_status_code: status_code_column(row.last_status_code)?,
            id: DeliveryId::from_trusted(row.id),
            endpoint_id: WebhookEndpointId::from_trusted(row.endpoint_id),
            event_id: row.event_id,
            event_type: row.event_type,
            last_latency_ms: row.last_latency_ms,
            last_error: row.last_error,
            created_at: row.created_at,
            completed_at: row.completed_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    delivery_id: String,
    at: DateTime<Utc>,
    status_code: Option<i32>,
    latency_ms: i64,
    error: Option<String>,
}

impl TryFrom<AttemptRow> for WebhookAttempt {
    type Error = crate::StoreError;

    fn try_from(row: AttemptRow) -> Result<Self> {
        Ok(WebhookAttempt {
            status_code: status_code_column(row.status_code)?,
            delivery_id: DeliveryId::from_trusted(row.delivery_id),
            at: row.at,
            latency_ms: row.latency_ms,
            error: row.error,
        })
    }
}

/// The delivery row's columns after an attempt with `outcome`.
pub(crate) fn delivery_status_after(outcome: &AttemptOutcome) -> DeliveryStatus {
    match outcome {
        AttemptOutcome::Delivered => DeliveryStatus::Succeeded,
        AttemptOutcome::Retrying => DeliveryStatus::Pending,
        AttemptOutcome::DisableEndpoint { .. } | AttemptOutcome::Skipped => DeliveryStatus::Failed,
    }
}

/// A webhook delivery to create: one event for one endpoint.
pub(crate) struct NewDelivery<'a> {
    pub(crate) id: DeliveryId,
    pub(crate) endpoint: &'a WebhookEndpoint,
    pub(crate) event: &'a OutboxEvent,
}

impl<'a> NewDelivery<'a> {
    /// A delivery of `event` to `endpoint` and its job, grouped by endpoint
    /// so the endpoint's deliveries go out one at a time, in order.
    pub(crate) fn with_job(
        endpoint: &'a WebhookEndpoint,
        event: &'a OutboxEvent,
        jobs: &JobTemplate,
        now: DateTime<Utc>,
    ) -> (Self, NewJob) {
        let id = DeliveryId::generate();
        let job = jobs.job(endpoint.id.as_str(), delivery_job_payload(id.as_str()), now);
        (Self { id, endpoint, event }, job)
    }
}

/// A relay pass's fan-out, in its events' order: for each event, one
/// delivery (with its job) per endpoint that wants the event's type, then its
/// NATS publish job and its stock-effect job where `options` asks for them.
pub(crate) fn relay_fan_out<'a>(
    events: &'a [OutboxEvent],
    endpoints: &'a [WebhookEndpoint],
    options: &RelayOptions,
) -> Vec<(Option<NewDelivery<'a>>, NewJob)> {
    let mut fan_out = Vec::new();
    for event in events {
        for endpoint in endpoints.iter().filter(|e| e.wants(&event.event_type)) {
            let (delivery, job) = NewDelivery::with_job(endpoint, event, &options.webhooks, options.now);
            fan_out.push((Some(delivery), job));
        }
        let inventory = options
            .inventory
            .as_ref()
            .filter(|_| has_stock_effect(&event.event_type));
        for template in [options.events.as_ref(), inventory].into_iter().flatten() {
            let job = template
                .job(&event.aggregate_id, event_job_payload(&event.id), options.now)
                .dedup_key(&event.id);
            fan_out.push((None, job));
        }
    }
    fan_out
}

/// Each delivery with its endpoint and event, read in one query each.
pub(crate) fn join_works(
    deliveries: Vec<WebhookDelivery>,
    endpoints: Vec<EndpointRow>,
    events: Vec<OutboxRow>,
) -> Result<Vec<DeliveryWork>> {
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
