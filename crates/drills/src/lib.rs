//! Drills and benchmarks: they start the real service (in-process, on a
//! fresh database), drive load over HTTP and measure. Benchmarks print their
//! figure beside a ceiling measured in the same run, because absolute numbers
//! drift between runs on shared machines while ratios hold. `proxy` is the
//! fault-injecting TCP proxy that drills put between Holdfast and a dependency.

pub mod bench;
pub mod coldpath;
pub mod demo;
pub mod drill;
pub mod harness;
pub mod load;
pub mod partner;
pub mod postmortem;
pub mod proxy;
pub mod topology;
