//! The NATS JetStream sink of the outbox: every order event goes to
//! `<subject_prefix>.<event type>` on one stream, with `Nats-Msg-Id` set to
//! the event id so JetStream drops a publish repeated after a crash.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use holdfast_store::OutboxEvent;
use tokio::sync::OnceCell;

use crate::config::EventsConfig;

/// What one publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The stream's sequence number of the event.
    pub sequence: u64,
    /// JetStream had the event already (same id within its duplicate window).
    pub duplicate: bool,
}

/// A publish that did not get its ack. Always worth another try: the event
/// id makes a repeat harmless.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct PublishError(anyhow::Error);

impl holdfast_resilience::Classify for PublishError {
    fn is_transient(&self) -> bool {
        true
    }
}

pub struct EventPublisher {
    jetstream: jetstream::Context,
    config: EventsConfig,
    deadline: Duration,
    /// Created on first use, so a NATS server that is down at start-up only
    /// delays events instead of stopping the service.
    stream: OnceCell<()>,
}

impl EventPublisher {
    /// Starts a client that connects (and reconnects) in the background.
    pub async fn connect(config: &EventsConfig, deadline: Duration) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("holdfast")
            .connection_timeout(deadline)
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("config key `events.nats_url`: {}: {e}", config.nats_url))?;
        Ok(Self {
            jetstream: jetstream::new(client),
            config: config.clone(),
            deadline,
            stream: OnceCell::new(),
        })
    }

    pub fn subject(&self, event: &OutboxEvent) -> String {
        format!("{}.{}", self.config.subject_prefix, event.event_type)
    }

    /// Publishes `event` and waits for JetStream's ack, within the deadline.
    pub async fn publish(&self, event: &OutboxEvent) -> Result<Published, PublishError> {
        tokio::time::timeout(self.deadline, self.publish_unbounded(event))
            .await
            .map_err(|_| anyhow::anyhow!("no ack from JetStream within {} ms", self.deadline.as_millis()))
            .and_then(|published| published)
            .map_err(PublishError)
    }

    async fn publish_unbounded(&self, event: &OutboxEvent) -> anyhow::Result<Published> {
        self.stream.get_or_try_init(|| self.ensure_stream()).await?;
        let body = serde_json::json!({
            "id": event.id,
            "type": event.event_type,
            "timestamp": event.created_at,
            "data": event.payload,
        });
        let message = PublishMessage::build()
            .payload(body.to_string().into())
            .message_id(&event.id);
        let ack = self
            .jetstream
            .send_publish(self.subject(event), message)
            .await
            .map_err(|e| anyhow::anyhow!("publishing {}: {e}", event.id))?
            .await
            .map_err(|e| anyhow::anyhow!("waiting for the ack of {}: {e}", event.id))?;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn ensure_stream(&self) -> anyhow::Result<()> {
        self.jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: self.config.stream.clone(),
                subjects: vec![format!("{}.>", self.config.subject_prefix)],
                duplicate_window: Duration::from_secs(self.config.duplicate_window_s),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating JetStream stream {}: {e}", self.config.stream))?;
        Ok(())
    }
}
