//! The drills' integration suite: benchmarks run at tiny scale against real
//! services, checking what they verify rather than how fast they are.

mod queue_bench;
