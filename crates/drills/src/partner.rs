//! A partner's side of Holdfast's webhooks for the demo and benchmarks: a
//! recording receiver on a loopback port, endpoints registered through the
//! admin API, and the bookkeeping that reads what the partner received.

use std::collections::HashSet;

use holdfast_sandbox::{Delivery, WebhookReceiver};
use holdfast_signing::WebhookSecret;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::load::Driver;

/// A running `WebhookReceiver` and the URL it listens on.
pub struct Partner {
    pub receiver: WebhookReceiver,
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Partner {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let receiver = WebhookReceiver::new();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(receiver.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            receiver,
            base_url,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Registers `/hooks/{name}` with Holdfast for `event_types` and gives the
    /// receiver the secret Holdfast generated, so every delivery to it is
    /// verified. Returns the endpoint id (`we_…`).
    pub async fn register(&self, admin: &Driver, name: &str, event_types: &[&str]) -> anyhow::Result<String> {
        let url = format!("{}/hooks/{name}", self.base_url);
        let answer = admin
            .post(
                "/api/v1/webhook-endpoints",
                &json!({"url": url, "event_types": event_types}),
                None,
            )
            .await?;
        anyhow::ensure!(
            answer.status == 201,
            "registering webhook endpoint {url}: HTTP {} {}",
            answer.status,
            answer.raw
        );
        let field = |key: &str| {
            answer.body[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no {key} in {}", answer.raw))
        };
        let secret = WebhookSecret::parse(&field("secret")?)
            .map_err(|error| anyhow::anyhow!("the secret of endpoint {url}: {error}"))?;
        self.receiver.set_secret(name, secret);
        field("id")
    }

    /// Stops the receiver; what it recorded stays readable through clones of
    /// `receiver`.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

/// Deliveries of one endpoint reduced to what the partner acted on.
#[derive(Debug, Default)]
pub struct Received<'a> {
    /// The first 2xx delivery of each event id, in arrival order: each event
    /// as the partner processed it.
    pub events: Vec<&'a Delivery>,
    /// Later 2xx deliveries of an id already accepted. At-least-once delivery
    /// allows them; without failures there should be none.
    pub duplicates: usize,
    /// Deliveries that failed verification or had no secret to check against.
    pub unverified: usize,
}

impl<'a> Received<'a> {
    pub fn of(deliveries: &'a [Delivery]) -> Self {
        let mut seen = HashSet::new();
        let mut received = Received::default();
        for delivery in deliveries {
            if !delivery.verification.is_verified() {
                received.unverified += 1;
            }
            if !delivery.is_accepted() {
                continue;
            }
            let id = delivery.webhook_id.as_deref().unwrap_or_default();
            if seen.insert(id) {
                received.events.push(delivery);
            } else {
                received.duplicates += 1;
            }
        }
        received
    }
}

/// `data.id` of a delivered order event.
pub fn data_id(delivery: &Delivery) -> Option<String> {
    Some(delivery.json()?.get("data")?.get("id")?.as_str()?.to_owned())
}

/// `type` of a delivered event, e.g. `order.paid`.
pub fn event_type(delivery: &Delivery) -> Option<String> {
    Some(delivery.json()?.get("type")?.as_str()?.to_owned())
}
