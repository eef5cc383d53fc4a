//! The named policies of one process: looked up by dependency name, listed
//! for the ops endpoint, and reconfigured by name (admin API) or all at once
//! (a `SIGHUP` reload).

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use tokio::sync::broadcast;

use crate::config::{DependencyConfig, InvalidConfig};
use crate::policy::{BreakerSnapshot, Policy, Transition};

/// Transitions kept for a subscriber that falls behind; a breaker changes
/// state a handful of times per incident, so this is generous.
const TRANSITION_BACKLOG: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    #[error("no dependency named {0:?}")]
    UnknownDependency(String),
    #[error(transparent)]
    Invalid(#[from] InvalidConfig),
}

#[derive(Debug)]
pub struct Registry {
    /// Written only when a dependency is added; a std lock because lookups
    /// never hold it across an `.await`.
    policies: RwLock<BTreeMap<String, Policy>>,
    events: broadcast::Sender<Transition>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(TRANSITION_BACKLOG);
        Self {
            policies: RwLock::new(BTreeMap::new()),
            events,
        }
    }

    /// A registry holding one policy per configured dependency.
    pub fn from_configs<N: Into<String>>(
        configs: impl IntoIterator<Item = (N, DependencyConfig)>,
    ) -> Result<Self, InvalidConfig> {
        let registry = Self::new();
        registry.apply(configs)?;
        Ok(registry)
    }

    /// The policy of `name`, if it is configured.
    pub fn breaker_for(&self, name: &str) -> Option<Policy> {
        self.policies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every dependency's state, by name.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        self.all().iter().map(Policy::state).collect()
    }

    /// Applies new thresholds to one dependency, keeping its state.
    pub fn reconfigure(&self, name: &str, config: DependencyConfig) -> Result<(), ReconfigureError> {
        let policy = self
            .breaker_for(name)
            .ok_or_else(|| ReconfigureError::UnknownDependency(name.to_owned()))?;
        Ok(policy.reconfigure(config)?)
    }

    /// A reload: every configuration is checked before any is applied, so a
    /// bad file changes nothing. Known dependencies keep their state; new
    /// ones are added. A dependency missing from `configs` keeps its policy,
    /// since code still holds it.
    pub fn apply<N: Into<String>>(
        &self,
        configs: impl IntoIterator<Item = (N, DependencyConfig)>,
    ) -> Result<(), InvalidConfig> {
        let configs: Vec<(String, DependencyConfig)> = configs.into_iter().map(|(n, c)| (n.into(), c)).collect();
        for (name, config) in &configs {
            config.validate().map_err(|error| error.for_dependency(name))?;
        }
        let mut policies = self.policies.write().unwrap_or_else(PoisonError::into_inner);
        for (name, config) in configs {
            match policies.get(&name) {
                Some(policy) => policy.reconfigure(config)?,
                None => {
                    let policy = Policy::build(name.clone(), config, Some(self.events.clone()))?;
                    policies.insert(name, policy);
                }
            }
        }
        Ok(())
    }

    /// Breaker transitions of every dependency from now on, for the event
    /// journal. A subscriber more than 256 transitions behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// Refreshes every dependency's gauges; call before rendering `/metrics`.
    pub fn export_gauges(&self) {
        for policy in self.all() {
            policy.export_gauges();
        }
    }

    /// A copy of the list, so snapshots and gauges are taken without holding
    /// the registry's lock.
    fn all(&self) -> Vec<Policy> {
        self.policies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}
