//! Running the jobs of one queue: claim a batch of runs (a group's head and
//! the jobs right behind it), work on the runs concurrently, each one's jobs in
//! order, while their leases are kept alive, then complete what finished,
//! schedule the retry of the job that failed and give back the rest of its
//! run untouched. A worker that dies mid-job simply stops heartbeating; the job
//! becomes visible again after its visibility timeout and another worker
//! takes it, so handlers must be idempotent (they carry idempotency keys to
//! every outside call).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use holdfast_domain::OrderId;
use holdfast_store::{ClaimedJob, FailOutcome, LeaseToken, SharedStore, StoreError};
use rand::Rng;

/// What a handler decided about its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Finished (or nothing left to do): remove the job.
    Done,
    /// Try again after `after`; the job is dead-lettered once its receives
    /// are used up.
    Retry { after: Duration, error: String },
    /// The handler settled the job itself, in the transaction of its own
    /// business write (a declined charge and its retry or dead letter):
    /// nothing is left to complete or fail. Like a retry, it stops the run.
    Settled,
    /// Our own database could not be reached, or gave no connection in
    /// time, before the job's work was read or its outcome written: give the
    /// job back, its receive not counted, ready again after `after`. A store
    /// outage says nothing about the job: counted as a retry, its
    /// exponential backoff would leave a group's head (and every job behind
    /// it) waiting up to a minute after the database is back, and spend the
    /// receives that protect against a poison job. Like a retry, it stops
    /// the run.
    Release { after: Duration, error: String },
}

impl JobOutcome {
    pub fn retry(after: Duration, error: impl std::fmt::Display) -> Self {
        Self::Retry {
            after,
            error: error.to_string(),
        }
    }

    /// What becomes of a job whose step failed with `error`: given back
    /// after a short pause when the store is out ([`StoreError::is_outage`]:
    /// unreachable, or no pooled connection in time), retried with the
    /// receive's backoff otherwise. A statement or lock timeout counts: a
    /// job whose own query always times out still ends in the dead letters.
    pub fn after_failure(job: &ClaimedJob, max_backoff: Duration, error: &anyhow::Error) -> Self {
        let store_outage = error
            .chain()
            .any(|cause| cause.downcast_ref::<StoreError>().is_some_and(StoreError::is_outage));
        if store_outage {
            Self::Release {
                after: jitter(STORE_OUTAGE_PAUSE, 0.2),
                error: format!("{error:#}"),
            }
        } else {
            Self::retry(backoff(job.job.receive_count, max_backoff), format!("{error:#}"))
        }
    }
}

/// How long a job given back during a store outage waits before it is
/// claimed again: long enough not to spin on a database that refuses, short
/// enough that the queue moves within a second or two of its return.
const STORE_OUTAGE_PAUSE: Duration = Duration::from_secs(1);

/// Which queue a worker drains and how.
#[derive(Debug, Clone)]
pub struct QueueRun {
    pub queue: String,
    pub worker_id: String,
    /// Runs claimed (and worked on concurrently) per round.
    pub batch: u32,
    /// Jobs of one group per run (1: one job at a time).
    pub run_length: u32,
    /// The dependency every job of the queue calls. While its breaker is
    /// open the pool claims nothing: a job would only fail at once and spend
    /// one of its receives (dead-lettering it early) and a write for nothing.
    pub depends_on: Option<holdfast_resilience::Policy>,
}

/// How long to wait before claiming, while `run`'s dependency is refusing calls.
fn paused_for(run: &QueueRun) -> Option<Duration> {
    let state = run.depends_on.as_ref()?.state();
    (state.state == holdfast_resilience::BreakerState::Open).then(|| {
        let left = state.retry_after.unwrap_or(Duration::from_secs(1));
        left.clamp(Duration::from_millis(50), Duration::from_secs(5))
    })
}

/// Claims up to `run.batch` runs and handles them concurrently; returns how
/// many jobs it claimed. `now` is the claim time, passed in so tests can move
/// past visibility timeouts without sleeping.
pub async fn run_once<F, Fut>(
    store: &SharedStore,
    run: &QueueRun,
    now: DateTime<Utc>,
    handle: F,
) -> anyhow::Result<usize>
where
    F: Fn(Vec<ClaimedJob>) -> Fut,
    Fut: Future<Output = Vec<JobOutcome>>,
{
    let runs = store
        .queue()
        .claim_runs(&run.queue, &run.worker_id, run.batch, run.run_length, now)
        .await?;
    let count = runs.iter().map(Vec::len).sum();
    let outcomes = join_all(
        runs.iter()
            .map(|jobs| with_heartbeat(store, jobs, handle(jobs.clone()))),
    )
    .await;
    // Finished jobs leave in one transaction; retries are scheduled one by one.
    let mut done = Vec::new();
    for (jobs, outcomes) in runs.into_iter().zip(outcomes) {
        done.extend(settle_run(store, jobs, outcomes, now).await?);
    }
    complete_all(store, &done).await?;
    Ok(count)
}

/// Handles a run one job after another, stopping at the first job that is
/// to be retried: the jobs behind it must wait for it.
pub async fn one_by_one<F, Fut>(jobs: Vec<ClaimedJob>, handle: F) -> Vec<JobOutcome>
where
    F: Fn(ClaimedJob) -> Fut,
    Fut: Future<Output = JobOutcome>,
{
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome = handle(job).await;
        let stop = outcome != JobOutcome::Done;
        outcomes.push(outcome);
        if stop {
            break;
        }
    }
    outcomes
}

/// Settles a handled run: returns its finished jobs (to be completed), and
/// schedules the retry of the job that failed. The jobs behind a failure, or
/// past the outcomes the handler gave, were never worked on: they go back to
/// the queue with their receive uncounted, behind the failed job.
async fn settle_run(
    store: &SharedStore,
    jobs: Vec<ClaimedJob>,
    outcomes: Vec<JobOutcome>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<ClaimedJob>> {
    let mut done = Vec::new();
    let mut jobs = jobs.into_iter();
    for outcome in outcomes {
        let Some(job) = jobs.next() else { break };
        match outcome {
            JobOutcome::Done => done.push(job),
            JobOutcome::Retry { after, error } => {
                schedule_retry(store, &job, after, &error, now).await?;
                break;
            }
            JobOutcome::Settled => break,
            JobOutcome::Release { after, error } => {
                tracing::debug!(job = %job.job.id, %error, ?after, "store unavailable; job given back");
                metrics::counter!("holdfast_jobs_total", "queue" => job.job.queue.clone(), "outcome" => "released")
                    .increment(1);
                // The job and the rest of its run keep their places and
                // become visible together once the pause is over.
                let pause = chrono::TimeDelta::from_std(after).unwrap_or(chrono::TimeDelta::seconds(1));
                let now = Utc::now();
                let visible_at = now.checked_add_signed(pause).unwrap_or(now);
                let mut back = vec![(job.job.id, job.lease_token)];
                back.extend(jobs.by_ref().map(|job| (job.job.id, job.lease_token)));
                store.queue().release(&back, visible_at).await?;
                break;
            }
        }
    }
    let untouched: Vec<_> = jobs.map(|job| (job.job.id, job.lease_token)).collect();
    if !untouched.is_empty() {
        store.queue().release(&untouched, Utc::now()).await?;
    }
    Ok(done)
}

/// Keeps up to `run.batch` runs of the queue in hand until `shutdown`: each
/// run is worked on in its own task and settles on its own, and a freed slot
/// is filled by the next claim at once, so one slow job (a partner endpoint
/// that hangs until its deadline) never holds back the runs beside it. Idle,
/// it waits `poll` or until `wake`; on shutdown it lets runs in hand finish.
pub async fn run_pool<F, Fut>(
    store: SharedStore,
    run: QueueRun,
    poll: Duration,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Vec<ClaimedJob>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Vec<JobOutcome>> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(run.batch.max(1) as usize));
    let (finished, completer) = spawn_completer(store.clone(), wake.clone());
    let mut unanswered = UnansweredClaims::default();
    while !*shutdown.borrow() {
        let first = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot { Ok(slot) => slot, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        if let Some(pause) = paused_for(&run) {
            drop(first);
            tracing::debug!(queue = %run.queue, pause_ms = pause.as_millis(), "dependency breaker open: not claiming");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut free = vec![first];
        while let Ok(slot) = slots.clone().try_acquire_owned() {
            free.push(slot);
        }
        let limit = u32::try_from(free.len()).unwrap_or(u32::MAX);
        unanswered.give_back(&store, &run.queue).await;
        let token = LeaseToken::generate();
        let runs = match store
            .queue()
            .claim_runs_as(&run.queue, &run.worker_id, limit, run.run_length, &token, Utc::now())
            .await
        {
            Ok(runs) => runs,
            Err(error) => {
                tracing::warn!(queue = %run.queue, %error, "claim failed");
                unanswered.remember(token);
                Vec::new()
            }
        };
        if runs.is_empty() {
            drop(free);
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for (jobs, slot) in runs.into_iter().zip(free) {
            let (store, handle, wake, finished) = (store.clone(), handle.clone(), wake.clone(), finished.clone());
            tokio::spawn(async move {
                let outcomes = with_heartbeat(&store, &jobs, handle(jobs.clone())).await;
                let retried = outcomes.iter().any(|o| *o != JobOutcome::Done) || outcomes.len() < jobs.len();
                let settling = while_leased(&jobs, || settle_run(&store, jobs.clone(), outcomes.clone(), Utc::now()));
                match settling.await {
                    // Completed together with the jobs finishing beside them.
                    Ok(done) => {
                        for job in done {
                            let _ = finished.send(job);
                        }
                    }
                    // Their leases run out and the jobs come back: nothing is lost.
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "could not settle a run"),
                }
                if retried {
                    wake.notify_one();
                }
                drop(slot);
            });
        }
    }
    // Runs in hand finish (or their leases run out if this takes too long),
    // then the last completions are written.
    let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(run.batch.max(1))).await;
    drop(finished);
    let _ = tokio::time::timeout(Duration::from_secs(5), completer).await;
}

/// Claims that failed on the worker's side, by token. A failed claim may
/// still have committed (the connection dropped after the server committed
/// and before the answer arrived); its jobs are then leased to nobody and
/// hold their groups back until the visibility timeout. They are given back
/// before the next claim, as soon as the database answers again.
#[derive(Default)]
struct UnansweredClaims(Vec<LeaseToken>);

impl UnansweredClaims {
    /// More than this many failed claims in a row are left to their leases:
    /// an outage that long has expired the oldest ones' leases anyway.
    const MOST: usize = 64;

    fn remember(&mut self, token: LeaseToken) {
        if self.0.len() == Self::MOST {
            self.0.remove(0);
        }
        self.0.push(token);
    }

    async fn give_back(&mut self, store: &SharedStore, queue: &str) {
        while let Some(token) = self.0.last() {
            match store.queue().release_claim(queue, token, Utc::now()).await {
                Ok(released) => {
                    if released > 0 {
                        tracing::warn!(
                            queue,
                            released,
                            "a claim whose answer was lost had leased jobs; given back"
                        );
                    }
                    self.0.pop();
                }
                // Still unreachable: tried again before the next claim.
                Err(_) => return,
            }
        }
    }
}

/// Completes finished jobs in batches: whatever finished while the previous
/// batch was being written goes in the next transaction, so a busy queue
/// pays one commit for many jobs and an idle one still completes each at
/// once. Each batch wakes the claimer, since the next job of each group is
/// claimable from then on.
fn spawn_completer(
    store: SharedStore,
    wake: std::sync::Arc<tokio::sync::Notify>,
) -> (
    tokio::sync::mpsc::UnboundedSender<ClaimedJob>,
    tokio::task::JoinHandle<()>,
) {
    const MOST_PER_COMMIT: usize = 256;
    let (finished, mut done) = tokio::sync::mpsc::unbounded_channel::<ClaimedJob>();
    let completer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MOST_PER_COMMIT);
        while done.recv_many(&mut batch, MOST_PER_COMMIT).await > 0 {
            if let Err(error) = complete_retrying(&store, &batch).await {
                // Their leases run out and the jobs come back: nothing is lost.
                tracing::warn!(
                    jobs = batch.len(),
                    error = format!("{error:#}"),
                    "could not complete finished jobs"
                );
            }
            batch.clear();
            wake.notify_one();
        }
    });
    (finished, completer)
}

/// Runs `work` while extending the leases of the run's jobs every third of
/// the visibility timeout, so a slow but live handler keeps its jobs.
async fn with_heartbeat<Fut>(store: &SharedStore, jobs: &[ClaimedJob], work: Fut) -> Vec<JobOutcome>
where
    Fut: Future<Output = Vec<JobOutcome>>,
{
    let Some(first) = jobs.first() else {
        return work.await;
    };
    let timeout = first.job.visibility_timeout;
    let every = (timeout / 3).max(Duration::from_millis(100));
    tokio::pin!(work);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = ticker.tick() => {
                for job in jobs {
                    match store.queue().heartbeat(&job.job.id, &job.lease_token, timeout, Utc::now()).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(job = %job.job.id, "lease lost while working; another worker may repeat this job"),
                        Err(error) => tracing::warn!(job = %job.job.id, %error, "heartbeat failed"),
                    }
                }
            }
        }
    }
}

/// Completes `done`, retrying while their leases hold (see [`while_leased`]).
/// Completing twice is harmless: the second time finds the jobs gone.
async fn complete_retrying(store: &SharedStore, done: &[ClaimedJob]) -> anyhow::Result<()> {
    while_leased(done, || complete_all(store, done)).await
}

/// Runs `write` (settling or completing `jobs`) until it succeeds, with
/// backoff, for as long as the jobs' visibility timeout: the causes are
/// usually brief (a full pool, connections refused while a pooler reloads or
/// restarts), and jobs left to their leases hold their whole group back until
/// the timeout. Past it the jobs come back by themselves, and a late write
/// finds its lease gone, which changes nothing.
async fn while_leased<T, Fut>(jobs: &[ClaimedJob], mut write: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let lease = jobs.first().map_or(Duration::ZERO, |job| job.job.visibility_timeout);
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() + pause < lease => {
                tracing::debug!(
                    jobs = jobs.len(),
                    error = format!("{error:#}"),
                    "writing the jobs' outcome again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(error) => return Err(error),
        }
    }
}

async fn complete_all(store: &SharedStore, done: &[ClaimedJob]) -> anyhow::Result<()> {
    let Some(first) = done.first() else {
        return Ok(());
    };
    let leases: Vec<_> = done.iter().map(|j| (j.job.id.clone(), j.lease_token.clone())).collect();
    let removed = store.queue().complete_batch(&leases).await?;
    let lost = leases.len() as u64 - removed.min(leases.len() as u64);
    if lost > 0 {
        tracing::warn!(lost, queue = %first.job.queue, "jobs completed after their lease was lost");
    }
    metrics::counter!("holdfast_jobs_total", "queue" => first.job.queue.clone(), "outcome" => "done")
        .increment(removed);
    Ok(())
}

async fn schedule_retry(
    store: &SharedStore,
    job: &ClaimedJob,
    after: Duration,
    error: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    // From when the handler finished, not from the claim: a slow attempt
    // must not eat into the backoff of the next one.
    let finished = now.max(Utc::now());
    let retry_at = finished + chrono::TimeDelta::from_std(after).unwrap_or(chrono::TimeDelta::MAX);
    let failed = store
        .queue()
        .fail(&job.job.id, &job.lease_token, error, retry_at)
        .await?;
    let queue = job.job.queue.clone();
    let outcome = match failed {
        FailOutcome::Retrying { .. } => "retry",
        FailOutcome::DeadLettered => {
            tracing::error!(job = %job.job.id, queue = %queue, %error, "job dead-lettered");
            "dead_lettered"
        }
        FailOutcome::LeaseLost => "lease_lost",
    };
    tracing::debug!(job = %job.job.id, %error, ?after, "job will be retried");
    metrics::counter!("holdfast_jobs_total", "queue" => queue, "outcome" => outcome).increment(1);
    Ok(())
}

/// Exponential backoff for the `receive`-th receive (1, 2, 4 … seconds,
/// capped), with ±20% jitter so jobs that failed together spread out.
pub fn backoff(receive: u32, cap: Duration) -> Duration {
    let exponent = receive.saturating_sub(1).min(20);
    let base = Duration::from_secs(1u64 << exponent).min(cap);
    jitter(base, 0.2)
}

/// `base` moved by up to `fraction` of itself either way.
pub fn jitter(base: Duration, fraction: f64) -> Duration {
    let factor = 1.0 + rand::thread_rng().gen_range(-fraction..=fraction);
    base.mul_f64(factor.max(0.0))
}

/// Runs `step` on the order a job is about; a failed step is retried with
/// backoff up to `max_backoff`, and a job naming no valid order is dropped
/// (it can never succeed).
pub async fn for_order<Fut>(job: &ClaimedJob, max_backoff: Duration, step: impl FnOnce(OrderId) -> Fut) -> JobOutcome
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let Some(order_id) = payload_str(job, "order_id").and_then(|raw| OrderId::parse(raw).ok()) else {
        tracing::error!(job = %job.job.id, queue = %job.job.queue, "job without a valid order_id; dropped");
        return JobOutcome::Done;
    };
    match step(order_id.clone()).await {
        Ok(()) => JobOutcome::Done,
        Err(error) => {
            tracing::info!(order_id = %order_id, queue = %job.job.queue, error = format!("{error:#}"), "will retry");
            JobOutcome::after_failure(job, max_backoff, &error)
        }
    }
}

/// The outbox event a relayed job (`{"event_id": …}`) is about. A job
/// naming no event, or one that does not exist, can never succeed: it is
/// dropped (`Err(Done)`); a read that fails is retried.
pub async fn job_event(
    store: &SharedStore,
    job: &ClaimedJob,
    max_backoff: Duration,
) -> Result<holdfast_store::OutboxEvent, JobOutcome> {
    let Some(event_id) = payload_str(job, "event_id") else {
        tracing::error!(job = %job.job.id, queue = %job.job.queue, "job without an event_id; dropped");
        return Err(JobOutcome::Done);
    };
    match store.outbox().event(event_id).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => {
            tracing::error!(event_id, queue = %job.job.queue, "job for an unknown event; dropped");
            Err(JobOutcome::Done)
        }
        Err(error) => Err(JobOutcome::after_failure(job, max_backoff, &error.into())),
    }
}

/// The payload field `key` of a job as a string.
pub fn payload_str<'a>(job: &'a ClaimedJob, key: &str) -> Option<&'a str> {
    job.job.payload.get(key).and_then(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let cap = Duration::from_secs(300);
        assert!(backoff(1, cap) <= Duration::from_millis(1200));
        assert!(backoff(4, cap) >= Duration::from_millis(6400));
        assert!(backoff(40, cap) <= Duration::from_secs(360));
    }
}
