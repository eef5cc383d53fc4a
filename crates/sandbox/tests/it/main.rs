//! Integration tests: the real sandboxes on 127.0.0.1:0, driven over HTTP, with a
//! recording webhook receiver standing in for Holdfast; `receiver` tests the partner
//! stand-in, `WebhookReceiver`, with a real client posting signed deliveries.

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod payments;
mod receiver;
mod renewals;
mod support;
mod warehouse;
mod webhooks;
