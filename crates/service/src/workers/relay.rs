//! The outbox relay: fans committed events out to delivery jobs (see
//! `holdfast_store::Outbox`). Runs on every node; one relays at a time.

use chrono::{DateTime, Utc};
use holdfast_store::{QueueStats, RelayOptions};

use super::context::WorkerContext;
use crate::pipeline::queues;

pub async fn relay_once(ctx: &WorkerContext, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let config = &ctx.deps.config;
    let options = RelayOptions {
        limit: i64::from(config.workers.relay_batch),
        now,
        webhooks: config.queues.webhooks.template(queues::WEBHOOKS),
        events: ctx
            .events
            .as_ref()
            .map(|_| config.queues.events.template(queues::EVENTS)),
        inventory: ctx
            .deps
            .inventory
            .as_ref()
            .map(|_| config.queues.inventory.template(queues::INVENTORY)),
    };
    let outcome = ctx.deps.store.outbox().relay_batch(&options).await?;
    if outcome.skipped > 0 {
        tracing::warn!(
            skipped = outcome.skipped,
            "the relay stepped over a hole in the outbox sequence"
        );
    }
    if outcome.late > 0 {
        tracing::warn!(
            late = outcome.late,
            "events committed after the relay had stepped over their place were published out of order"
        );
        metrics::counter!("holdfast_outbox_late_events_total").increment(outcome.late);
    }
    if outcome.deliveries > 0 {
        ctx.wake.webhooks.notify_one();
    }
    if outcome.events > 0 && ctx.events.is_some() {
        ctx.wake.events.notify_one();
    }
    if outcome.events > 0 && ctx.deps.inventory.is_some() {
        ctx.wake.inventory.notify_one();
    }
    Ok(usize::try_from(outcome.events).unwrap_or(usize::MAX))
}

/// Queue depths, dead letters, failing endpoints and outbox lag as gauges
/// (the names `ops/prometheus/alerts.yml` reads), measured on a timer
/// because they are counts in the database, not events in this process.
pub async fn measure_once(ctx: &WorkerContext, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut all = ctx.deps.store.queue().stats(now).await?;
    // An empty queue is absent from the stats; report it as zeros so its
    // gauges do not keep their last values.
    for queue in queues::ALL {
        if !all.iter().any(|s| s.queue == queue) {
            all.push(QueueStats {
                queue: queue.to_owned(),
                ready: 0,
                in_flight: 0,
                delayed: 0,
                dead: 0,
                oldest_ready_age_s: None,
            });
        }
    }
    for stats in all {
        let gauge = |state: &'static str, value: i64| {
            metrics::gauge!("holdfast_queue_jobs", "queue" => stats.queue.clone(), "state" => state).set(value as f64);
        };
        gauge("ready", stats.ready);
        gauge("in_flight", stats.in_flight);
        gauge("delayed", stats.delayed);
        gauge("dead", stats.dead);
        metrics::gauge!("holdfast_queue_dead_letter_jobs", "queue" => stats.queue.clone()).set(stats.dead as f64);
        metrics::gauge!("holdfast_queue_oldest_job_age_seconds", "queue" => stats.queue.clone())
            .set(stats.oldest_ready_age_s.unwrap_or(0) as f64);
    }
    for endpoint in ctx.deps.store.webhooks().endpoints().await? {
        let failing = endpoint.failing_since.is_some() || !endpoint.enabled();
        metrics::gauge!("holdfast_webhook_endpoint_failing", "endpoint" => endpoint.id.to_string()).set(if failing {
            1.0
        } else {
            0.0
        });
    }
    let lag = ctx.deps.store.outbox().lag(now).await?;
    metrics::gauge!("holdfast_outbox_unpublished_events").set(lag.unpublished as f64);
    metrics::gauge!("holdfast_outbox_lag_seconds").set(lag.oldest_age_s.unwrap_or(0) as f64);
    // Measurement is not work: report none, so the loop waits its interval.
    Ok(0)
}
