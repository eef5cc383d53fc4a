//! Sandbox stand-ins for Holdfast's outside services, served over real HTTP.
//!
//! [`payments::SandboxPayments`] speaks a subset of Stripe's PaymentIntent API (form
//! bodies, idempotency keys, signed webhooks) so a Stripe adapter can talk to it
//! unchanged; [`warehouse::SandboxWarehouse`] creates shipments with tracking ids. Both
//! can inject failures and latency at run time, which is what the drills use them for.
//! [`receiver::WebhookReceiver`] stands in for a partner's endpoint: it records
//! Standard Webhooks deliveries, checks their signatures with [`standard_webhooks`],
//! and answers from a per-endpoint script (503s, 410, 429 with `Retry-After`, latency).
//! None of them knows anything about Holdfast itself.

mod error;
mod gate;
mod idempotency;
mod ids;
pub mod payments;
pub mod receiver;
pub mod warehouse;

pub use payments::{PaymentIntent, PaymentsConfig, PaymentsStats, SandboxPayments};
pub use receiver::{Delivery, DeliveryCounts, Respond, Verification, WaitTimeout, WebhookReceiver};
pub use warehouse::{SandboxWarehouse, Shipment, WarehouseConfig, WarehouseStats};
