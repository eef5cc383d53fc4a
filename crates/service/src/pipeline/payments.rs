//! Payment confirmation: provider events arrive through the inbox and move
//! orders to `paid` or `payment_failed`, or record a subscription charge's
//! outcome (its intent carries `charge_id` in its metadata). Only definitive
//! events act, and applying one again changes nothing.

use chrono::Utc;
use holdfast_domain::{ChargeId, OrderId, OrderStatus};
use holdfast_store::{
    ChargeFailure, ChargeRecorded, InboxEvent, JobTemplate, SharedStore, StatusChange, StoreError, TransitionOutcome,
};
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
    #[serde(default)]
    pub last_payment_error: Option<LastPaymentError>,
}

#[derive(Debug, Deserialize)]
pub struct LastPaymentError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// How one inbox event ended, recorded on its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(OrderStatus),
    /// A subscription charge's outcome, recorded.
    Charge(&'static str),
    Duplicate,
    Ignored(String),
    /// The event cannot apply (e.g. success for an order already cancelled):
    /// recorded for the reconciler and a refund decision.
    Flagged(String),
    /// Applying it failed for a reason that retrying will not change.
    Failed(String),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Self::Applied(status) => format!("applied: {status}"),
            Self::Charge(status) => format!("applied: charge {status}"),
            Self::Duplicate => "duplicate: order already in that state".into(),
            Self::Ignored(why) => format!("ignored: {why}"),
            Self::Flagged(why) => format!("flagged: {why}"),
            Self::Failed(why) => format!("error: {why}"),
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
    if let Some(outcome) = apply_charge_event(store, event).await? {
        return Ok(outcome);
    }
    match change_for(event, fulfillment) {
        Ok(change) => outcome_of(&change, store.transition_order(&change).await),
        Err(outcome) => Ok(outcome),
    }
}

/// Records a subscription charge's outcome from its intent's event; `None`
/// when the event is not about a subscription charge. The worker that made
/// the attempt usually recorded it already from the provider's answer, and
/// a replayed event finds it recorded: both are duplicates.
async fn apply_charge_event(store: &SharedStore, event: &InboxEvent) -> Result<Option<Outcome>, StoreError> {
    let Ok(parsed) = serde_json::from_str::<ProviderEvent>(&event.payload) else {
        return Ok(None);
    };
    let Some(charge) = parsed
        .data
        .object
        .metadata
        .get("charge_id")
        .and_then(|raw| ChargeId::parse(raw).ok())
    else {
        return Ok(None);
    };
    let intent = &parsed.data.object;
    let now = Utc::now();
    let recorded = match event.event_type.as_str() {
        "payment_intent.succeeded" => {
            store
                .subscriptions()
                .record_charge_succeeded(&charge, &intent.id, now)
                .await
        }
        "payment_intent.payment_failed" => {
            let error = intent.last_payment_error.as_ref();
            let failure = ChargeFailure {
                intent_id: Some(intent.id.clone()),
                code: error
                    .and_then(|e| e.code.clone())
                    .unwrap_or_else(|| "card_declined".into()),
                decline_code: error.and_then(|e| e.decline_code.clone()),
                message: error.and_then(|e| e.message.clone()).unwrap_or_default(),
            };
            store.subscriptions().record_charge_failed(&charge, &failure, now).await
        }
        other => {
            return Ok(Some(Outcome::Ignored(format!(
                "{other} is not a definitive payment event"
            ))));
        }
    };
    Ok(Some(match recorded {
        Ok(ChargeRecorded::Recorded(_)) if event.event_type == "payment_intent.succeeded" => {
            Outcome::Charge("succeeded")
        }
        Ok(ChargeRecorded::Recorded(_)) => Outcome::Charge("failed"),
        Ok(ChargeRecorded::Replayed) => Outcome::Duplicate,
        Ok(ChargeRecorded::Duplicate) => {
            Outcome::Flagged(format!("charge {charge} paid a period already paid: refund it"))
        }
        Err(StoreError::NotFound(what)) => Outcome::Flagged(format!("{what} not found")),
        Err(other) => return Err(other),
    }))
}

/// The status change a provider event asks for, or why it asks for none.
fn change_for(event: &InboxEvent, fulfillment: &JobTemplate) -> Result<StatusChange, Outcome> {
    let target = match event.event_type.as_str() {
        "payment_intent.succeeded" => OrderStatus::Paid,
        "payment_intent.payment_failed" => OrderStatus::PaymentFailed,
        other => {
            return Err(Outcome::Ignored(format!("{other} is not a definitive payment event")));
        }
    };
    let parsed: ProviderEvent = match serde_json::from_str(&event.payload) {
        Ok(parsed) => parsed,
        Err(e) => return Err(Outcome::Ignored(format!("unreadable payload: {e}"))),
    };
    let Some(order_id) = parsed
        .data
        .object
        .metadata
        .get("order_id")
        .and_then(|raw| OrderId::parse(raw).ok())
    else {
        return Err(Outcome::Ignored("no order_id in the intent's metadata".into()));
    };
    let now = Utc::now();
    let cause = format!("{} {} ({})", event.event_type, parsed.id, parsed.data.object.id);
    let mut change = StatusChange::new(order_id, target, cause, now);
    if target == OrderStatus::Paid {
        let job = super::queues::fulfillment_job(fulfillment, &change.order_id, now);
        change = change.enqueue(job);
    }
    Ok(change)
}

/// What the store's answer to `change` means for the event.
fn outcome_of(change: &StatusChange, result: Result<TransitionOutcome, StoreError>) -> Result<Outcome, StoreError> {
    match result {
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
    // The batch's status changes go to the store together (on SQLite, one
    // write transaction), and the outcomes are recorded together after them.
    // Applying an event is idempotent, so an event whose outcome was not yet
    // recorded when the process died is simply applied again (a duplicate).
    let mut outcomes: Vec<(String, Outcome)> = Vec::with_capacity(events.len());
    let mut changes = Vec::new();
    let mut changed_events = Vec::new();
    for event in &events {
        // Subscription charges, one at a time: each locks its subscription.
        if let Some(outcome) = apply_charge_event(store, event).await? {
            outcomes.push((event.id.clone(), outcome));
            continue;
        }
        match change_for(event, fulfillment) {
            Ok(change) => {
                changes.push(change);
                changed_events.push(event.id.clone());
            }
            Err(outcome) => outcomes.push((event.id.clone(), outcome)),
        }
    }
    let mut failure = None;
    match store.transition_orders(&changes).await {
        Ok(results) => {
            for ((change, event_id), result) in changes.iter().zip(changed_events).zip(results) {
                outcomes.push((event_id, outcome_of(change, result)?));
            }
        }
        Err(error) if error.is_retryable() => return Err(error),
        // Something in the batch fails for good: one at a time, so only the
        // event that fails is recorded as failed.
        Err(_) => {
            for (change, event_id) in changes.iter().zip(changed_events) {
                match outcome_of(change, store.transition_order(change).await) {
                    Ok(outcome) => outcomes.push((event_id, outcome)),
                    Err(error) if error.is_retryable() => {
                        failure = Some(error);
                        break;
                    }
                    Err(error) => {
                        tracing::error!(event_id = %event_id, %error, "payment event failed");
                        outcomes.push((event_id, Outcome::Failed(error.to_string())));
                    }
                }
            }
        }
    }
    let described: Vec<(String, String)> = outcomes
        .into_iter()
        .map(|(id, outcome)| {
            if let Outcome::Flagged(why) = &outcome {
                tracing::warn!(event_id = %id, %why, "payment event needs attention");
            }
            (id, outcome.describe())
        })
        .collect();
    store.mark_inbox_processed_batch(&described).await?;
    if let Some(error) = failure {
        return Err(error);
    }
    let processed = described.len();
    Ok(processed)
}
