//! Fakes shared by the tests: an error type, a small configuration, and a
//! gate that holds calls in flight until the test opens it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use holdfast_resilience::{BreakerConfig, CallError, CallOptions, Classify, DependencyConfig, OnUnavailable, Policy};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A timeout, a refused connection, a 5xx.
    Transient,
    /// A 4xx: the dependency answered.
    Definitive,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Fault {}

impl Classify for Fault {
    fn is_transient(&self) -> bool {
        *self == Fault::Transient
    }
}

/// No retries, a breaker that trips at 50% over 10 calls, 500 ms slow calls.
pub fn config() -> DependencyConfig {
    let mut config = DependencyConfig {
        deadline_ms: 1000,
        max_concurrency: 64,
        on_unavailable: OnUnavailable::Reject,
        ..DependencyConfig::default()
    };
    config.retry.max_attempts = 1;
    config.breaker = BreakerConfig {
        failure_rate: 0.5,
        window_s: 10,
        min_calls: 10,
        slow_call_ms: 500,
        open_s: 30,
        half_open_probes: 3,
    };
    config
}

pub fn policy(config: DependencyConfig) -> Policy {
    Policy::new("inventory", config).expect("valid test config")
}

pub async fn fail(policy: &Policy, fault: Fault) -> Result<(), CallError<Fault>> {
    policy
        .call(CallOptions::default(), || async move { Err::<(), _>(fault) })
        .await
}

pub async fn succeed(policy: &Policy) -> Result<(), CallError<Fault>> {
    policy
        .call(CallOptions::default(), || async { Ok::<_, Fault>(()) })
        .await
}

/// Trips the breaker of a [`config`]-like policy with `min_calls` failures.
pub async fn trip(policy: &Policy) {
    for _ in 0..policy.config().breaker.min_calls {
        let _ = fail(policy, Fault::Transient).await;
    }
}

/// Calls that enter count themselves and wait until the test opens the gate.
#[derive(Clone)]
pub struct Gate {
    pub entered: Arc<AtomicUsize>,
    permits: Arc<Semaphore>,
}

impl Gate {
    pub fn new() -> Self {
        Self {
            entered: Arc::new(AtomicUsize::new(0)),
            permits: Arc::new(Semaphore::new(0)),
        }
    }

    pub async fn pass(&self, outcome: Result<(), Fault>) -> Result<(), Fault> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let permit = self.permits.acquire().await.expect("the gate is never closed");
        permit.forget();
        outcome
    }

    pub fn open(&self, calls: usize) {
        self.permits.add_permits(calls);
    }

    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    /// Polls until `calls` calls are inside, failing the test after 5 s.
    pub async fn wait_for(&self, calls: usize) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while self.entered() < calls {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "only {} of {calls} calls entered", self.entered());
    }
}
