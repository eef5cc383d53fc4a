//! A Stripe-like payment provider: PaymentIntents over HTTP, outcomes decided by the
//! payment method like Stripe's test mode, and signed webhooks delivered with retries.

mod api;
mod intent;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::gate::{AuthRule, Gate};
use crate::idempotency::IdempotencyStore;

use intent::IntentRecord;
pub use intent::{IntentStatus, PaymentError, PaymentIntent};
pub use webhooks::DEFAULT_WEBHOOK_BACKOFF;

/// How the sandbox provider behaves. `PaymentsConfig::default()` is a well-behaved
/// provider with no webhook receiver.
#[derive(Clone)]
pub struct PaymentsConfig {
    /// Where `payment_intent.*` events are POSTed; `None` sends none (intents still settle).
    pub webhook_url: Option<String>,
    /// The signing secret shared with the receiver (`whsec_…`).
    pub webhook_secret: String,
    /// Fraction of API calls (0..=1) answered `500 api_error` before doing anything.
    pub failure_rate: f64,
    /// Added to every API call before it is answered.
    pub latency: Duration,
    /// How long after confirmation a `processing` intent settles and its event is sent.
    pub webhook_delay: Duration,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret: "whsec_sandbox".to_owned(),
            failure_rate: 0.0,
            latency: Duration::ZERO,
            webhook_delay: Duration::from_millis(50),
        }
    }
}

// The secret stays out of logs.
impl std::fmt::Debug for PaymentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentsConfig")
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &"<redacted>")
            .field("failure_rate", &self.failure_rate)
            .field("latency", &self.latency)
            .field("webhook_delay", &self.webhook_delay)
            .finish()
    }
}

/// Counters since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PaymentsStats {
    /// Every request that reached the server, including injected failures.
    pub api_calls: u64,
    /// Requests answered `500` by the failure injector.
    pub injected_failures: u64,
    /// PaymentIntents created (idempotent replays not counted).
    pub intents_created: u64,
    /// Events delivered with a 2xx answer.
    pub webhooks_sent: u64,
    /// Delivery attempts that failed (non-2xx or connection error); retried ones included.
    pub webhooks_failed: u64,
    /// Events given up on after the last retry.
    pub webhooks_abandoned: u64,
}

/// Webhook settings that can change while serving (the demo learns the receiver's
/// address only after both servers are up).
struct WebhookSettings {
    url: Option<String>,
    backoff: Vec<Duration>,
}

#[derive(Default)]
struct Counters {
    intents_created: AtomicU64,
    webhooks_sent: AtomicU64,
    webhooks_failed: AtomicU64,
    webhooks_abandoned: AtomicU64,
}

struct Inner {
    gate: Arc<Gate>,
    idempotency: IdempotencyStore,
    // A std `Mutex`: every critical section is a short map update with no `.await`
    // inside, which the tokio documentation recommends over an async mutex.
    intents: Mutex<HashMap<String, IntentRecord>>,
    webhook: RwLock<WebhookSettings>,
    webhook_secret: String,
    webhook_delay: Duration,
    counters: Counters,
    http: reqwest::Client,
}

/// The sandbox payment provider. Cheap to clone: clones share one state, so keep a
/// clone to read [`stats`](Self::stats) or change faults after `serve` consumed one.
#[derive(Clone)]
pub struct SandboxPayments {
    inner: Arc<Inner>,
}

impl SandboxPayments {
    pub fn new(config: PaymentsConfig) -> Self {
        let gate = Gate::new(AuthRule::StripeTestKey, config.failure_rate, config.latency);
        let inner = Inner {
            gate: Arc::new(gate),
            idempotency: IdempotencyStore::default(),
            intents: Mutex::new(HashMap::new()),
            webhook: RwLock::new(WebhookSettings {
                url: config.webhook_url,
                backoff: DEFAULT_WEBHOOK_BACKOFF.to_vec(),
            }),
            webhook_secret: config.webhook_secret,
            webhook_delay: config.webhook_delay,
            counters: Counters::default(),
            http: reqwest::Client::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The HTTP API (`/v1/payment_intents…`), for mounting or for `axum::serve`.
    pub fn router(&self) -> Router {
        api::router(self.inner.clone())
    }

    /// Serves the API on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = listener.local_addr().context("reading the listener address")?;
        tracing::info!(%address, "sandbox payments listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .with_context(|| format!("serving sandbox payments on {address}"))
    }

    pub fn stats(&self) -> PaymentsStats {
        let counters = &self.inner.counters;
        PaymentsStats {
            api_calls: self.inner.gate.api_calls.load(Ordering::Relaxed),
            injected_failures: self.inner.gate.injected_failures.load(Ordering::Relaxed),
            intents_created: counters.intents_created.load(Ordering::Relaxed),
            webhooks_sent: counters.webhooks_sent.load(Ordering::Relaxed),
            webhooks_failed: counters.webhooks_failed.load(Ordering::Relaxed),
            webhooks_abandoned: counters.webhooks_abandoned.load(Ordering::Relaxed),
        }
    }

    /// Fraction of API calls (clamped to 0..=1) answered `500` from now on.
    pub fn set_failure_rate(&self, rate: f64) {
        self.inner.gate.set_failure_rate(rate);
    }

    /// Latency added to every API call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.gate.set_latency(latency);
    }

    /// Where events created from now on are delivered.
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.inner.webhook_settings_mut().url = url;
    }

    /// Waits between delivery attempts: `n` waits mean `n + 1` attempts. The default is
    /// [`DEFAULT_WEBHOOK_BACKOFF`]; tests shorten it.
    pub fn set_webhook_backoff(&self, backoff: Vec<Duration>) {
        self.inner.webhook_settings_mut().backoff = backoff;
    }

    /// A snapshot of one intent, as `GET /v1/payment_intents/{id}` would return it.
    pub fn intent(&self, id: &str) -> Option<PaymentIntent> {
        self.inner.intents_lock().get(id).map(|record| record.intent.clone())
    }

    /// A snapshot of every intent created so far, in no particular order: what a
    /// drill audits for double charges.
    pub fn intents(&self) -> Vec<PaymentIntent> {
        self.inner
            .intents_lock()
            .values()
            .map(|record| record.intent.clone())
            .collect()
    }
}

impl Inner {
    fn intents_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, IntentRecord>> {
        // A panic while holding the lock cannot leave a half-written intent (each
        // update is a single assignment), so a poisoned lock is still usable.
        self.intents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn webhook_settings_mut(&self) -> std::sync::RwLockWriteGuard<'_, WebhookSettings> {
        self.webhook.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn webhook_settings(&self) -> (Option<String>, Vec<Duration>) {
        let settings = self.webhook.read().unwrap_or_else(PoisonError::into_inner);
        (settings.url.clone(), settings.backoff.clone())
    }
}
