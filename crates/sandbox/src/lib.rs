//! Sandbox stand-ins for Holdfast's outside services, served over real HTTP.
//!
//! [`payments::SandboxPayments`] speaks a subset of Stripe's PaymentIntent API (form
//! bodies, idempotency keys, signed webhooks) so a Stripe adapter can talk to it
//! unchanged; [`warehouse::SandboxWarehouse`] creates shipments with tracking ids. Both
//! can inject failures and latency at run time, which is what the drills use them for.
//! Neither knows anything about Holdfast itself.

mod error;
mod gate;
mod idempotency;
mod ids;
pub mod payments;
pub mod signature;
pub mod warehouse;

pub use payments::{PaymentIntent, PaymentsConfig, PaymentsStats, SandboxPayments};
pub use signature::{SignatureError, stripe_signature_header, verify_stripe_signature};
pub use warehouse::{SandboxWarehouse, Shipment, WarehouseConfig, WarehouseStats};
