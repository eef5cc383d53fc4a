//! What the background workers share: the pipeline's `Deps` (the same the
//! API runs on) and what only workers use.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::pipeline::Deps;
use crate::providers::events::EventPublisher;
use crate::providers::warehouse::Warehouse;
use crate::providers::webhooks::WebhookSender;

pub struct WorkerContext {
    /// The config, the store, payments, inventory and the dependency
    /// policies, shared with the API.
    pub deps: Deps,
    pub warehouse: Arc<dyn Warehouse>,
    /// `None` when `events.nats_url` is empty.
    pub events: Option<Arc<EventPublisher>>,
    pub webhook_sender: WebhookSender,
    /// Names this process in job leases (`leased_by`).
    pub worker_id: String,
    pub wake: Wakers,
}

/// In-process nudges between workers, so work made here is picked up at
/// once; work made on other nodes is found by polling.
#[derive(Default)]
pub struct Wakers {
    pub relay: Arc<Notify>,
    pub checkout: Arc<Notify>,
    pub inventory: Arc<Notify>,
    pub fulfillment: Arc<Notify>,
    pub webhooks: Arc<Notify>,
    pub events: Arc<Notify>,
    pub subscription_payments: Arc<Notify>,
    /// The renewal scheduler: a paid period opens the next, which may be
    /// due already (catch-up renewals, a test clock moved by months).
    pub renewals: Arc<Notify>,
}

impl WorkerContext {
    /// A worker id unique to this process: host, pid and a random suffix.
    pub fn new_worker_id() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "holdfast".to_owned());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &suffix[..8])
    }
}
