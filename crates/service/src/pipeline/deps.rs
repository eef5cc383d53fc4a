//! What the pipeline's steps run on: the config, the store, the outside
//! services both the API and the workers call, and the resilience policy of
//! every dependency. Built once at start-up; the HTTP layer's state and the
//! workers' context hold the same `Deps`.

use std::sync::Arc;

use holdfast_resilience::{Policy, Registry};
use holdfast_store::SharedStore;

use crate::config::Config;
use crate::providers::inventory::RemoteInventory;
use crate::providers::payments::PaymentProvider;

#[derive(Clone)]
pub struct Deps {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub payments: Arc<dyn PaymentProvider>,
    /// The inventory node, when `inventory.mode = "remote"`; `None` keeps
    /// stock in this node's database.
    pub inventory: Option<Arc<RemoteInventory>>,
    /// The policy of each outbound dependency, one field each.
    pub dependencies: Dependencies,
    /// The same policies by name: listed for operators (`/metrics`,
    /// `/readyz`, the breakers endpoint, the breaker journal) and
    /// reconfigured by name (`SIGHUP`, `PUT /api/v1/ops/breakers/{name}`).
    pub registry: Arc<Registry>,
}

/// The resilience policy (deadline, bulkhead, retry budget, breaker) of
/// every outbound dependency. Each field is a handle on the registry's
/// policy of that name, sharing its state: a reload reconfigures the very
/// policy these call through, and its breaker keeps its window.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub inventory: Policy,
    pub payments: Policy,
    pub warehouse: Policy,
    /// Partner webhooks. Deliveries are not called through it: each partner
    /// endpoint is its own failure domain (its queue group), and one failing
    /// endpoint must not trip a breaker that every endpoint shares.
    pub webhooks: Policy,
    pub events: Policy,
}

/// A dependency the registry has no policy for: every configured
/// dependency has one, so this is a registry built from another config.
#[derive(Debug, thiserror::Error)]
#[error("no policy for the {0} dependency")]
pub struct MissingPolicy(pub &'static str);

impl Dependencies {
    /// Takes each dependency's policy from `registry`, once.
    pub fn from_registry(registry: &Registry) -> Result<Self, MissingPolicy> {
        let policy = |name: &'static str| registry.breaker_for(name).ok_or(MissingPolicy(name));
        Ok(Self {
            inventory: policy("inventory")?,
            payments: policy("payments")?,
            warehouse: policy("warehouse")?,
            webhooks: policy("webhooks")?,
            events: policy("events")?,
        })
    }
}
