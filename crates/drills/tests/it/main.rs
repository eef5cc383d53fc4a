//! The drills' integration suite: the fault-injecting proxy with a real echo
//! server and a real HTTP server behind it on 127.0.0.1 (faults observed as a
//! client of the dependency would observe them), and benchmarks run at tiny
//! scale against real services, checking what they verify rather than how
//! fast they are.

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod http;
mod inventory_hang;
mod queue_bench;
mod remote_inventory;
mod support;
mod tcp;
