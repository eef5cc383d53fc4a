//! Per-dependency resilience policies: a deadline, a bulkhead, budgeted
//! jittered retries and a circuit breaker around every outbound call, so a
//! hung or failing dependency costs a bounded amount of time and then fails
//! fast (docs/incidents.md).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use holdfast_resilience::{CallOptions, Classify, DependencyConfig, Registry};
//!
//! #[derive(Debug)]
//! struct ProviderError { status: u16 }
//! impl Classify for ProviderError {
//!     fn is_transient(&self) -> bool { self.status >= 500 || self.status == 429 }
//! }
//!
//! let registry = Registry::from_configs([("payments", DependencyConfig::default())])?;
//! let payments = registry.breaker_for("payments").ok_or("payments is not configured")?;
//! let intent = payments
//!     .call(CallOptions::idempotent(), || async { Ok::<_, ProviderError>("pi_123") })
//!     .await;
//! # let _ = intent;
//! # Ok(())
//! # }
//! ```

mod breaker;
mod budget;
mod bulkhead;
mod config;
mod error;
mod policy;
mod registry;
pub mod telemetry;
mod window;

pub use breaker::BreakerState;
pub use config::{BreakerConfig, DependencyConfig, InvalidConfig, OnUnavailable, RetryConfig};
pub use error::{CallError, Classify};
pub use policy::{BreakerSnapshot, CallOptions, Policy, Rejections, Transition};
pub use registry::{ReconfigureError, Registry};
pub use telemetry::describe_metrics;
