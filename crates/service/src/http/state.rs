//! What every handler can reach.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::Notify;

use super::keys::KeyCache;
use crate::config::Config;
use crate::providers::inventory::RemoteInventory;
use crate::providers::payments::PaymentProvider;
use holdfast_resilience::Registry;
use holdfast_store::SharedStore;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: SharedStore,
    pub payments: Arc<dyn PaymentProvider>,
    /// The inventory node, when `inventory.mode = "remote"`; `None` keeps
    /// stock in this node's database.
    pub inventory: Option<Arc<RemoteInventory>>,
    /// The resilience policy (deadline, bulkhead, retries, breaker) of every
    /// outbound dependency, shared with the workers.
    pub dependencies: Arc<Registry>,
    pub keys: KeyCache,
    /// Wakes the inbox worker when a provider event arrives, so payment
    /// confirmation does not wait for the next poll.
    pub inbox_ready: Arc<Notify>,
    /// Per-API-key request rate; `None` when `server.rate_limit_per_key_per_s` is 0.
    pub limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl AppState {
    pub fn new(
        config: Config,
        store: SharedStore,
        payments: Arc<dyn PaymentProvider>,
        inventory: Option<Arc<RemoteInventory>>,
        dependencies: Arc<Registry>,
        inbox_ready: Arc<Notify>,
    ) -> Self {
        let limiter = std::num::NonZeroU32::new(config.server.rate_limit_per_key_per_s).map(|rate| {
            let burst = std::num::NonZeroU32::new(config.server.rate_limit_burst).unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Self(Arc::new(Inner {
            config,
            store,
            payments,
            inventory,
            dependencies,
            keys: KeyCache::default(),
            inbox_ready,
            limiter,
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
