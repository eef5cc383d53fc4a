//! The job queue on PostgreSQL: many workers on many nodes claim disjoint jobs
//! with `FOR UPDATE SKIP LOCKED`, with no leader and no coordination outside
//! the database.

use std::time::Duration;

use super::{Pool, Tx};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::Result;
use crate::error::StoreError;
use crate::queue::*;

/// Namespace of the per-group advisory locks (the two-key form, which never
/// collides with single-key locks such as the migrator's). "JOBS" in ASCII.
const GROUP_LOCK_CLASS: i32 = 0x4A4F_4253;

macro_rules! job_columns {
    () => {
        "id, seq, queue, group_key, payload, dedup_key, state, visible_at, receive_count, max_receives, \
         visibility_timeout_ms, leased_by, last_error, created_at"
    };
}

/// Candidates for a claim: each the oldest live job of its group, visible
/// now, from a group with no unexpired lease, in enqueue order. The rows are
/// locked with SKIP LOCKED so concurrent claimers take disjoint candidates
/// instead of queueing behind each other. Row locks alone cannot keep a group
/// to one job in flight, though: two claimers with different snapshots may
/// each see a different job as the head of the same group (an enqueue that
/// commits late with an older sequence number). So each candidate's group is
/// also locked, with a non-blocking transaction-scoped advisory lock; a group
/// another claimer holds is left for the next round.
///
/// The in-flight probe ends in `OFFSET 0`, here and in `LEASE`, so that it
/// stays a per-candidate lookup in `jobs_in_flight_idx`. Without it the
/// planner may turn it into an anti-join that scans every in-flight job once
/// per candidate: it does so whenever the statistics were gathered while few
/// jobs were in flight (as after a burst of enqueues), and then a claim of
/// 100 jobs with 1,600 in flight took 20 ms instead of 1.
const CANDIDATES: &str = "\
    WITH candidates AS MATERIALIZED ( \
      SELECT j.id, j.seq, j.group_key FROM jobs j \
      WHERE j.queue = $1 AND j.state <> 'dead' AND j.visible_at <= $2 \
        AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.queue = j.queue AND o.group_key = j.group_key \
                        AND o.state <> 'dead' AND o.seq < j.seq) \
        AND NOT EXISTS (SELECT 1 FROM jobs f WHERE f.queue = j.queue AND f.group_key = j.group_key \
                        AND f.state = 'in_flight' AND f.visible_at > $2 OFFSET 0) \
      ORDER BY j.seq \
      LIMIT $3 \
      FOR UPDATE OF j SKIP LOCKED) \
    SELECT id FROM candidates \
    WHERE pg_try_advisory_xact_lock($4, hashtext($1 || chr(31) || group_key)) \
    ORDER BY seq";

/// Leases the locked candidates. It runs as a second statement so that its
/// snapshot is taken after the group locks are held: the group conditions are
/// checked again against every claim committed before, and no claim of these
/// groups can be in progress elsewhere. A candidate that already used up its
/// receives is dead-lettered instead, keeping its last error.
const LEASE: &str = concat!(
    "UPDATE jobs j SET ",
    "  state = CASE WHEN j.receive_count >= j.max_receives THEN 'dead' ELSE 'in_flight' END, ",
    "  receive_count = CASE WHEN j.receive_count >= j.max_receives THEN j.receive_count ",
    "    ELSE j.receive_count + 1 END, ",
    "  visible_at = CASE WHEN j.receive_count >= j.max_receives THEN $2 ",
    "    ELSE $2 + j.visibility_timeout_ms * interval '1 millisecond' END, ",
    "  lease_token = CASE WHEN j.receive_count >= j.max_receives THEN NULL ELSE $3 END, ",
    "  leased_by = CASE WHEN j.receive_count >= j.max_receives THEN j.leased_by ELSE $4 END, ",
    "  last_error = CASE WHEN j.receive_count >= j.max_receives THEN coalesce(j.last_error, $5) ",
    "    ELSE j.last_error END ",
    "WHERE j.id = ANY($1) AND j.state <> 'dead' AND j.visible_at <= $2 ",
    "  AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.queue = j.queue AND o.group_key = j.group_key ",
    "                  AND o.state <> 'dead' AND o.seq < j.seq) ",
    "  AND NOT EXISTS (SELECT 1 FROM jobs f WHERE f.queue = j.queue AND f.group_key = j.group_key ",
    "                  AND f.state = 'in_flight' AND f.visible_at > $2 OFFSET 0) ",
    "RETURNING ",
    job_columns!()
);

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    seq: i64,
    queue: String,
    group_key: String,
    payload: String,
    dedup_key: Option<String>,
    state: String,
    visible_at: DateTime<Utc>,
    receive_count: i32,
    max_receives: i32,
    visibility_timeout_ms: i64,
    leased_by: Option<String>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self> {
        Ok(Job {
            payload: parse_payload(&row.payload)?,
            state: JobState::parse(&row.state)?,
            receive_count: count_column("receive count", i64::from(row.receive_count))?,
            max_receives: count_column("max receives", i64::from(row.max_receives))?,
            visibility_timeout: timeout_column(row.visibility_timeout_ms)?,
            id: JobId::from_trusted(row.id),
            seq: row.seq,
            queue: row.queue,
            group_key: row.group_key,
            dedup_key: row.dedup_key,
            visible_at: row.visible_at,
            leased_by: row.leased_by,
            last_error: row.last_error,
            created_at: row.created_at,
        })
    }
}

/// Enqueues `job` inside the caller's transaction, so the job exists exactly
/// when the business write that needs it commits.
pub(crate) async fn enqueue_in_tx(tx: &mut Tx, job: &NewJob) -> Result<JobId> {
    // A duplicate's holder may complete between our insert and our read; a
    // second attempt then inserts. Two rounds settle any such race.
    for _ in 0..2 {
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO jobs (id, queue, group_key, payload, dedup_key, state, visible_at, max_receives, \
               visibility_timeout_ms, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7, $8, $9) \
             ON CONFLICT (queue, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING RETURNING id",
        )
        .bind(job.id.as_str())
        .bind(&job.queue)
        .bind(&job.group_key)
        .bind(job.payload_text())
        .bind(&job.dedup_key)
        .bind(job.first_visible_at())
        .bind(job.max_receives_column())
        .bind(job.visibility_timeout_ms())
        .bind(job.now)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = inserted {
            return Ok(JobId::from_trusted(id));
        }
        let existing: Option<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE queue = $1 AND dedup_key = $2")
            .bind(&job.queue)
            .bind(&job.dedup_key)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(id) = existing {
            return Ok(JobId::from_trusted(id));
        }
    }
    Err(StoreError::Conflict(format!(
        "dedup key {:?} of queue {} is held by a job this transaction cannot see",
        job.dedup_key, job.queue
    )))
}

struct Round {
    claimed: Vec<ClaimedJob>,
    dead_lettered: usize,
}

async fn claim_round(pool: &Pool, queue: &str, worker_id: &str, limit: usize, now: DateTime<Utc>) -> Result<Round> {
    let token = LeaseToken::generate();
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar(CANDIDATES)
        .bind(queue)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(GROUP_LOCK_CLASS)
        .fetch_all(&mut *tx)
        .await?;
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Round {
            claimed: Vec::new(),
            dead_lettered: 0,
        });
    }
    let rows: Vec<JobRow> = sqlx::query_as(LEASE)
        .bind(&ids)
        .bind(now)
        .bind(token.as_str())
        .bind(worker_id)
        .bind(EXPIRED_WITHOUT_ERROR)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut jobs = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?;
    jobs.sort_by_key(|job| job.seq);
    let before = jobs.len();
    let claimed: Vec<ClaimedJob> = jobs
        .into_iter()
        .filter(|job| job.state == JobState::InFlight)
        .map(|job| ClaimedJob {
            job,
            lease_token: token.clone(),
        })
        .collect();
    Ok(Round {
        dead_lettered: before - claimed.len(),
        claimed,
    })
}

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let mut tx = self.worker.begin().await?;
        let id = enqueue_in_tx(&mut tx, job).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn claim_batch(
        &self,
        queue: &str,
        worker_id: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedJob>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut claimed = Vec::new();
        // Dead-lettering a group's head frees the next job of that group, so
        // a round that dead-lettered something is followed by another; each
        // such round removes at least one live job, so this ends.
        while claimed.len() < limit {
            let round = claim_round(&self.worker, queue, worker_id, limit - claimed.len(), now).await?;
            claimed.extend(round.claimed);
            if round.dead_lettered == 0 {
                break;
            }
        }
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        job: &JobId,
        lease: &LeaseToken,
        extend_by: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let extended =
            sqlx::query("UPDATE jobs SET visible_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'in_flight'")
                .bind(job.as_str())
                .bind(lease.as_str())
                .bind(lease_end(now, extend_by))
                .execute(&self.worker)
                .await?;
        Ok(extended.rows_affected() == 1)
    }

    async fn complete(&self, job: &JobId, lease: &LeaseToken) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'in_flight'")
            .bind(job.as_str())
            .bind(lease.as_str())
            .execute(&self.worker)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn complete_batch(&self, jobs: &[(JobId, LeaseToken)]) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        // The pairs travel as two parallel arrays: one statement and one
        // round trip whatever the batch size. A pair listed twice still
        // removes its job once, and counts once.
        let (ids, tokens): (Vec<&str>, Vec<&str>) =
            jobs.iter().map(|(id, lease)| (id.as_str(), lease.as_str())).unzip();
        let deleted = sqlx::query(
            "DELETE FROM jobs WHERE state = 'in_flight' \
               AND (id, lease_token) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        )
        .bind(ids)
        .bind(tokens)
        .execute(&self.worker)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn fail(&self, job: &JobId, lease: &LeaseToken, error: &str, retry_at: DateTime<Utc>) -> Result<FailOutcome> {
        // A dead job keeps its lease end as `visible_at`: roughly when it died.
        let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE jobs SET \
               state = CASE WHEN receive_count >= max_receives THEN 'dead' ELSE 'ready' END, \
               visible_at = CASE WHEN receive_count >= max_receives THEN visible_at ELSE $4 END, \
               last_error = $3, lease_token = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'in_flight' \
             RETURNING state, visible_at",
        )
        .bind(job.as_str())
        .bind(lease.as_str())
        .bind(error)
        .bind(retry_at)
        .fetch_optional(&self.worker)
        .await?;
        fail_outcome(row)
    }

    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE queue = $1 AND state = 'dead' ORDER BY seq LIMIT $2"
        ))
        .bind(queue)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn redrive(&self, queue: &str, which: &Redrive, now: DateTime<Utc>) -> Result<u64> {
        let ids = match which {
            Redrive::All => None,
            Redrive::Jobs(ids) => Some(id_strings(ids)),
        };
        let moved = sqlx::query(
            "UPDATE jobs SET state = 'ready', receive_count = 0, visible_at = $2, lease_token = NULL, leased_by = NULL \
             WHERE queue = $1 AND state = 'dead' AND ($3::text[] IS NULL OR id = ANY($3))",
        )
        .bind(queue)
        .bind(now)
        .bind(ids)
        .execute(&self.worker)
        .await?;
        Ok(moved.rows_affected())
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>> {
        let rows: Vec<(String, i64, i64, i64, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT queue, \
               count(*) FILTER (WHERE state <> 'dead' AND visible_at <= $1), \
               count(*) FILTER (WHERE state = 'in_flight' AND visible_at > $1), \
               count(*) FILTER (WHERE state = 'ready' AND visible_at > $1), \
               count(*) FILTER (WHERE state = 'dead'), \
               min(created_at) FILTER (WHERE state <> 'dead' AND visible_at <= $1) \
             FROM jobs GROUP BY queue ORDER BY queue",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(queue, ready, in_flight, delayed, dead, oldest)| QueueStats {
                queue,
                ready,
                in_flight,
                delayed,
                dead,
                oldest_ready_age_s: oldest.map(|at| (now - at).num_seconds().max(0)),
            })
            .collect())
    }
}

fn fail_outcome(row: Option<(String, DateTime<Utc>)>) -> Result<FailOutcome> {
    let Some((state, visible_at)) = row else {
        return Ok(FailOutcome::LeaseLost);
    };
    Ok(match JobState::parse(&state)? {
        JobState::Dead => FailOutcome::DeadLettered,
        _ => FailOutcome::Retrying { visible_at },
    })
}
