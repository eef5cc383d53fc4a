//! What every handler can reach: the pipeline's `Deps` (shared with the
//! workers) and what only the HTTP layer needs.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::Notify;

use super::keys::KeyCache;
use crate::pipeline::Deps;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// The config, the store, the outside services and the dependency
    /// policies, the same the workers run on.
    pub deps: Deps,
    pub keys: KeyCache,
    /// Wakes the inbox worker when a provider event arrives, so payment
    /// confirmation does not wait for the next poll.
    pub inbox_ready: Arc<Notify>,
    /// Per-API-key request rate; `None` when `server.rate_limit_per_key_per_s` is 0.
    pub limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl AppState {
    pub fn new(deps: Deps, inbox_ready: Arc<Notify>) -> Self {
        let server = &deps.config.server;
        let limiter = std::num::NonZeroU32::new(server.rate_limit_per_key_per_s).map(|rate| {
            let burst = std::num::NonZeroU32::new(server.rate_limit_burst).unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Self(Arc::new(Inner {
            deps,
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
