//! `holdfast bench queue` at tiny scale on a real PostgreSQL: every job is
//! processed exactly once. Timing is not checked; on a shared machine it
//! proves nothing.

use clap::Parser;
use holdfast_drills::bench::{BenchCommand, QueueArgs, measure_queue};

use crate::support::postgres_admin_url;

/// The bench's own flags, parsed as the CLI parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: QueueArgs,
}

fn tiny(database_url: &str) -> QueueArgs {
    Flags::parse_from([
        "bench-queue",
        "--database-url",
        database_url,
        "--jobs",
        "300",
        "--workers",
        "4",
        "--batch",
        "10",
        "--groups",
        "50",
        "--no-bullmq",
        "--timeout-s",
        "60",
    ])
    .args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_job_is_processed_exactly_once() {
    let Some(url) = postgres_admin_url().await else {
        return;
    };
    let run = measure_queue(&tiny(&url)).await.expect("bench runs");
    assert_eq!(run.enqueued, 300, "every enqueue returned its own id");
    assert_eq!(run.claimed, 300, "no job handed out twice");
    assert_eq!(run.distinct, 300, "every enqueued job handed out");
    assert_eq!(run.removed, 300, "every job completed under its lease");
    assert!(run.left.is_none(), "queue not empty afterwards: {:?}", run.left);
    assert!(run.exactly_once());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_exits_zero_without_bullmq() {
    let Some(url) = postgres_admin_url().await else {
        return;
    };
    let code = holdfast_drills::bench::run(BenchCommand::Queue(tiny(&url)))
        .await
        .expect("bench runs");
    assert_eq!(code, 0);
}

#[tokio::test]
async fn a_sqlite_url_is_refused_with_a_reason() {
    let error = measure_queue(&tiny("sqlite://bench.db"))
        .await
        .err()
        .expect("SQLite is refused");
    assert!(error.to_string().contains("PostgreSQL"), "{error}");
}
