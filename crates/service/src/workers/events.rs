//! Publishes outbox events to NATS JetStream, one job per event, grouped by
//! order so one order's events are published in the order they happened.
//!
//! At least once: a worker that dies after the publish and before completing
//! the job publishes again after the visibility timeout, and JetStream drops
//! the repeat because `Nats-Msg-Id` is the event id.

use std::time::Duration;

use holdfast_resilience::CallOptions;
use holdfast_store::ClaimedJob;

use super::context::WorkerContext;
use super::jobs::{JobOutcome, backoff, job_event};
use crate::providers::events::Published;

pub use crate::pipeline::queues::EVENTS as QUEUE;

const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub async fn handle(ctx: &WorkerContext, job: ClaimedJob) -> JobOutcome {
    let retry = |error: String| JobOutcome::retry(backoff(job.job.receive_count, MAX_BACKOFF), error);
    let Some(publisher) = &ctx.events else {
        // NATS was configured when the job was made and is not now: keep the
        // job for a node that has it, rather than dropping the event.
        return retry("events.nats_url is not set on this node".into());
    };
    let event = match job_event(&ctx.deps.store, &job, MAX_BACKOFF).await {
        Ok(event) => event,
        Err(outcome) => return outcome,
    };
    match ctx
        .deps
        .dependencies
        .events
        .call(CallOptions::idempotent(), || publisher.publish(&event))
        .await
    {
        Ok(Published { duplicate, sequence }) => {
            tracing::debug!(event_id = %event.id, sequence, duplicate, "event published");
            let outcome = if duplicate { "duplicate" } else { "published" };
            metrics::counter!("holdfast_events_published_total", "outcome" => outcome).increment(1);
            JobOutcome::Done
        }
        Err(error) => {
            crate::telemetry::dependency_failed("events", &error);
            retry(format!("{:#}", anyhow::Error::new(error)))
        }
    }
}
