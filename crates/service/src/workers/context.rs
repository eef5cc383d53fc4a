//! What the background workers share: the store, the config, the outside
//! services they call and the dependency policies.

use std::sync::Arc;

use holdfast_store::SharedStore;
use tokio::sync::Notify;

use crate::config::Config;
use crate::providers::events::EventPublisher;
use crate::providers::warehouse::Warehouse;
use crate::providers::webhooks::WebhookSender;

/// Everything the background workers share.
pub struct WorkerContext {
    pub store: SharedStore,
    pub config: Arc<Config>,
    pub warehouse: Arc<dyn Warehouse>,
    pub payments: Arc<dyn crate::providers::payments::PaymentProvider>,
    /// `None` when `events.nats_url` is empty.
    pub events: Option<Arc<EventPublisher>>,
    /// The inventory node, when `inventory.mode = "remote"`.
    pub inventory: Option<Arc<crate::providers::inventory::RemoteInventory>>,
    pub webhook_sender: WebhookSender,
    /// The dependency policies (breakers and the rest), shared with the API.
    pub dependencies: Arc<holdfast_resilience::Registry>,
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
}

impl WorkerContext {
    /// A worker id unique to this process: host, pid and a random suffix.
    pub fn new_worker_id() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "holdfast".to_owned());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &suffix[..8])
    }
}
