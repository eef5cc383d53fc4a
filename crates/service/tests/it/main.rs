//! The service's integration suite: every test starts the real server on
//! `127.0.0.1:0` against a fresh database, and every behaviour runs on
//! SQLite, PostgreSQL and PostgreSQL through PgBouncer (`both_backends!`).

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

pub use holdfast_testkit::both_backends;

mod bad_input;
mod checkout;
mod concurrency;
mod egress;
mod events;
mod expiry;
mod holds;
mod idempotency;
mod job_outcomes;
mod journal;
mod locks;
mod ops;
mod partners;
mod pgbouncer;
mod resilience;
mod resume;
mod steps;
mod subscriptions;
mod webhook_runs;
mod webhooks;
