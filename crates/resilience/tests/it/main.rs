//! Integration tests of `holdfast-resilience`: the public API against fake
//! dependencies (closures that fail, hang or block on a gate), in paused
//! time where the claim is about timing and on several threads where the
//! claim is about concurrency.

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod breaker;
mod bulkhead;
mod deadline;
mod metrics;
mod reconfigure;
mod retry;
mod support;
