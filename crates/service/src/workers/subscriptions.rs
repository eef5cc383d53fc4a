//! Creator subscriptions in the workers, on every node (no leader): the
//! catch-up renewal scheduler, the payment worker of queue
//! `subscription-payments` (each receive one charge attempt), the dunning
//! sweep (grace periods and pauses that ended) and settlement runs. The
//! steps are `pipeline::subscriptions::renewals`; each loop here has a
//! "run once" function on `WorkerContext` that tests call to drive it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_store::ClaimedJob;
use tokio::sync::watch;

use super::context::WorkerContext;
use super::jobs::JobOutcome;
use super::run_loop;
use crate::pipeline::subscriptions::renewals::{self, Attempted};

pub use crate::pipeline::queues::SUBSCRIPTION_PAYMENTS as QUEUE;

/// How often the dunning sweep looks for grace periods and pauses that ended.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// One receive of a payment job.
pub async fn handle(ctx: &WorkerContext, job: ClaimedJob) -> JobOutcome {
    let Some((id, period_index)) = renewals::job_period(&job) else {
        tracing::error!(job = %job.job.id, "payment job without a valid subscription and period; dropped");
        return JobOutcome::Done;
    };
    match renewals::attempt(&ctx.deps, &job, &id, period_index).await {
        Attempted::Done => {
            // A paid period opened the next, which may be due already.
            ctx.wake.renewals.notify_one();
            JobOutcome::Done
        }
        Attempted::Resume { after, error } => JobOutcome::retry(after, error),
        Attempted::Declined { .. } => JobOutcome::Settled,
    }
}

impl WorkerContext {
    /// The scheduler's pass; wakes the payment worker when it enqueued.
    pub async fn schedule_renewals_once(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let enqueued = renewals::schedule_due(&self.deps, now).await?;
        if enqueued > 0 {
            self.wake.subscription_payments.notify_one();
        }
        Ok(enqueued)
    }

    /// One dunning sweep.
    pub async fn sweep_dunning_once(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let changed = renewals::sweep_dunning(&self.deps, now).await?;
        if changed > 0 {
            self.wake.relay.notify_one();
            self.wake.renewals.notify_one();
        }
        Ok(changed)
    }

    /// One settlement run.
    pub async fn settle_once(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let batches = renewals::settle(&self.deps, now).await?;
        if batches > 0 {
            self.wake.relay.notify_one();
        }
        Ok(batches)
    }
}

/// The subscription loops of `holdfast serve`, beside the payment queue's
/// worker (started with the other queues).
pub fn spawn(ctx: &Arc<WorkerContext>, stop: &watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let config = &ctx.deps.config.subscriptions;
    let mut tasks = Vec::new();
    let scheduler = ctx.clone();
    tasks.push(tokio::spawn(run_loop(
        "renewal-scheduler",
        Duration::from_millis(config.scheduler_interval_ms),
        Some(ctx.wake.renewals.clone()),
        stop.clone(),
        move || {
            let ctx = scheduler.clone();
            async move { ctx.schedule_renewals_once(Utc::now()).await }
        },
    )));
    let sweeper = ctx.clone();
    // Changing a status wakes the sweep's own loop again at once (`run_loop`
    // goes again after a tick that did work), so it needs no waker.
    tasks.push(tokio::spawn(run_loop(
        "dunning",
        SWEEP_INTERVAL.min(Duration::from_millis(config.scheduler_interval_ms.max(1) * 5)),
        None,
        stop.clone(),
        move || {
            let ctx = sweeper.clone();
            async move { ctx.sweep_dunning_once(Utc::now()).await }
        },
    )));
    let settler = ctx.clone();
    tasks.push(tokio::spawn(run_loop(
        "settlement",
        Duration::from_millis(config.settlement_interval_ms),
        None,
        stop.clone(),
        move || {
            let ctx = settler.clone();
            async move { ctx.settle_once(Utc::now()).await }
        },
    )));
    tasks
}
