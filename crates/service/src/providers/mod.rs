//! Adapters to the outside services Holdfast calls.

pub mod payments;
