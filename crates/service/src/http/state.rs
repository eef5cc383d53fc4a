//! What every handler can reach.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::Notify;

use super::auth::KeyCache;
use crate::config::Config;
use crate::providers::payments::PaymentProvider;
use holdfast_store::SharedStore;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: SharedStore,
    pub payments: Arc<dyn PaymentProvider>,
    pub keys: KeyCache,
    /// Wakes the inbox worker when a provider event arrives, so payment
    /// confirmation does not wait for the next poll.
    pub inbox_ready: Arc<Notify>,
}

impl AppState {
    pub fn new(
        config: Config,
        store: SharedStore,
        payments: Arc<dyn PaymentProvider>,
        inbox_ready: Arc<Notify>,
    ) -> Self {
        Self(Arc::new(Inner {
            config,
            store,
            payments,
            keys: KeyCache::default(),
            inbox_ready,
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
