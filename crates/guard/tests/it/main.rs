//! Integration tests for the guardrail tools: data-driven fixtures with
//! reviewed `insta` snapshots, against real PostgreSQL, real HTTP servers and
//! the real promtool/amtool.

mod canary;
mod cli;
mod lint;
mod ops;
mod policy;
mod support;
