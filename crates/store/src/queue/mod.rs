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

mod sql;

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
    /// A fresh token, for a claim the caller names itself
    /// ([`JobQueue::claim_runs_as`]).
    pub fn generate() -> Self {
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
    ) -> Result<Vec<Vec<ClaimedJob>>> {
        self.claim_runs_as(queue, worker_id, groups, run_length, &LeaseToken::generate(), now)
            .await
    }

    /// As `claim_runs`, under the caller's `token`. A claim can commit and
    /// its answer still be lost (the connection dropped around the commit):
    /// its jobs would then sit leased to nobody until their visibility
    /// timeout, holding their groups back. A caller that names its claims
    /// gives such jobs back with [`JobQueue::release_claim`].
    async fn claim_runs_as(
        &self,
        queue: &str,
        worker_id: &str,
        groups: u32,
        run_length: u32,
        token: &LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<Vec<Vec<ClaimedJob>>>;

    /// Gives back every job of `queue` still leased under `token`, as
    /// `release` does (ready at once, receive uncounted, place kept), and
    /// returns how many. For a claim whose answer never arrived: a claim
    /// that did not commit leased nothing, and this finds nothing.
    async fn release_claim(&self, queue: &str, token: &LeaseToken, now: DateTime<Utc>) -> Result<u64>;

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

    /// Brings the job of `queue` that holds `dedup_key` forward: a dead
    /// letter is redriven (its receives reset), a job waiting for a later
    /// retry becomes visible at `now`. `false` when there is no such job, or
    /// it is in flight (its worker is on it), or it is visible already.
    async fn expedite(&self, queue: &str, dedup_key: &str, now: DateTime<Utc>) -> Result<bool>;

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
    /// Every round of one claim leases under the claim's token.
    pub token: &'a LeaseToken,
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
    token: &'a LeaseToken,
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
            token,
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

pub(crate) use sql::impl_job_queue;

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
