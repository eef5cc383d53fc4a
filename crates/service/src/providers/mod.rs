//! Adapters to the outside services Holdfast calls.

pub mod events;
pub mod inventory;
pub mod payments;
pub mod warehouse;
pub mod webhooks;
