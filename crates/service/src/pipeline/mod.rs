//! The business steps of checkout and payment, each a named function that
//! reads like the runbook. The HTTP handlers and the workers call them with
//! the same [`Deps`]; the steps know nothing of HTTP and answer with
//! [`Error`], which the HTTP layer maps to its problem responses in one
//! place (`http/error.rs`).
//!
//! `checkout` prices a cart and places its order; `reservation` reserves an
//! order's stock, in this node's database or on the inventory node
//! (`remote`); `idempotency` lets a client retry a checkout safely;
//! `payments` applies the provider's events; `queues` names the queues the
//! steps hand work to and builds their jobs; `subscriptions` holds creator
//! subscriptions' steps: changes asked for through the API, renewals,
//! dunning and settlement for the workers, and Finance's audit.

pub mod checkout;
pub mod deps;
pub mod error;
pub mod idempotency;
pub mod payments;
pub mod queues;
pub mod remote;
pub mod reservation;
pub mod subscriptions;

pub use deps::{Dependencies, Deps};
pub use error::{Error, Unavailable};
