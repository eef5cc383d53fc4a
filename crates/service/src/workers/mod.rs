//! Background work that runs inside `holdfast serve` (role `all` or
//! `workers`). Each worker is a loop around a "run once" function that the
//! tests call directly to drive it deterministically. The workers share a
//! `WorkerContext` (`context`); this module runs each queue's worker and
//! hands the jobs it claims to that queue's handler.

pub mod checkout;
pub mod context;
pub mod events;
pub mod expiry;
pub mod fulfillment;
pub mod inbox;
pub mod inventory;
pub mod jobs;
pub mod relay;
pub mod subscriptions;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_store::ClaimedJob;
use tokio::sync::{Notify, watch};

use crate::pipeline::queues;
pub use context::{Wakers, WorkerContext};
use jobs::{JobOutcome, QueueRun};

impl WorkerContext {
    /// How `queue`'s worker claims: this process's id and the queue's concurrency.
    fn queue_run(&self, queue: &str) -> anyhow::Result<QueueRun> {
        let (config, policies) = (&self.deps.config.queues, &self.deps.dependencies);
        // Partner webhooks have no shared breaker: each endpoint is its own
        // failure domain (its queue group).
        let (settings, dependency) = match queue {
            queues::CHECKOUT => (config.checkout, Some(&policies.inventory)),
            queues::INVENTORY => (config.inventory, Some(&policies.inventory)),
            queues::FULFILLMENT => (config.fulfillment, Some(&policies.warehouse)),
            queues::WEBHOOKS => (config.webhooks, None),
            queues::EVENTS => (config.events, Some(&policies.events)),
            queues::SUBSCRIPTION_PAYMENTS => (config.subscription_payments, Some(&policies.payments)),
            other => anyhow::bail!("no worker handles queue {other:?}"),
        };
        Ok(QueueRun {
            queue: queue.to_owned(),
            worker_id: self.worker_id.clone(),
            batch: settings.concurrency,
            run_length: settings.run_length,
            depends_on: dependency.cloned(),
        })
    }

    /// The handler of a run of jobs, by their queue. Partner webhooks are
    /// handled as a run (one endpoint's deliveries, recorded together); the
    /// other queues one job after another.
    async fn handle(&self, jobs: Vec<ClaimedJob>) -> Vec<JobOutcome> {
        let Some(queue) = jobs.first().map(|job| job.job.queue.clone()) else {
            return Vec::new();
        };
        let outcomes = match queue.as_str() {
            queues::WEBHOOKS => webhooks::handle_run(self, jobs).await,
            queues::CHECKOUT => jobs::one_by_one(jobs, |job| checkout::handle(self, job)).await,
            queues::INVENTORY => jobs::one_by_one(jobs, |job| inventory::handle(self, job)).await,
            queues::FULFILLMENT => jobs::one_by_one(jobs, |job| fulfillment::handle(self, job)).await,
            queues::SUBSCRIPTION_PAYMENTS => jobs::one_by_one(jobs, |job| subscriptions::handle(self, job)).await,
            _ => jobs::one_by_one(jobs, |job| events::handle(self, job)).await,
        };
        if matches!(
            queue.as_str(),
            queues::FULFILLMENT | queues::CHECKOUT | queues::SUBSCRIPTION_PAYMENTS
        ) {
            // The jobs wrote outbox events: relay them now.
            self.wake.relay.notify_one();
        }
        outcomes
    }

    /// One round of `queue`'s worker: claim a batch, handle it, settle it.
    /// What tests call to drive a queue step by step.
    pub async fn run_queue_once(&self, queue: &str, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let run = self.queue_run(queue)?;
        jobs::run_once(&self.deps.store, &run, now, |jobs| self.handle(jobs)).await
    }

    /// `queue`'s worker inside `holdfast serve`, until `shutdown`.
    pub async fn run_queue(
        self: Arc<Self>,
        queue: &'static str,
        wake: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let run = self.queue_run(queue)?;
        let poll = Duration::from_millis(self.deps.config.workers.poll_interval_ms);
        let store = self.deps.store.clone();
        tracing::debug!(worker = queue, "started");
        jobs::run_pool(store, run, poll, wake, shutdown, move |jobs| {
            let ctx = self.clone();
            async move { ctx.handle(jobs).await }
        })
        .await;
        tracing::debug!(worker = queue, "stopped");
        Ok(())
    }
}

/// Runs `tick` until shutdown, waiting `interval` (or a wake-up) between
/// ticks. A failing tick is logged and retried on the next one.
pub async fn run_loop<F, Fut>(
    name: &'static str,
    interval: Duration,
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    mut shutdown: watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<usize>>,
{
    tracing::debug!(worker = name, "started");
    loop {
        match tick().await {
            Ok(0) => {}
            Ok(done) => {
                tracing::debug!(worker = name, done, "tick");
                // There may be more: go again at once.
                if !*shutdown.borrow() {
                    continue;
                }
            }
            Err(error) => {
                tracing::warn!(worker = name, error = format!("{error:#}"), "tick failed")
            }
        }
        let woken = async {
            match &wake {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = woken => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::debug!(worker = name, "stopped");
}
