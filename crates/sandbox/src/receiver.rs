//! A recording webhook receiver: the partner endpoint that tests, drills and benchmarks
//! point Holdfast's webhook delivery at.
//!
//! Every `POST /hooks/{name}` is recorded in arrival order with its Standard Webhooks
//! headers, raw body, parsed JSON and verification result, and is answered from a
//! per-name script (say 503 three times, then 200) so a test can make a partner fail
//! exactly as it needs to. Names need no registration: an unknown name has no secret and
//! answers 200.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use holdfast_signing::standard_webhooks::{DEFAULT_TOLERANCE, VerifyError, WebhookHeaders, WebhookSecret, verify};

/// One scripted answer: a status, an optional `Retry-After`, an optional delay before
/// answering, and how many consecutive requests it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    status: StatusCode,
    retry_after: Option<String>,
    latency: Duration,
    times: usize,
}

impl Respond {
    /// Answers with `code`, once.
    ///
    /// # Panics
    ///
    /// If `code` is not a final HTTP status (200..=599): a script is written by the
    /// test itself, so a bad code is a bug in the test, and failing at once says where.
    pub fn status(code: u16) -> Self {
        assert!(
            (200..=599).contains(&code),
            "a scripted status must be in 200..=599, not {code}"
        );
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            retry_after: None,
            latency: Duration::ZERO,
            times: 1,
        }
    }

    /// `200 OK`, once.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// Sends `Retry-After: <seconds>`.
    pub fn retry_after(self, seconds: u64) -> Self {
        self.retry_after_value(seconds.to_string())
    }

    /// Sends `Retry-After` verbatim, e.g. an HTTP date, to test a sender's parser.
    pub fn retry_after_value(self, value: impl Into<String>) -> Self {
        Self {
            retry_after: Some(value.into()),
            ..self
        }
    }

    /// Waits this long after recording the request before answering.
    pub fn latency(self, latency: Duration) -> Self {
        Self { latency, ..self }
    }

    /// Answers this many consecutive requests the same way (at least one).
    pub fn times(self, times: usize) -> Self {
        Self {
            times: times.max(1),
            ..self
        }
    }

    /// The status code this answer sends.
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }
}

impl IntoResponse for Respond {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        // A value that is not a valid header (a test's typo) is dropped rather than
        // failing the request: the status still reaches the sender.
        if let Some(value) = self.retry_after.and_then(|value| HeaderValue::from_str(&value).ok()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}

/// Whether a delivery's signature was checked, and how that went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// No secret is set for the name, so nothing was checked.
    NotChecked,
    /// The signature matched under the name's secret, within the default tolerance.
    Verified,
    /// The check failed, for this reason.
    Failed(VerifyError),
}

impl Verification {
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified)
    }
}

/// One request to `/hooks/{name}`, as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Position among all requests to this receiver, from 0, in arrival order.
    pub seq: u64,
    pub name: String,
    /// The `webhook-id` header, if sent.
    pub webhook_id: Option<String>,
    /// The `webhook-timestamp` header, if sent as an integer.
    pub timestamp: Option<i64>,
    /// The `webhook-signature` header, if sent.
    pub signature: Option<String>,
    /// The raw body, exactly as it arrived.
    pub body: Bytes,
    pub verification: Verification,
    /// The status this request was answered with.
    pub status: u16,
    pub received_at: DateTime<Utc>,
}

impl Delivery {
    /// Answered with a 2xx status, i.e. the sender may consider it delivered.
    pub fn is_accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON, when it is valid JSON. Parsed on each call
    /// rather than kept: a receiver that records thousands of deliveries
    /// would otherwise hold a JSON tree for each.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy for bytes that are not UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Counters for one name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Every request, whatever it was answered.
    pub received: usize,
    /// Requests answered 2xx.
    pub accepted: usize,
    /// Requests whose signature verified.
    pub verified: usize,
}

/// `wait_for…` gave up; carries what had arrived so the test failure shows it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("waited {waited:?} for deliveries to `{name}`; the condition did not hold with {} received", deliveries.len())]
pub struct WaitTimeout {
    pub name: String,
    pub waited: Duration,
    pub deliveries: Vec<Delivery>,
}

/// What one name is configured to do, and what it has received.
#[derive(Default)]
struct Hook {
    secret: Option<WebhookSecret>,
    script: VecDeque<Respond>,
    /// The answer once the script is used up; `None` means 200.
    default: Option<Respond>,
    deliveries: Vec<Delivery>,
    counts: DeliveryCounts,
}

impl Hook {
    fn next_response(&mut self) -> Respond {
        let Some(front) = self.script.front_mut() else {
            return self.default.clone().unwrap_or_else(Respond::ok);
        };
        if front.times > 1 {
            front.times -= 1;
            return Respond {
                times: 1,
                ..front.clone()
            };
        }
        self.script.pop_front().unwrap_or_else(Respond::ok)
    }
}

#[derive(Default)]
struct Records {
    hooks: HashMap<String, Hook>,
    next_seq: u64,
}

/// What arrived, before it is matched against the name's configuration.
struct Arrival {
    name: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Inner {
    // A std `Mutex`, not tokio's: no critical section awaits anything (the scripted
    // latency is slept after the lock is released), and the tokio documentation
    // recommends the std lock for short, CPU-only sections. It also lets the query
    // methods be plain synchronous calls from tests.
    records: Mutex<Records>,
    /// Woken on every recorded delivery, so `wait_for` sleeps instead of polling.
    recorded: Notify,
}

impl Inner {
    fn records(&self) -> MutexGuard<'_, Records> {
        // A delivery is pushed whole, never half-built, so after a panic under the lock
        // the records are still usable; the worst left behind is a skipped sequence
        // number, which beats every later query panicking on the poison.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one request and decides its answer.
    ///
    /// Script consumption, verification and the push happen under one lock so that
    /// concurrent requests to a name take script entries in the same order as they
    /// appear in its deliveries. Verification is one HMAC over the body, cheap enough to
    /// hold the lock for; JSON parsing, which is not, happened before.
    fn record(&self, arrival: Arrival) -> Respond {
        let mut records = self.records();
        let seq = records.next_seq;
        records.next_seq += 1;
        let hook = records.hooks.entry(arrival.name.clone()).or_default();
        let headers = WebhookHeaders::from_header_map(&arrival.headers);
        let verification = match &hook.secret {
            None => Verification::NotChecked,
            Some(secret) => match verify(
                secret,
                headers,
                &arrival.body,
                Utc::now().timestamp(),
                DEFAULT_TOLERANCE,
            ) {
                Ok(()) => Verification::Verified,
                Err(error) => Verification::Failed(error),
            },
        };
        let response = hook.next_response();
        let delivery = Delivery {
            seq,
            name: arrival.name,
            webhook_id: headers.id.map(str::to_owned),
            timestamp: headers.timestamp.and_then(|text| text.parse().ok()),
            signature: headers.signature.map(str::to_owned),
            body: arrival.body,
            verification,
            status: response.code(),
            received_at: Utc::now(),
        };
        hook.counts.received += 1;
        hook.counts.accepted += usize::from(delivery.is_accepted());
        hook.counts.verified += usize::from(delivery.verification.is_verified());
        hook.deliveries.push(delivery);
        drop(records);
        self.recorded.notify_waiters();
        response
    }
}

/// The recording receiver. Cheap to clone: clones share one state, so keep a clone to
/// script and query after `serve` consumed one.
#[derive(Clone, Default)]
pub struct WebhookReceiver {
    inner: Arc<Inner>,
}

impl WebhookReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The HTTP surface: `POST /hooks/{name}`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/hooks/{name}", post(receive))
            .with_state(self.inner.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = listener.local_addr().context("reading the listener address")?;
        tracing::info!(%address, "webhook receiver listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .with_context(|| format!("serving the webhook receiver on {address}"))
    }

    /// Verifies deliveries to `name` under `secret` from now on.
    pub fn set_secret(&self, name: &str, secret: WebhookSecret) {
        self.with_hook(name, |hook| hook.secret = Some(secret));
    }

    /// Replaces `name`'s script: the next requests are answered in this order, each
    /// entry as many times as its [`Respond::times`], then with the default.
    pub fn script(&self, name: &str, responses: impl IntoIterator<Item = Respond>) {
        let script = responses.into_iter().collect();
        self.with_hook(name, |hook| hook.script = script);
    }

    /// How `name` answers once its script is used up (200 unless set).
    pub fn set_default(&self, name: &str, response: Respond) {
        self.with_hook(name, |hook| hook.default = Some(Respond { times: 1, ..response }));
    }

    /// Every request to `name`, in arrival order.
    pub fn deliveries(&self, name: &str) -> Vec<Delivery> {
        self.read_hook(name, |hook| hook.deliveries.clone()).unwrap_or_default()
    }

    /// The requests to `name` that were answered 2xx, in arrival order.
    pub fn accepted(&self, name: &str) -> Vec<Delivery> {
        let accepted =
            |hook: &Hook| -> Vec<Delivery> { hook.deliveries.iter().filter(|d| d.is_accepted()).cloned().collect() };
        self.read_hook(name, accepted).unwrap_or_default()
    }

    pub fn counts(&self, name: &str) -> DeliveryCounts {
        self.read_hook(name, |hook| hook.counts).unwrap_or_default()
    }

    /// Requests to any name since start-up.
    pub fn total_received(&self) -> u64 {
        self.inner.records().next_seq
    }

    /// Waits until `condition` holds for `name`'s deliveries, and returns them.
    pub async fn wait_for(
        &self,
        name: &str,
        condition: impl Fn(&[Delivery]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, WaitTimeout> {
        self.wait_until(name, |hook| condition(&hook.deliveries), timeout).await
    }

    /// Waits until `name` has received at least `count` requests.
    pub async fn wait_for_count(
        &self,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, WaitTimeout> {
        self.wait_until(name, |hook| hook.counts.received >= count, timeout)
            .await
    }

    /// Waits until `name` has answered at least `count` requests 2xx.
    pub async fn wait_for_accepted(
        &self,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, WaitTimeout> {
        self.wait_until(name, |hook| hook.counts.accepted >= count, timeout)
            .await
    }

    /// Checks `holds` after every recorded delivery until it is true or `timeout` passes.
    /// The condition sees the hook under the lock, so counting waits clone nothing
    /// until they succeed.
    async fn wait_until(
        &self,
        name: &str,
        holds: impl Fn(&Hook) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        let empty = Hook::default();
        loop {
            // Registering for the wake-up before checking means a delivery recorded
            // between the check and the wait still wakes us.
            let mut notified = pin!(self.inner.recorded.notified());
            notified.as_mut().enable();
            let satisfied = {
                let records = self.inner.records();
                holds(records.hooks.get(name).unwrap_or(&empty))
            };
            if satisfied {
                return Ok(self.deliveries(name));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(WaitTimeout {
                    name: name.to_owned(),
                    waited: timeout,
                    deliveries: self.deliveries(name),
                });
            }
        }
    }

    fn with_hook(&self, name: &str, change: impl FnOnce(&mut Hook)) {
        change(self.inner.records().hooks.entry(name.to_owned()).or_default());
    }

    fn read_hook<T>(&self, name: &str, read: impl FnOnce(&Hook) -> T) -> Option<T> {
        self.inner.records().hooks.get(name).map(read)
    }
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A copy of its own, so a kept delivery does not keep the larger buffer
    // the body was read into.
    let body = Bytes::copy_from_slice(&body);
    let response = inner.record(Arrival { name, headers, body });
    // The delivery is recorded before the delay, as a real endpoint would have done its
    // work before answering slowly: a sender that gives up waiting still left a record,
    // which is how a test sees the duplicate its retry then sends.
    if !response.latency.is_zero() {
        tokio::time::sleep(response.latency).await;
    }
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(hook: &mut Hook, n: usize) -> Vec<u16> {
        (0..n).map(|_| hook.next_response().code()).collect()
    }

    #[test]
    fn a_script_is_consumed_in_order_then_the_default_answers() {
        let mut hook = Hook {
            script: [Respond::status(503).times(2), Respond::status(429).retry_after(1)].into(),
            ..Hook::default()
        };
        assert_eq!(answers(&mut hook, 5), [503, 503, 429, 200, 200]);
        hook.default = Some(Respond::status(410));
        assert_eq!(answers(&mut hook, 2), [410, 410]);
    }

    #[test]
    fn times_zero_still_answers_once() {
        let mut hook = Hook {
            script: [Respond::status(500).times(0)].into(),
            ..Hook::default()
        };
        assert_eq!(answers(&mut hook, 2), [500, 200]);
    }

    #[test]
    fn retry_after_is_sent_and_an_invalid_value_is_dropped() {
        let with = Respond::status(429).retry_after(7).into_response();
        assert_eq!(with.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("7"));
        let invalid = Respond::status(503).retry_after_value("bad\nvalue").into_response();
        assert_eq!(invalid.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(invalid.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    #[should_panic(expected = "200..=599")]
    fn an_informational_status_cannot_be_scripted() {
        let _ = Respond::status(101);
    }
}
