//! Settling `processing` intents and delivering their signed events, with retries.
//!
//! Delivery runs in a spawned task so an API response never waits on the receiver.
//! Each attempt is signed afresh, as Stripe does, so a delivery that succeeds after
//! minutes of retries still carries a timestamp inside the receiver's tolerance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::Inner;
use super::intent::PaymentIntent;
use crate::ids::{new_id, unix_now};
use holdfast_signing::stripe_signature_header;

/// Waits between delivery attempts: ten attempts over roughly fifty seconds, so a
/// receiver that is restarting still gets the event.
pub const DEFAULT_WEBHOOK_BACKOFF: [Duration; 9] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(10),
    Duration::from_secs(10),
    Duration::from_secs(10),
    Duration::from_secs(10),
];

/// One attempt may not hang the delivery loop.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// After the configured delay, settles the intent and sends the resulting event.
pub(super) fn settle_later(inner: Arc<Inner>, intent_id: String) {
    tokio::spawn(async move {
        tokio::time::sleep(inner.webhook_delay).await;
        let settled = {
            let mut intents = inner.intents_lock();
            intents
                .get_mut(&intent_id)
                .and_then(|record| Some((record.settle()?, record.intent.clone())))
        };
        if let Some((event_type, intent)) = settled {
            deliver(&inner, event_type, intent).await;
        }
    });
}

/// Sends an event about `intent` in the background.
pub(super) fn send_event(inner: Arc<Inner>, event_type: &'static str, intent: PaymentIntent) {
    tokio::spawn(async move { deliver(&inner, event_type, intent).await });
}

async fn deliver(inner: &Inner, event_type: &'static str, intent: PaymentIntent) {
    let (url, backoff) = inner.webhook_settings();
    let Some(url) = url else {
        tracing::debug!(event_type, intent = %intent.id, "no webhook url configured; event not sent");
        return;
    };
    let event_id = new_id("evt");
    let body = json!({
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": unix_now(),
        "livemode": false,
        "data": { "object": intent },
    })
    .to_string();
    let counters = &inner.counters;
    let attempts = backoff.len() + 1;
    for attempt in 1..=attempts {
        match attempt_delivery(inner, &url, &body).await {
            Ok(()) => {
                counters.webhooks_sent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%event_id, event_type, attempt, "webhook delivered");
                return;
            }
            Err(reason) => {
                counters.webhooks_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%event_id, event_type, attempt, attempts, %reason, "webhook attempt failed");
            }
        }
        if let Some(wait) = backoff.get(attempt - 1) {
            tokio::time::sleep(*wait).await;
        }
    }
    counters.webhooks_abandoned.fetch_add(1, Ordering::Relaxed);
    tracing::error!(%event_id, event_type, attempts, "webhook abandoned after the last retry");
}

async fn attempt_delivery(inner: &Inner, url: &str, body: &str) -> Result<(), String> {
    let signature = stripe_signature_header(&inner.webhook_secret, unix_now(), body);
    let response = inner
        .http
        .post(url)
        .timeout(ATTEMPT_TIMEOUT)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|error| format!("request failed: {error}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {status}"))
    }
}
