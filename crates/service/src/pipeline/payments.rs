//! Payment confirmation: provider events arrive through the inbox and move
//! orders to `paid` or `payment_failed`. Only definitive events act.

use chrono::Utc;
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_store::{InboxEvent, JobTemplate, SharedStore, StatusChange, StoreError, TransitionOutcome};
use serde::Deserialize;

/// The part of a Stripe event the inbox reads.
#[derive(Debug, Deserialize)]
pub struct ProviderEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: IntentObject,
}

#[derive(Debug, Deserialize)]
pub struct IntentObject {
    pub id: String,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// How one inbox event ended, recorded on its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(OrderStatus),
    Duplicate,
    Ignored(String),
    /// The event cannot apply (e.g. success for an order already cancelled):
    /// recorded for the reconciler and a refund decision.
    Flagged(String),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Self::Applied(status) => format!("applied: {status}"),
            Self::Duplicate => "duplicate: order already in that state".into(),
            Self::Ignored(why) => format!("ignored: {why}"),
            Self::Flagged(why) => format!("flagged: {why}"),
        }
    }
}

/// Applies one provider event. A retryable store error is returned so the
/// event stays pending; everything else ends with an outcome. Payment
/// success enqueues the order's fulfillment job (`fulfillment`) in the
/// transaction that marks it paid.
#[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.event_type))]
pub async fn apply_event(
    store: &SharedStore,
    event: &InboxEvent,
    fulfillment: &JobTemplate,
) -> Result<Outcome, StoreError> {
    let target = match event.event_type.as_str() {
        "payment_intent.succeeded" => OrderStatus::Paid,
        "payment_intent.payment_failed" => OrderStatus::PaymentFailed,
        other => {
            return Ok(Outcome::Ignored(format!("{other} is not a definitive payment event")));
        }
    };
    let parsed: ProviderEvent = match serde_json::from_str(&event.payload) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Outcome::Ignored(format!("unreadable payload: {e}"))),
    };
    let Some(order_id) = parsed
        .data
        .object
        .metadata
        .get("order_id")
        .and_then(|raw| OrderId::parse(raw).ok())
    else {
        return Ok(Outcome::Ignored("no order_id in the intent's metadata".into()));
    };
    let now = Utc::now();
    let cause = format!("{} {} ({})", event.event_type, parsed.id, parsed.data.object.id);
    let mut change = StatusChange::new(order_id, target, cause, now);
    if target == OrderStatus::Paid {
        let job = crate::workers::fulfillment::job(fulfillment, &change.order_id, now);
        change = change.enqueue(job);
    }
    match store.transition_order(&change).await {
        Ok(TransitionOutcome::Changed { to, .. }) => Ok(Outcome::Applied(to)),
        Ok(TransitionOutcome::Unchanged) => Ok(Outcome::Duplicate),
        Err(StoreError::NotFound(_)) => Ok(Outcome::Flagged(format!("order {} not found", change.order_id))),
        Err(StoreError::InvalidTransition(e)) => Ok(Outcome::Flagged(e.to_string())),
        Err(other) => Err(other),
    }
}

/// Drains the inbox once: what a worker tick and the tests call.
pub async fn process_inbox_once(
    store: &SharedStore,
    limit: i64,
    fulfillment: &JobTemplate,
) -> Result<usize, StoreError> {
    let events = store.pending_inbox_events(limit).await?;
    // Outcomes are recorded together at the end, one commit for the batch.
    // Applying an event is idempotent, so an event whose outcome was not yet
    // recorded when the process died is simply applied again (a duplicate).
    let mut outcomes = Vec::with_capacity(events.len());
    let mut failure = None;
    for event in &events {
        match apply_event(store, event, fulfillment).await {
            Ok(outcome) => {
                if let Outcome::Flagged(why) = &outcome {
                    tracing::warn!(event_id = %event.id, %why, "payment event needs attention");
                }
                outcomes.push((event.id.clone(), outcome.describe()));
            }
            Err(error) if error.is_retryable() => {
                failure = Some(error);
                break;
            }
            Err(error) => {
                tracing::error!(event_id = %event.id, %error, "payment event failed");
                outcomes.push((event.id.clone(), format!("error: {error}")));
            }
        }
    }
    store.mark_inbox_processed_batch(&outcomes).await?;
    if let Some(error) = failure {
        return Err(error);
    }
    let processed = outcomes.len();
    Ok(processed)
}
