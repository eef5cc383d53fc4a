//! Integration tests for the guardrail tools: data-driven fixtures with
//! reviewed `insta` snapshots, against real PostgreSQL, real HTTP servers and
//! the real promtool/amtool.

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod canary;
mod cli;
mod lint;
mod ops;
mod policy;
mod support;
