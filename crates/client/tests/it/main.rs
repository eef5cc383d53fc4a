//! Integration tests of the SDK against a scripted local HTTP server that plays the
//! remote Holdfast API and records every request it receives.

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod calls;
mod fake;
mod retries;
