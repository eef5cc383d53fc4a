//! Holdfast's guardrail tools, run before and during a deploy: the migration
//! linter (`lint`), the config policy checker (`policy`) and the canary
//! promotion gate (`canary`). They share finding rendering (`output`) and do
//! not depend on the service, so a deploy pipeline can run them alone.

pub mod canary;
pub mod cli;
pub mod lint;
pub mod output;
pub mod policy;
