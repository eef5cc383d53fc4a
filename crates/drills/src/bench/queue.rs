//! `holdfast bench queue`: durable no-op jobs per second through the job queue
//! on PostgreSQL. Jobs are enqueued one per transaction, as a business write
//! enqueues them, then concurrent workers claim and complete them in batches
//! until the queue is empty; every job must be processed exactly once. BullMQ
//! on Redis runs the same jobs at the same concurrency in the same run.

mod bullmq;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use holdfast_store::{
    Backend, ConnectOptions, JobId, LeaseToken, NewJob, PoolOptions, Pools, QueueStats, SharedStore, describe_target,
};
use sqlx::Connection;

use super::verdict;
use crate::load::Latencies;

/// The queue's goal on PostgreSQL, in durable no-op jobs per second.
const GOAL_JOBS_PER_S: f64 = 10_000.0;
const QUEUE: &str = "bench";
/// With no claim returning a job for this long, whatever is left is leased
/// away or lost: waiting longer would only hide it, so the workers stop and
/// the exactly-once check reports it.
const STALL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// PostgreSQL server to measure on; a scratch database is created there and dropped afterwards.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// No-op jobs to enqueue and process.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,
    /// Concurrent workers (and producers); BullMQ's Worker gets the same concurrency.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// Jobs a worker claims at once, and completes at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Group keys the jobs are spread over, round robin. A group runs one job
    /// at a time, so fewer groups than workers × batch leave workers idle.
    #[arg(long, default_value_t = 4_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub groups: u64,
    /// Redis for the BullMQ comparison.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Measure Holdfast only.
    #[arg(long)]
    pub no_bullmq: bool,
    /// Give up on processing after this many seconds (the run then fails its check).
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Instead of the comparison with BullMQ: hold one group's head in
    /// flight with this many jobs queued behind it (e.g. 1000,10000,100000),
    /// and measure the other groups' jobs/s at each backlog in turn. A claim
    /// walks groups, not a group's backlog, so the figure should stay flat.
    #[arg(long, value_delimiter = ',')]
    pub backlog: Vec<u64>,
}

/// How far the jobs/s at different backlogs may spread and still count as flat.
const FLAT_WITHIN: f64 = 0.20;

/// What one run on PostgreSQL measured, and what the exactly-once check saw.
pub struct QueueRun {
    pub jobs: u64,
    pub synchronous_commit: String,
    /// Distinct job ids the enqueues returned.
    pub enqueued: u64,
    pub enqueue_elapsed: Duration,
    pub process_elapsed: Duration,
    /// Claims that returned at least one job.
    pub claim_rounds: Latencies,
    pub empty_claims: u64,
    /// Jobs handed out by claims, counting any job handed out twice.
    pub claimed: u64,
    /// Distinct enqueued jobs among those handed out.
    pub distinct: u64,
    /// Jobs that `complete_batch` removed.
    pub removed: u64,
    /// The bench queue's depth afterwards, when anything is left in it.
    pub left: Option<QueueStats>,
}

impl QueueRun {
    /// Every enqueued job handed out once, removed once, and nothing left.
    pub fn exactly_once(&self) -> bool {
        let n = self.jobs;
        self.enqueued == n && self.claimed == n && self.distinct == n && self.removed == n && self.left.is_none()
    }

    pub fn enqueue_rate(&self) -> f64 {
        self.enqueued as f64 / self.enqueue_elapsed.as_secs_f64()
    }

    pub fn process_rate(&self) -> f64 {
        self.removed as f64 / self.process_elapsed.as_secs_f64()
    }
}

pub async fn run(args: QueueArgs) -> anyhow::Result<u8> {
    require_postgres(&args.database_url)?;
    if !args.backlog.is_empty() {
        return run_backlogs(&args).await;
    }
    println!(
        "bench queue: {} no-op jobs over {} groups, {} workers claiming {} at a time, PostgreSQL ({})",
        args.jobs,
        args.groups,
        args.workers,
        args.batch,
        describe_target(&args.database_url)
    );
    let run = measure(&args).await?;
    print_holdfast(&args, &run);
    let bullmq = if args.no_bullmq {
        bullmq::Outcome::Skipped("--no-bullmq was given".into())
    } else {
        let settings = bullmq::Settings {
            jobs: args.jobs,
            concurrency: args.workers,
            redis_url: &args.redis_url,
        };
        bullmq::run(&settings).await
    };
    bullmq::print(&bullmq, run.process_rate());
    Ok(if run.exactly_once() { 0 } else { 1 })
}

async fn run_backlogs(args: &QueueArgs) -> anyhow::Result<u8> {
    let mut backlogs = args.backlog.clone();
    backlogs.sort_unstable();
    backlogs.dedup();
    println!(
        "bench queue --backlog: {} no-op jobs over {} groups per round, {} workers claiming {} at a time, \
         while group \"hot\" holds its head in flight with a growing backlog, PostgreSQL ({})",
        args.jobs,
        args.groups,
        args.workers,
        args.batch,
        describe_target(&args.database_url)
    );
    let database_url = holdfast_store::scratch::create_database(&args.database_url, "bench_backlog")
        .await
        .context("creating the scratch database")?;
    let measured = measure_backlogs(&database_url, args, &backlogs).await;
    let dropped = holdfast_store::scratch::drop_database(&args.database_url, &database_url).await;
    let rows = measured?;
    dropped.context("dropping the scratch database")?;
    let mut all_once = true;
    for (backlog, rate, once) in &rows {
        println!(
            "  backlog {backlog:>8} in one group   {rate:>8.0} jobs/s of the other groups{}",
            if *once { "" } else { "  (NOT exactly once)" }
        );
        all_once &= *once;
    }
    let rates: Vec<f64> = rows.iter().map(|(_, rate, _)| *rate).collect();
    let (low, high) = rates
        .iter()
        .fold((f64::MAX, 0.0_f64), |(low, high), r| (low.min(*r), high.max(*r)));
    let spread = if low > 0.0 { high / low - 1.0 } else { f64::INFINITY };
    println!(
        "  spread                 {:>8.0}%   goal: within {:.0}% -> {}",
        spread * 100.0,
        FLAT_WITHIN * 100.0,
        verdict(spread <= FLAT_WITHIN)
    );
    Ok(if all_once { 0 } else { 1 })
}

/// The hot group's head is enqueued and claimed once (its lease outlasts
/// the run), then its backlog is topped up to each size in turn, straight in
/// SQL since only its size matters, and a round of ordinary jobs is worked off.
async fn measure_backlogs(
    database_url: &str,
    args: &QueueArgs,
    backlogs: &[u64],
) -> anyhow::Result<Vec<(u64, f64, bool)>> {
    check_durable(database_url).await?;
    let store = connect(database_url, args.workers).await?;
    store.migrate().await.context("migrating the scratch database")?;
    let now = Utc::now();
    store
        .queue()
        .enqueue(&NewJob::new(QUEUE, "hot", serde_json::json!({ "hot": 0 }), now))
        .await?;
    let held = store.queue().claim_batch(QUEUE, "holder", 1, now).await?;
    anyhow::ensure!(held.len() == 1, "the hot group's head was not claimed");
    let mut queued = 0;
    let mut rows = Vec::new();
    for &backlog in backlogs {
        seed_backlog(database_url, backlog.saturating_sub(queued)).await?;
        queued = queued.max(backlog);
        analyze_jobs(database_url).await?;
        let (enqueued, _) = enqueue_all(&store, args).await.context("enqueueing")?;
        let (tallies, elapsed) = work_off(&store, args).await.context("working off the queue")?;
        let removed: u64 = tallies.iter().map(|t| t.removed).sum();
        let seen: HashSet<JobId> = tallies.into_iter().flat_map(|t| t.seen).collect();
        let once =
            removed == args.jobs && seen.len() as u64 == args.jobs && seen.iter().all(|id| enqueued.contains(id));
        rows.push((backlog, removed as f64 / elapsed.as_secs_f64(), once));
    }
    Ok(rows)
}

async fn seed_backlog(database_url: &str, count: u64) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let mut connection = sqlx::PgConnection::connect(database_url).await?;
    sqlx::query(
        "INSERT INTO jobs (id, queue, group_key, payload, state, visible_at, max_receives, visibility_timeout_ms, created_at) \
         SELECT 'job_' || md5(random()::text || g::text), $1, 'hot', '{}', 'ready', now(), 3, 300000, now() \
         FROM generate_series(1, $2) AS g",
    )
    .bind(QUEUE)
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .execute(&mut connection)
    .await
    .context("seeding the hot group's backlog")?;
    let _ = connection.close().await;
    Ok(())
}

/// Runs the Holdfast side on a scratch database of the server at
/// `args.database_url`, dropping it afterwards whatever happened.
pub async fn measure(args: &QueueArgs) -> anyhow::Result<QueueRun> {
    require_postgres(&args.database_url)?;
    let database_url = holdfast_store::scratch::create_database(&args.database_url, "bench_queue")
        .await
        .context("creating the scratch database")?;
    let measured = measure_on(&database_url, args).await;
    let dropped = holdfast_store::scratch::drop_database(&args.database_url, &database_url).await;
    let run = measured?;
    dropped.context("dropping the scratch database")?;
    Ok(run)
}

fn require_postgres(url: &str) -> anyhow::Result<()> {
    match Backend::from_url(url) {
        Ok(Backend::Postgres) => Ok(()),
        Ok(Backend::Sqlite) => anyhow::bail!(
            "bench queue measures the PostgreSQL queue, which the 10,000 jobs/s goal is about, \
             not {}: pass --database-url postgres://…",
            describe_target(url)
        ),
        Err(_) => anyhow::bail!("--database-url must be postgres://…, not {}", describe_target(url)),
    }
}

async fn measure_on(database_url: &str, args: &QueueArgs) -> anyhow::Result<QueueRun> {
    let synchronous_commit = check_durable(database_url).await?;
    let store = connect(database_url, args.workers).await?;
    store.migrate().await.context("migrating the scratch database")?;
    let (enqueued, enqueue_elapsed) = enqueue_all(&store, args).await.context("enqueueing")?;
    analyze_jobs(database_url).await?;
    let (tallies, process_elapsed) = work_off(&store, args).await.context("working off the queue")?;
    let left = store
        .queue()
        .stats(Utc::now())
        .await
        .context("reading the queue's depth")?
        .into_iter()
        .find(|stats| stats.queue == QUEUE);
    let mut run = QueueRun {
        jobs: args.jobs,
        synchronous_commit,
        enqueued: enqueued.len() as u64,
        enqueue_elapsed,
        process_elapsed,
        claim_rounds: Latencies::default(),
        empty_claims: 0,
        claimed: 0,
        distinct: 0,
        removed: 0,
        left,
    };
    let mut seen = HashSet::new();
    for tally in tallies {
        run.claim_rounds.merge(&tally.claim_rounds);
        run.empty_claims += tally.empty_claims;
        run.removed += tally.removed;
        run.claimed += tally.seen.len() as u64;
        seen.extend(tally.seen.into_iter().filter(|id| enqueued.contains(id)));
    }
    run.distinct = seen.len() as u64;
    Ok(run)
}

/// The figure is about durable jobs: every commit must wait for its WAL
/// flush. Any `synchronous_commit` but `off` waits for the local flush (the
/// `remote_*` levels wait for a standby as well), and `fsync = off` would
/// make the flush itself a no-op.
async fn check_durable(database_url: &str) -> anyhow::Result<String> {
    let target = describe_target(database_url);
    let mut connection = sqlx::PgConnection::connect(database_url)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut connection)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&mut connection).await?;
    let _ = connection.close().await;
    anyhow::ensure!(
        synchronous_commit != "off",
        "synchronous_commit is off on {target}: commits would not wait for their WAL flush, so jobs/s would not be durable"
    );
    anyhow::ensure!(
        fsync == "on",
        "fsync is {fsync} on {target}: WAL flushes would not reach the disk, so jobs/s would not be durable"
    );
    Ok(synchronous_commit)
}

/// Gives the planner statistics for the freshly filled table, as autovacuum
/// would soon after such a burst on a production server. Without any, it
/// estimates the claim's candidate scan so badly that it sorts the whole
/// table on every claim instead of walking the index in enqueue order (1.3 s
/// instead of 0.4 ms per claim with 60,000 jobs), and this server may run
/// with autovacuum off.
async fn analyze_jobs(database_url: &str) -> anyhow::Result<()> {
    let mut connection = sqlx::PgConnection::connect(database_url).await?;
    sqlx::query("ANALYZE jobs")
        .execute(&mut connection)
        .await
        .context("analyzing the jobs table")?;
    let _ = connection.close().await;
    Ok(())
}

/// A store whose worker pool has a connection per worker, so workers wait
/// on the database and never on the pool.
async fn connect(database_url: &str, workers: u32) -> anyhow::Result<SharedStore> {
    let pool = |max_connections| PoolOptions {
        max_connections,
        acquire_timeout: Duration::from_secs(30),
    };
    let options = ConnectOptions {
        url: database_url.to_owned(),
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        lock_timeout: Duration::from_secs(10),
        pgbouncer: holdfast_store::PgBouncer::Off,
        pools: Pools {
            read: pool(2),
            write: pool(1),
            worker: pool(workers),
        },
    };
    Ok(holdfast_store::connect(&options).await?)
}

/// `args.workers` producers enqueue the jobs one per transaction, job `n`
/// into group `n % groups`. Returns the ids handed back and the time taken.
async fn enqueue_all(store: &SharedStore, args: &QueueArgs) -> anyhow::Result<(HashSet<JobId>, Duration)> {
    let started = Instant::now();
    let producers = u64::from(args.workers);
    let mut tasks = tokio::task::JoinSet::new();
    for first in 0..producers {
        let (store, jobs, groups) = (store.clone(), args.jobs, args.groups);
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for n in (first..jobs).step_by(producers as usize) {
                let group = format!("group-{:05}", n % groups);
                let job = NewJob::new(QUEUE, group, serde_json::json!({ "n": n }), Utc::now());
                ids.push(store.queue().enqueue(&job).await?);
            }
            anyhow::Ok(ids)
        });
    }
    let mut enqueued = HashSet::new();
    while let Some(finished) = tasks.join_next().await {
        enqueued.extend(finished??);
    }
    Ok((enqueued, started.elapsed()))
}

/// Progress shared by the workers: how many jobs are gone, and when a claim
/// last returned anything.
struct Progress {
    jobs: u64,
    removed: AtomicU64,
    started: Instant,
    last_claim_ms: AtomicU64,
}

impl Progress {
    fn done(&self) -> bool {
        self.removed.load(Ordering::Relaxed) >= self.jobs
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn claimed_something(&self) {
        self.last_claim_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn stalled(&self) -> bool {
        let idle = self.now_ms().saturating_sub(self.last_claim_ms.load(Ordering::Relaxed));
        Duration::from_millis(idle) > STALL
    }
}

/// One worker's record: every job it was handed, and its claim latencies.
#[derive(Default)]
struct Tally {
    seen: Vec<JobId>,
    claim_rounds: Latencies,
    empty_claims: u64,
    removed: u64,
}

async fn work_off(store: &SharedStore, args: &QueueArgs) -> anyhow::Result<(Vec<Tally>, Duration)> {
    let progress = Arc::new(Progress {
        jobs: args.jobs,
        removed: AtomicU64::new(0),
        started: Instant::now(),
        last_claim_ms: AtomicU64::new(0),
    });
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.workers {
        let (store, progress, batch) = (store.clone(), progress.clone(), args.batch);
        tasks.spawn(async move { work(store, progress, format!("bench-worker-{w}"), batch, deadline).await });
    }
    let mut tallies = Vec::new();
    while let Some(finished) = tasks.join_next().await {
        tallies.push(finished??);
    }
    Ok((tallies, progress.started.elapsed()))
}

/// Claims a batch, completes it in one transaction, and again, until every
/// job is gone, nothing has been claimable for [`STALL`], or time is up.
async fn work(
    store: SharedStore,
    progress: Arc<Progress>,
    worker_id: String,
    batch: u32,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    while !progress.done() && Instant::now() < deadline {
        let asked = Instant::now();
        let claimed = store
            .queue()
            .claim_batch(QUEUE, &worker_id, batch, Utc::now())
            .await
            .context("claiming a batch")?;
        if claimed.is_empty() {
            tally.empty_claims += 1;
            if progress.stalled() {
                break;
            }
            // Every claimable group head is leased to another worker, whose
            // completion is a few milliseconds away.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        tally.claim_rounds.record(asked.elapsed());
        progress.claimed_something();
        let leases: Vec<(JobId, LeaseToken)> = claimed.into_iter().map(|c| (c.job.id, c.lease_token)).collect();
        tally.seen.extend(leases.iter().map(|(id, _)| id.clone()));
        let removed = store
            .queue()
            .complete_batch(&leases)
            .await
            .context("completing a batch")?;
        tally.removed += removed;
        progress.removed.fetch_add(removed, Ordering::Relaxed);
    }
    Ok(tally)
}

fn print_holdfast(args: &QueueArgs, run: &QueueRun) {
    println!(
        "  synchronous_commit      {:>8}   (every commit waits for its WAL flush)",
        run.synchronous_commit
    );
    println!(
        "  enqueue                 {:>8} in {:.2} s = {:>8.0} jobs/s (one job per transaction, {} producers)",
        run.enqueued,
        run.enqueue_elapsed.as_secs_f64(),
        run.enqueue_rate(),
        args.workers
    );
    println!(
        "  statistics              analyzed   (ANALYZE jobs after the enqueues, as autovacuum would after a burst)"
    );
    println!(
        "  claim + complete        {:>8} in {:.2} s = {:>8.0} jobs/s",
        run.removed,
        run.process_elapsed.as_secs_f64(),
        run.process_rate()
    );
    println!(
        "  claim round p50 / p99   {:>8.2} / {:.2} ms ({} rounds, {} empty claims)",
        run.claim_rounds.quantile_ms(0.5),
        run.claim_rounds.quantile_ms(0.99),
        run.claim_rounds.count(),
        run.empty_claims
    );
    let left = match &run.left {
        None => "queue empty".to_owned(),
        Some(s) => format!(
            "LEFT: {} ready, {} in flight, {} delayed, {} dead",
            s.ready, s.in_flight, s.delayed, s.dead
        ),
    };
    println!(
        "  exactly once            {:>8}   ({} distinct of {} enqueued, {} handed out, {} completed, {left})",
        if run.exactly_once() { "yes" } else { "NO" },
        run.distinct,
        run.enqueued,
        run.claimed,
        run.removed
    );
    let ratio = run.process_rate() / GOAL_JOBS_PER_S;
    println!(
        "  ratio to 10,000 jobs/s  {ratio:>8.2}   goal >= 1.00 -> {}",
        verdict(ratio >= 1.0)
    );
}
