//! The store's integration suite: the job queue, the outbox relay, stock holds,
//! the operational journal and creator subscriptions on SQLite and PostgreSQL.

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batches;
mod checkouts;
mod deadline;
mod helpers;

pub use holdfast_testkit::both_backends;
mod holds;
mod journal;
mod lifecycle;
mod outbox;
mod runs;
mod subscriptions;
mod workers;
