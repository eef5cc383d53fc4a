//! The durable job queue: SQS-FIFO semantics kept in the database itself, so a
//! job is enqueued in the same transaction as the business write that needs it.
//!
//! Every job belongs to a `queue` and a `group_key`. Within a group jobs run one
//! at a time, in enqueue order; different groups run in parallel. A claimed job
//! is leased for its visibility timeout; a worker that dies simply lets the lease
//! run out and the job becomes visible again. Each claim counts as a receive;
//! a job claimed after `max_receives` receives goes to the dead-letter state
//! instead, so one poison job cannot hold its group forever. Nothing expires:
//! a job leaves the table only when a worker completes it (payment
//! retries must never evaporate during an outage).
//!
//! Both backends run the same SQL for enqueueing, heartbeats, completion,
//! failure, dead letters, redrive and stats ([`impl_job_queue!`], expanded in
//! each backend's `queue.rs`). What stays per backend, and why:
//! - the claim: PostgreSQL locks head rows `FOR UPDATE SKIP LOCKED` so
//!   concurrent claimers take disjoint groups; SQLite's one writer leases the
//!   heads in a single `UPDATE … RETURNING`;
//! - keeping `job_heads` in step: PostgreSQL locks a group's head row before
//!   changing its jobs and updates the row explicitly; on SQLite a trigger
//!   moves the row's `visible_at` with its job and there is nothing to lock;
//! - statements over many jobs: PostgreSQL binds arrays (`unnest`, `= ANY`)
//!   and runs one statement, SQLite runs one per job in process (its cost is
//!   the one commit), reading id lists with `json_each`;
//! - times: `timestamptz` on PostgreSQL, Unix milliseconds on SQLite, so its
//!   claim adds a job's visibility timeout to `now` in integer arithmetic
//!   ([`StoredTime`]).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::error::corrupt;

/// How many times a job may be received before it is dead-lettered (SQS's
/// `maxReceiveCount`).
pub const DEFAULT_MAX_RECEIVES: u32 = 3;
/// How long a claim hides a job from other workers.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(300);

/// A job's id, `job_` and a UUIDv7 in hex, so ids sort by creation time like
/// the domain's other ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub const PREFIX: &'static str = "job";

    pub fn generate() -> Self {
        Self(format!("{}_{}", Self::PREFIX, uuid::Uuid::now_v7().simple()))
    }

    /// Accepts `job_` followed by 32 lowercase hex digits (admin input).
    pub fn parse(raw: &str) -> Option<Self> {
        let valid = raw.strip_prefix("job_").is_some_and(|rest| {
            rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        valid.then(|| Self(raw.to_owned()))
    }

    /// Wraps an id read back from storage.
    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Proof of one particular claim. A worker whose lease ran out and whose job
/// was claimed again holds a stale token, so its late `complete` or `fail`
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken(String);

impl LeaseToken {
    pub(crate) fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker; visible from `visible_at` on.
    Ready,
    /// Leased to a worker until `visible_at`; visible again after that.
    InFlight,
    /// Received `max_receives` times without completing; kept until redriven.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::InFlight => "in_flight",
            Self::Dead => "dead",
        }
    }

    pub(crate) fn parse(raw: &str) -> Result<Self> {
        match raw {
            "ready" => Ok(Self::Ready),
            "in_flight" => Ok(Self::InFlight),
            "dead" => Ok(Self::Dead),
            _ => Err(corrupt("job state", raw)),
        }
    }
}

/// A job to enqueue. `NewJob::new` fills in these defaults; the
/// builder methods change them.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub queue: String,
    pub group_key: String,
    pub payload: serde_json::Value,
    /// While a job with this key exists in the queue, enqueuing another with
    /// the same key returns the existing job's id instead.
    pub dedup_key: Option<String>,
    /// `None`: visible at once.
    pub visible_at: Option<DateTime<Utc>>,
    pub max_receives: u32,
    pub visibility_timeout: Duration,
    pub now: DateTime<Utc>,
}

impl NewJob {
    pub fn new(
        queue: impl Into<String>,
        group_key: impl Into<String>,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: JobId::generate(),
            queue: queue.into(),
            group_key: group_key.into(),
            payload,
            dedup_key: None,
            visible_at: None,
            max_receives: DEFAULT_MAX_RECEIVES,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            now,
        }
    }

    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    pub fn visible_at(mut self, at: DateTime<Utc>) -> Self {
        self.visible_at = Some(at);
        self
    }

    pub fn max_receives(mut self, max: u32) -> Self {
        self.max_receives = max;
        self
    }

    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    pub(crate) fn payload_text(&self) -> String {
        self.payload.to_string()
    }

    pub(crate) fn first_visible_at(&self) -> DateTime<Utc> {
        self.visible_at.unwrap_or(self.now)
    }

    /// At least one receive, or the job would be dead on arrival.
    pub(crate) fn max_receives_column(&self) -> i32 {
        i32::try_from(self.max_receives.max(1)).unwrap_or(i32::MAX)
    }

    pub(crate) fn visibility_timeout_ms(&self) -> i64 {
        duration_ms(self.visibility_timeout)
    }
}

/// How the jobs of one queue are made: the queue's name and the settings
/// every job of it carries (they are stored per job, so a change of config
/// applies to jobs enqueued after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTemplate {
    pub queue: String,
    pub max_receives: u32,
    pub visibility_timeout: Duration,
}

impl JobTemplate {
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            max_receives: DEFAULT_MAX_RECEIVES,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
        }
    }

    pub fn job(&self, group_key: impl Into<String>, payload: serde_json::Value, now: DateTime<Utc>) -> NewJob {
        NewJob::new(self.queue.clone(), group_key, payload, now)
            .max_receives(self.max_receives)
            .visibility_timeout(self.visibility_timeout)
    }
}

/// A stored job, as the dead-letter listing and claims return it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    /// The enqueue sequence that orders a group's jobs.
    pub seq: i64,
    pub queue: String,
    pub group_key: String,
    pub payload: serde_json::Value,
    pub dedup_key: Option<String>,
    pub state: JobState,
    /// For a ready job, when it becomes claimable; for one in flight, when its
    /// lease ends; for a dead one, about when it was dead-lettered.
    pub visible_at: DateTime<Utc>,
    pub receive_count: u32,
    pub max_receives: u32,
    pub visibility_timeout: Duration,
    pub leased_by: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A job leased to one worker until `job.visible_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub job: Job,
    pub lease_token: LeaseToken,
}

/// What `fail` did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Ready again at this time.
    Retrying { visible_at: DateTime<Utc> },
    /// Its receives are used up; it waits in the dead-letter state.
    DeadLettered,
    /// The lease was no longer ours (it expired and the job was claimed again,
    /// or it was completed): nothing changed.
    LeaseLost,
}

/// Which dead letters `redrive` returns to their queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    All,
    Jobs(Vec<JobId>),
}

/// One queue's depth, for `holdfast queue stats` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Claimable now (including jobs whose lease ran out).
    pub ready: i64,
    /// Leased and not yet expired.
    pub in_flight: i64,
    /// Ready but not visible before a later time (delayed or backing off).
    pub delayed: i64,
    pub dead: i64,
    /// Age of the oldest claimable job, from its enqueue time.
    pub oldest_ready_age_s: Option<i64>,
}

/// The queue operations. Both stores implement it; `Store::queue` hands it out.
///
/// Time is always passed in (`now`), never read from the clock inside, so
/// tests drive visibility timeouts and delays without sleeping.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueues a job in a transaction of its own and returns its id, or the
    /// id of the existing job with the same dedup key.
    async fn enqueue(&self, job: &NewJob) -> Result<JobId>;

    /// Leases up to `limit` visible jobs of `queue` to `worker_id`: at most one
    /// per group, each the oldest live job of its group, and none from a group
    /// that already has a job in flight. Jobs that already used up their
    /// receives are dead-lettered instead of returned. FIFO by enqueue order.
    async fn claim_batch(
        &self,
        queue: &str,
        worker_id: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedJob>> {
        let runs = self.claim_runs(queue, worker_id, limit, 1, now).await?;
        Ok(runs.into_iter().flatten().collect())
    }

    /// Leases runs of jobs: for up to `groups` groups, the group's head (as
    /// `claim_batch` chooses it) and up to `run_length - 1` of the jobs right
    /// behind it, for one worker to work through in order under one lease.
    /// A run stops before the first job that is not visible yet or that has
    /// used up its receives. Each run is in enqueue order; runs are in the
    /// order of their heads. Claiming a run is one transaction however long
    /// it is, which is what lets one group (one partner endpoint) move at the
    /// speed of its consumer rather than one claim per job.
    async fn claim_runs(
        &self,
        queue: &str,
        worker_id: &str,
        groups: u32,
        run_length: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Vec<ClaimedJob>>>;

    /// Gives back leased jobs that were never worked on (the rest of a run
    /// after a job that failed): ready again at once, their receive not
    /// counted, keeping their place behind the group's head. Returns how many
    /// it gave back; a stale lease leaves its job alone.
    async fn release(&self, jobs: &[(JobId, LeaseToken)], now: DateTime<Utc>) -> Result<u64>;

    /// Extends a lease to `now + extend_by` if `lease` still owns the job.
    async fn heartbeat(&self, job: &JobId, lease: &LeaseToken, extend_by: Duration, now: DateTime<Utc>)
    -> Result<bool>;

    /// Removes the job if `lease` still owns it; `false` if it does not.
    async fn complete(&self, job: &JobId, lease: &LeaseToken) -> Result<bool>;

    /// Removes every listed job its lease still owns, in one transaction, and
    /// returns how many it removed; a stale lease leaves its job alone, as
    /// `complete` does. One commit per batch instead of one per job is what
    /// lets a worker that claims in batches finish jobs as fast as it claims
    /// them.
    async fn complete_batch(&self, jobs: &[(JobId, LeaseToken)]) -> Result<u64>;

    /// Records `error`; the job is retried at `retry_at`, or dead-lettered if
    /// its receives are used up.
    async fn fail(&self, job: &JobId, lease: &LeaseToken, error: &str, retry_at: DateTime<Utc>) -> Result<FailOutcome>;

    /// Dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<Job>>;

    /// Makes dead letters ready again with their receive count reset; returns
    /// how many moved. A redriven job keeps its place in its group's order.
    async fn redrive(&self, queue: &str, which: &Redrive, now: DateTime<Utc>) -> Result<u64>;

    /// Depth of every queue that holds at least one job, by queue name.
    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>>;
}

/// The last error a job dead-lettered by lease expiry carries, when no worker
/// ever reported one.
pub(crate) const EXPIRED_WITHOUT_ERROR: &str = "receive limit reached: every lease expired without completion";

/// `now + extend_by`, saturating: an absurd extension is the caller's bug,
/// not a reason to fail the heartbeat.
pub(crate) fn lease_end(now: DateTime<Utc>, extend_by: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(extend_by)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn parse_payload(raw: &str) -> Result<serde_json::Value> {
    serde_json::from_str(raw).map_err(|_| corrupt("job payload", raw))
}

pub(crate) fn count_column(what: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(what, &value.to_string()))
}

pub(crate) fn timeout_column(value: i64) -> Result<Duration> {
    u64::try_from(value)
        .map(Duration::from_millis)
        .map_err(|_| corrupt("visibility timeout", &value.to_string()))
}

/// One round of a claim, as both backends take it.
pub(crate) struct ClaimRequest<'a> {
    pub queue: &'a str,
    pub worker_id: &'a str,
    pub groups: usize,
    pub run_length: usize,
    pub now: DateTime<Utc>,
}

/// Claims runs for up to `groups` groups, round after round: dead-lettering
/// a group's head frees the next job of that group, so a round that
/// dead-lettered something is followed by another. Each such round removes
/// at least one live job, so this ends. `round` returns its runs and how
/// many heads it dead-lettered.
pub(crate) async fn claim_in_rounds<'a, F, Fut>(
    queue: &'a str,
    worker_id: &'a str,
    groups: u32,
    run_length: u32,
    now: DateTime<Utc>,
    round: F,
) -> Result<Vec<Vec<ClaimedJob>>>
where
    F: Fn(ClaimRequest<'a>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Vec<ClaimedJob>>, usize)>>,
{
    let groups = usize::try_from(groups).unwrap_or(usize::MAX);
    let run_length = usize::try_from(run_length.max(1)).unwrap_or(usize::MAX);
    let mut runs = Vec::new();
    while runs.len() < groups {
        let request = ClaimRequest {
            queue,
            worker_id,
            groups: groups - runs.len(),
            run_length,
            now,
        };
        let (claimed, dead_lettered) = round(request).await?;
        runs.extend(claimed);
        if dead_lettered == 0 {
            break;
        }
    }
    Ok(runs)
}

/// A group's head as a claim round takes it.
#[derive(sqlx::FromRow)]
pub(crate) struct Head {
    pub group_key: String,
    pub job_id: String,
    pub seq: i64,
}

/// What the first step of a claim round took: the live heads in claim order,
/// those of them it already leased, and how many heads it dead-lettered.
pub(crate) struct ClaimedHeads {
    pub heads: Vec<Head>,
    pub leased: Vec<Job>,
    pub dead_lettered: usize,
}

/// The followers of one run's head, as a claim reads them: enough to decide
/// where the run must stop.
#[derive(sqlx::FromRow)]
pub(crate) struct Follower {
    pub id: String,
    pub visible: bool,
    pub receives_left: bool,
}

/// The followers a run may take: the longest prefix that is visible now and
/// has receives left. A job past a gap must wait for the jobs before it.
pub(crate) fn run_prefix(followers: Vec<Follower>) -> Vec<String> {
    followers
        .into_iter()
        .take_while(|f| f.visible && f.receives_left)
        .map(|f| f.id)
        .collect()
}

/// Splits leased jobs into runs: one per group, in enqueue order, with runs
/// ordered by their heads. `heads` lists the group keys in claim order; a run
/// keeps only the jobs up to the first one the lease missed, and the rest
/// (`strays`) are to be released.
pub(crate) fn into_runs(
    heads: &[String],
    expected: &std::collections::HashMap<String, Vec<String>>,
    leased: Vec<Job>,
    token: &LeaseToken,
) -> (Vec<Vec<ClaimedJob>>, Vec<JobId>) {
    let mut by_id: std::collections::HashMap<String, Job> = leased
        .into_iter()
        .map(|job| (job.id.as_str().to_owned(), job))
        .collect();
    let mut runs = Vec::new();
    let mut strays = Vec::new();
    for group in heads {
        let mut run = Vec::new();
        let mut broken = false;
        for id in expected.get(group).into_iter().flatten() {
            match by_id.remove(id) {
                Some(job) if !broken && job.state == JobState::InFlight => run.push(ClaimedJob {
                    job,
                    lease_token: token.clone(),
                }),
                Some(job) if job.state == JobState::InFlight => strays.push(job.id),
                _ => broken = true,
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
    }
    (runs, strays)
}

/// Ids as plain strings, for binding as an array.
pub(crate) fn id_strings(ids: &[JobId]) -> Vec<String> {
    ids.iter().map(|id| id.as_str().to_owned()).collect()
}

/// Leases as two parallel lists, ids and tokens, as the backends bind them.
pub(crate) fn lease_pairs(jobs: &[(JobId, LeaseToken)]) -> (Vec<&str>, Vec<&str>) {
    jobs.iter().map(|(id, lease)| (id.as_str(), lease.as_str())).unzip()
}

/// How a backend stores a job's times: PostgreSQL as `timestamptz`
/// (`DateTime<Utc>`), SQLite as Unix milliseconds (`i64`).
pub(crate) trait StoredTime: Sized {
    fn store(at: DateTime<Utc>) -> Self;
    fn load(self) -> Result<DateTime<Utc>>;
}

impl StoredTime for DateTime<Utc> {
    fn store(at: DateTime<Utc>) -> Self {
        at
    }

    fn load(self) -> Result<DateTime<Utc>> {
        Ok(self)
    }
}

impl StoredTime for i64 {
    fn store(at: DateTime<Utc>) -> Self {
        at.timestamp_millis()
    }

    fn load(self) -> Result<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self).ok_or_else(|| corrupt("job time", &self.to_string()))
    }
}

/// Groups (queue and key as two parallel lists, sorted and distinct) whose
/// jobs one write changed.
#[derive(Default)]
pub(crate) struct Groups {
    pub queues: Vec<String>,
    pub keys: Vec<String>,
}

impl Groups {
    pub fn from_rows(mut rows: Vec<(String, String)>) -> Self {
        rows.sort();
        rows.dedup();
        let (queues, keys) = rows.into_iter().unzip();
        Self { queues, keys }
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.queues.iter().zip(&self.keys)
    }
}

/// The columns `JobRow` reads.
macro_rules! job_columns {
    () => {
        "id, seq, queue, group_key, payload, dedup_key, state, visible_at, receive_count, max_receives, \
         visibility_timeout_ms, leased_by, last_error, created_at"
    };
}
pub(crate) use job_columns;

/// A `jobs` row; `T` is how the backend stores a time.
#[derive(sqlx::FromRow)]
pub(crate) struct JobRow<T> {
    id: String,
    seq: i64,
    queue: String,
    group_key: String,
    payload: String,
    dedup_key: Option<String>,
    state: String,
    visible_at: T,
    receive_count: i32,
    max_receives: i32,
    visibility_timeout_ms: i64,
    leased_by: Option<String>,
    last_error: Option<String>,
    created_at: T,
}

impl<T: StoredTime> TryFrom<JobRow<T>> for Job {
    type Error = crate::StoreError;

    fn try_from(row: JobRow<T>) -> Result<Self> {
        Ok(Job {
            payload: parse_payload(&row.payload)?,
            state: JobState::parse(&row.state)?,
            visible_at: row.visible_at.load()?,
            created_at: row.created_at.load()?,
            receive_count: count_column("receive count", i64::from(row.receive_count))?,
            max_receives: count_column("max receives", i64::from(row.max_receives))?,
            visibility_timeout: timeout_column(row.visibility_timeout_ms)?,
            id: JobId::from_trusted(row.id),
            seq: row.seq,
            queue: row.queue,
            group_key: row.group_key,
            dedup_key: row.dedup_key,
            leased_by: row.leased_by,
            last_error: row.last_error,
        })
    }
}

/// The backend's `enqueue_in_tx` and `JobQueue` for its store: the SQL both
/// backends share. Expanded in each backend's `queue.rs` as
/// `impl_job_queue!(Store, tx: T, time: T, id_in_list: "…")`: the
/// transaction type `enqueue_in_tx` takes, how a time is stored
/// ([`StoredTime`]), and the SQL that tests `id` against the id list bound
/// as `$3` (`id_list`'s value). The names the body leaves unqualified
/// resolve in that file:
/// - `begin_write(&pool)` and the pools `self.read` and `self.worker`;
/// - the steps of a claim round: `claim_heads(&mut tx, &request, &token)`
///   (the heads, `ClaimedHeads`), `followers_of(&mut tx, &request, &heads)`
///   (the jobs behind each head, by group) and `lease(&mut tx, &request,
///   &token, &ids)`, then `release_strays(&mut tx, &ids, &token, now)`;
/// - keeping `job_heads` in step, in this order within a write:
///   `lock_groups_of(&mut tx, &ids)` before changing those jobs,
///   `sync_heads_of(&mut tx, &ids)` after their visibility changed,
///   `refresh_heads(&mut tx, &Groups)` after jobs left or rejoined their
///   groups, `lock_dead_groups(&mut tx, queue, &ids)` before a redrive;
/// - `release_leased` and `delete_leased(&mut tx, &ids, &tokens, …)`: the
///   listed (id, lease token) pairs whose lease still holds, released or
///   deleted;
/// - `id_list(&[JobId])`: a list of ids as the backend binds it.
macro_rules! impl_job_queue {
    ($store:ty, tx: $tx:ty, time: $time:ty, id_in_list: $id_in_list:literal) => {
        /// Enqueues `job` inside the caller's transaction, so the job exists
        /// exactly when the business write that needs it commits. The job
        /// becomes its group's head when the group has none, or when it is
        /// older than the head (on PostgreSQL, an enqueue that commits late
        /// with an earlier sequence number; SQLite's one writer never does);
        /// on PostgreSQL the upsert locks the head row either way, which is
        /// what orders this enqueue against a completion that is about to
        /// remove the group's last job.
        pub(crate) async fn enqueue_in_tx(tx: &mut $tx, job: &$crate::NewJob) -> $crate::Result<$crate::JobId> {
            use $crate::queue::StoredTime as _;
            // A duplicate's holder may complete between our insert and our
            // read (not on SQLite, whose write lock is held); a second attempt
            // then inserts. Two rounds settle any such race.
            for _ in 0..2 {
                let inserted: Option<(String, i64)> = sqlx::query_as(
                    "INSERT INTO jobs (id, queue, group_key, payload, dedup_key, state, visible_at, max_receives, \
                       visibility_timeout_ms, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7, $8, $9) \
                     ON CONFLICT (queue, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING RETURNING id, seq",
                )
                .bind(job.id.as_str())
                .bind(&job.queue)
                .bind(&job.group_key)
                .bind(job.payload_text())
                .bind(&job.dedup_key)
                .bind(<$time>::store(job.first_visible_at()))
                .bind(job.max_receives_column())
                .bind(job.visibility_timeout_ms())
                .bind(<$time>::store(job.now))
                .fetch_optional(&mut **tx)
                .await?;
                if let Some((id, seq)) = inserted {
                    sqlx::query(
                        "INSERT INTO job_heads (queue, group_key, seq, job_id, visible_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (queue, group_key) DO UPDATE \
                           SET seq = excluded.seq, job_id = excluded.job_id, visible_at = excluded.visible_at \
                         WHERE excluded.seq < job_heads.seq",
                    )
                    .bind(&job.queue)
                    .bind(&job.group_key)
                    .bind(seq)
                    .bind(&id)
                    .bind(<$time>::store(job.first_visible_at()))
                    .execute(&mut **tx)
                    .await?;
                    return Ok($crate::JobId::from_trusted(id));
                }
                let existing: Option<String> =
                    sqlx::query_scalar("SELECT id FROM jobs WHERE queue = $1 AND dedup_key = $2")
                        .bind(&job.queue)
                        .bind(&job.dedup_key)
                        .fetch_optional(&mut **tx)
                        .await?;
                if let Some(id) = existing {
                    return Ok($crate::JobId::from_trusted(id));
                }
            }
            Err($crate::StoreError::Conflict(format!(
                "dedup key {:?} of queue {} is held by a job this transaction cannot see",
                job.dedup_key, job.queue
            )))
        }

        /// One round of a claim (`claim_in_rounds`): the heads, the jobs
        /// right behind them, their lease in one statement; returns the runs
        /// and how many heads the round dead-lettered.
        async fn claim_round(
            tx: &mut $tx,
            request: &$crate::queue::ClaimRequest<'_>,
        ) -> $crate::Result<(Vec<Vec<$crate::ClaimedJob>>, usize)> {
            let token = $crate::LeaseToken::generate();
            let $crate::queue::ClaimedHeads {
                heads,
                mut leased,
                dead_lettered,
            } = claim_heads(tx, request, &token).await?;
            let mut expected: std::collections::HashMap<String, Vec<String>> = heads
                .iter()
                .map(|head| (head.group_key.clone(), vec![head.job_id.clone()]))
                .collect();
            if request.run_length > 1 && !heads.is_empty() {
                for (group, followers) in followers_of(tx, request, &heads).await? {
                    if let Some(run) = expected.get_mut(&group) {
                        run.extend($crate::queue::run_prefix(followers));
                    }
                }
            }
            // Lease what the heads' claim did not.
            let taken: std::collections::HashSet<&str> = leased.iter().map(|job| job.id.as_str()).collect();
            let ids: Vec<&str> = expected
                .values()
                .flatten()
                .map(String::as_str)
                .filter(|id| !taken.contains(id))
                .collect();
            if !ids.is_empty() {
                let more = lease(tx, request, &token, &ids).await?;
                leased.extend(more);
            }
            let order: Vec<String> = heads.into_iter().map(|head| head.group_key).collect();
            let (runs, strays) = $crate::queue::into_runs(&order, &expected, leased, &token);
            if !strays.is_empty() {
                release_strays(tx, &strays, &token, request.now).await?;
            }
            // The leased heads are claimable again when their leases end.
            let head_ids: Vec<&str> = expected
                .values()
                .filter_map(|run| run.first())
                .map(String::as_str)
                .collect();
            sync_heads_of(tx, &head_ids).await?;
            Ok((runs, dead_lettered))
        }

        #[async_trait::async_trait]
        impl $crate::JobQueue for $store {
            async fn enqueue(&self, job: &$crate::NewJob) -> $crate::Result<$crate::JobId> {
                let mut tx = begin_write(&self.worker).await?;
                let id = enqueue_in_tx(&mut tx, job).await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn claim_runs(
                &self,
                queue: &str,
                worker_id: &str,
                groups: u32,
                run_length: u32,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<Vec<$crate::ClaimedJob>>> {
                $crate::queue::claim_in_rounds(queue, worker_id, groups, run_length, now, |request| async move {
                    let mut tx = begin_write(&self.worker).await?;
                    let round = claim_round(&mut tx, &request).await?;
                    tx.commit().await?;
                    Ok(round)
                })
                .await
            }

            async fn release(
                &self,
                jobs: &[($crate::JobId, $crate::LeaseToken)],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                if jobs.is_empty() {
                    return Ok(0);
                }
                let (ids, tokens) = $crate::queue::lease_pairs(jobs);
                let mut tx = begin_write(&self.worker).await?;
                lock_groups_of(&mut tx, &ids).await?;
                let released = release_leased(&mut tx, &ids, &tokens, now).await?;
                sync_heads_of(&mut tx, &ids).await?;
                tx.commit().await?;
                Ok(released)
            }

            async fn heartbeat(
                &self,
                job: &$crate::JobId,
                lease: &$crate::LeaseToken,
                extend_by: std::time::Duration,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                use $crate::queue::StoredTime as _;
                let mut tx = begin_write(&self.worker).await?;
                lock_groups_of(&mut tx, &[job.as_str()]).await?;
                let extended = sqlx::query(
                    "UPDATE jobs SET visible_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'in_flight'",
                )
                .bind(job.as_str())
                .bind(lease.as_str())
                .bind(<$time>::store($crate::queue::lease_end(now, extend_by)))
                .execute(&mut *tx)
                .await?;
                sync_heads_of(&mut tx, &[job.as_str()]).await?;
                tx.commit().await?;
                Ok(extended.rows_affected() == 1)
            }

            async fn complete(&self, job: &$crate::JobId, lease: &$crate::LeaseToken) -> $crate::Result<bool> {
                Ok(self.complete_batch(&[(job.clone(), lease.clone())]).await? == 1)
            }

            async fn complete_batch(&self, jobs: &[($crate::JobId, $crate::LeaseToken)]) -> $crate::Result<u64> {
                if jobs.is_empty() {
                    return Ok(0);
                }
                // One transaction, so one commit, whatever the batch size. A
                // pair listed twice still removes its job once, and counts once.
                let (ids, tokens) = $crate::queue::lease_pairs(jobs);
                let mut tx = begin_write(&self.worker).await?;
                lock_groups_of(&mut tx, &ids).await?;
                let deleted = delete_leased(&mut tx, &ids, &tokens).await?;
                let removed = deleted.len() as u64;
                refresh_heads(&mut tx, &$crate::queue::Groups::from_rows(deleted)).await?;
                tx.commit().await?;
                Ok(removed)
            }

            async fn fail(
                &self,
                job: &$crate::JobId,
                lease: &$crate::LeaseToken,
                error: &str,
                retry_at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::FailOutcome> {
                use $crate::queue::StoredTime as _;
                let mut tx = begin_write(&self.worker).await?;
                lock_groups_of(&mut tx, &[job.as_str()]).await?;
                // A dead job keeps its lease end as `visible_at`: roughly when it died.
                let row: Option<(String, $time, String, String)> = sqlx::query_as(
                    "UPDATE jobs SET \
                       state = CASE WHEN receive_count >= max_receives THEN 'dead' ELSE 'ready' END, \
                       visible_at = CASE WHEN receive_count >= max_receives THEN visible_at ELSE $4 END, \
                       last_error = $3, lease_token = NULL \
                     WHERE id = $1 AND lease_token = $2 AND state = 'in_flight' \
                     RETURNING state, visible_at, queue, group_key",
                )
                .bind(job.as_str())
                .bind(lease.as_str())
                .bind(error)
                .bind(<$time>::store(retry_at))
                .fetch_optional(&mut *tx)
                .await?;
                // Dead: the next job heads the group. Retrying: the head waits for its retry time.
                if let Some((_, _, queue, group)) = &row {
                    let groups = $crate::queue::Groups::from_rows(vec![(queue.clone(), group.clone())]);
                    refresh_heads(&mut tx, &groups).await?;
                }
                tx.commit().await?;
                let Some((state, visible_at, _, _)) = row else {
                    return Ok($crate::FailOutcome::LeaseLost);
                };
                Ok(match $crate::JobState::parse(&state)? {
                    $crate::JobState::Dead => $crate::FailOutcome::DeadLettered,
                    _ => $crate::FailOutcome::Retrying {
                        visible_at: visible_at.load()?,
                    },
                })
            }

            async fn dead_letters(&self, queue: &str, limit: i64) -> $crate::Result<Vec<$crate::Job>> {
                let rows: Vec<$crate::queue::JobRow<$time>> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::queue::job_columns!(),
                    " FROM jobs WHERE queue = $1 AND state = 'dead' ORDER BY seq LIMIT $2"
                ))
                .bind(queue)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map($crate::Job::try_from).collect()
            }

            async fn redrive(
                &self,
                queue: &str,
                which: &$crate::Redrive,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                use $crate::queue::StoredTime as _;
                let ids = match which {
                    $crate::Redrive::All => None,
                    $crate::Redrive::Jobs(ids) => Some(id_list(ids)?),
                };
                let mut tx = begin_write(&self.worker).await?;
                lock_dead_groups(&mut tx, queue, &ids).await?;
                let moved: Vec<(String, String)> = sqlx::query_as(concat!(
                    "UPDATE jobs SET state = 'ready', receive_count = 0, visible_at = $2, lease_token = NULL, ",
                    "  leased_by = NULL ",
                    "WHERE queue = $1 AND state = 'dead' AND ($3 IS NULL OR ",
                    $id_in_list,
                    ") RETURNING queue, group_key"
                ))
                .bind(queue)
                .bind(<$time>::store(now))
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                let count = moved.len() as u64;
                // A redriven job keeps its sequence number, so it may head its group again.
                refresh_heads(&mut tx, &$crate::queue::Groups::from_rows(moved)).await?;
                tx.commit().await?;
                Ok(count)
            }

            async fn stats(&self, now: chrono::DateTime<chrono::Utc>) -> $crate::Result<Vec<$crate::QueueStats>> {
                use $crate::queue::StoredTime as _;
                let rows: Vec<(String, i64, i64, i64, i64, Option<$time>)> = sqlx::query_as(
                    "SELECT queue, \
                       count(*) FILTER (WHERE state <> 'dead' AND visible_at <= $1), \
                       count(*) FILTER (WHERE state = 'in_flight' AND visible_at > $1), \
                       count(*) FILTER (WHERE state = 'ready' AND visible_at > $1), \
                       count(*) FILTER (WHERE state = 'dead'), \
                       min(created_at) FILTER (WHERE state <> 'dead' AND visible_at <= $1) \
                     FROM jobs GROUP BY queue ORDER BY queue",
                )
                .bind(<$time>::store(now))
                .fetch_all(&self.read)
                .await?;
                rows.into_iter()
                    .map(|(queue, ready, in_flight, delayed, dead, oldest)| {
                        let oldest = oldest.map(<$time>::load).transpose()?;
                        Ok($crate::QueueStats {
                            queue,
                            ready,
                            in_flight,
                            delayed,
                            dead,
                            oldest_ready_age_s: oldest.map(|at| (now - at).num_seconds().max(0)),
                        })
                    })
                    .collect()
            }
        }
    };
}
pub(crate) use impl_job_queue;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_junk() {
        let id = JobId::generate();
        assert_eq!(JobId::parse(id.as_str()), Some(id));
        assert_eq!(JobId::parse("job_"), None);
        assert_eq!(JobId::parse("ord_0000000000000000000000000000000a"), None);
    }

    #[test]
    fn states_round_trip() {
        for state in [JobState::Ready, JobState::InFlight, JobState::Dead] {
            assert_eq!(JobState::parse(state.as_str()).ok(), Some(state));
        }
        assert!(JobState::parse("done").is_err());
    }
}
