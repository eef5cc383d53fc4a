//! The job queue on SQLite. There is one writer at a time, so a claim is a
//! single `UPDATE … RETURNING` inside a `BEGIN IMMEDIATE` transaction: nothing
//! can change between choosing the jobs and leasing them.
//!
//! Every write here opens its transaction with `BEGIN IMMEDIATE`, even a
//! single statement: a deferred transaction that reads first may fail to
//! upgrade to a write while the checkout pool writes, and such a failure
//! does not wait on `busy_timeout`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{SqliteStore, begin_write};
use crate::Result;
use crate::error::{StoreError, corrupt};
use crate::queue::*;

macro_rules! job_columns {
    () => {
        "id, seq, queue, group_key, payload, dedup_key, state, visible_at, receive_count, max_receives, \
         visibility_timeout_ms, leased_by, last_error, created_at"
    };
}

/// Leases, in one statement, the heads of `?1`'s groups (`job_heads`, one
/// row per group with a live job) that are visible now and whose group has no
/// other unexpired lease, oldest-claimable first. A claim reads only heads
/// whose row says they are claimable now (`job_heads_ready_idx`), so neither
/// a long backlog in one group nor the heads leased to other workers cost it
/// anything; the job itself is checked again. A candidate that already used
/// up its receives is dead-lettered instead, keeping its last error. The
/// lease moves the head row's `visible_at` with it (a trigger, migration 0007).
const CLAIM_HEADS: &str = concat!(
    "UPDATE jobs SET ",
    "  state = CASE WHEN receive_count >= max_receives THEN 'dead' ELSE 'in_flight' END, ",
    "  receive_count = CASE WHEN receive_count >= max_receives THEN receive_count ELSE receive_count + 1 END, ",
    "  visible_at = CASE WHEN receive_count >= max_receives THEN ?2 ELSE ?2 + visibility_timeout_ms END, ",
    "  lease_token = CASE WHEN receive_count >= max_receives THEN NULL ELSE ?4 END, ",
    "  leased_by = CASE WHEN receive_count >= max_receives THEN leased_by ELSE ?5 END, ",
    "  last_error = CASE WHEN receive_count >= max_receives THEN coalesce(last_error, ?6) ELSE last_error END ",
    "WHERE id IN (",
    "  SELECT h.job_id FROM job_heads h JOIN jobs j ON j.id = h.job_id ",
    "  WHERE h.queue = ?1 AND h.visible_at <= ?2 AND j.state <> 'dead' AND j.visible_at <= ?2 ",
    "    AND NOT EXISTS (SELECT 1 FROM jobs f WHERE f.queue = h.queue AND f.group_key = h.group_key ",
    "                    AND f.state = 'in_flight' AND f.visible_at > ?2 AND f.id <> h.job_id) ",
    "  ORDER BY h.visible_at, h.seq LIMIT ?3) ",
    "RETURNING ",
    job_columns!()
);

/// The jobs right behind one claimed head, for runs longer than one.
const FOLLOWERS: &str = "\
    SELECT id, visible_at <= ?4, receive_count < max_receives FROM jobs \
    WHERE queue = ?1 AND group_key = ?2 AND state <> 'dead' AND seq > ?3 \
    ORDER BY queue, group_key, seq LIMIT ?5";

/// Leases the followers chosen for runs.
const LEASE: &str = concat!(
    "UPDATE jobs SET state = 'in_flight', receive_count = receive_count + 1, ",
    "  visible_at = ?2 + visibility_timeout_ms, lease_token = ?3, leased_by = ?4 ",
    "WHERE id IN (SELECT value FROM json_each(?1)) AND state <> 'dead' AND visible_at <= ?2 ",
    "  AND receive_count < max_receives ",
    "RETURNING ",
    job_columns!()
);

/// Points a group's head row at its oldest live job, or removes it when the
/// group has none left. There is one writer, so nothing changes in between.
async fn refresh_head(tx: &mut Transaction<'_, Sqlite>, queue: &str, group: &str) -> Result<()> {
    sqlx::query("DELETE FROM job_heads WHERE queue = ?1 AND group_key = ?2")
        .bind(queue)
        .bind(group)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO job_heads (queue, group_key, seq, job_id, visible_at) \
         SELECT queue, group_key, seq, id, visible_at FROM jobs WHERE queue = ?1 AND group_key = ?2 AND state <> 'dead' \
         ORDER BY queue, group_key, seq LIMIT 1",
    )
    .bind(queue)
    .bind(group)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `refresh_head` for every distinct group of `rows`.
async fn refresh_heads(tx: &mut Transaction<'_, Sqlite>, mut rows: Vec<(String, String)>) -> Result<()> {
    rows.sort();
    rows.dedup();
    for (queue, group) in rows {
        refresh_head(tx, &queue, &group).await?;
    }
    Ok(())
}

fn json_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Result<String> {
    serde_json::to_string(&ids.collect::<Vec<_>>()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    seq: i64,
    queue: String,
    group_key: String,
    payload: String,
    dedup_key: Option<String>,
    state: String,
    visible_at: i64,
    receive_count: i64,
    max_receives: i64,
    visibility_timeout_ms: i64,
    leased_by: Option<String>,
    last_error: Option<String>,
    created_at: i64,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self> {
        Ok(Job {
            payload: parse_payload(&row.payload)?,
            state: JobState::parse(&row.state)?,
            visible_at: from_millis(row.visible_at)?,
            created_at: from_millis(row.created_at)?,
            receive_count: count_column("receive count", row.receive_count)?,
            max_receives: count_column("max receives", row.max_receives)?,
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

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("job time", &ms.to_string()))
}

/// Enqueues `job` inside the caller's write transaction, so the job exists
/// exactly when the business write that needs it commits.
pub(crate) async fn enqueue_in_tx(tx: &mut Transaction<'_, Sqlite>, job: &NewJob) -> Result<JobId> {
    let inserted: Option<(String, i64)> = sqlx::query_as(
        "INSERT INTO jobs (id, queue, group_key, payload, dedup_key, state, visible_at, max_receives, \
           visibility_timeout_ms, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'ready', ?6, ?7, ?8, ?9) \
         ON CONFLICT (queue, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING RETURNING id, seq",
    )
    .bind(job.id.as_str())
    .bind(&job.queue)
    .bind(&job.group_key)
    .bind(job.payload_text())
    .bind(&job.dedup_key)
    .bind(millis(job.first_visible_at()))
    .bind(job.max_receives_column())
    .bind(job.visibility_timeout_ms())
    .bind(millis(job.now))
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((id, seq)) = inserted {
        // The first live job of its group heads it; one writer, so no race.
        sqlx::query(
            "INSERT INTO job_heads (queue, group_key, seq, job_id, visible_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (queue, group_key) DO NOTHING",
        )
        .bind(&job.queue)
        .bind(&job.group_key)
        .bind(seq)
        .bind(&id)
        .bind(millis(job.first_visible_at()))
        .execute(&mut **tx)
        .await?;
        return Ok(JobId::from_trusted(id));
    }
    // The write lock is held, so the job that conflicted is still there.
    let existing: String = sqlx::query_scalar("SELECT id FROM jobs WHERE queue = ?1 AND dedup_key = ?2")
        .bind(&job.queue)
        .bind(&job.dedup_key)
        .fetch_one(&mut **tx)
        .await?;
    Ok(JobId::from_trusted(existing))
}

async fn claim_round(pool: &SqlitePool, request: &ClaimRequest<'_>) -> Result<(Vec<Vec<ClaimedJob>>, usize)> {
    let token = LeaseToken::generate();
    let now = millis(request.now);
    let mut tx = begin_write(pool).await?;
    let rows: Vec<JobRow> = sqlx::query_as(CLAIM_HEADS)
        .bind(request.queue)
        .bind(now)
        .bind(i64::try_from(request.groups).unwrap_or(i64::MAX))
        .bind(token.as_str())
        .bind(request.worker_id)
        .bind(EXPIRED_WITHOUT_ERROR)
        .fetch_all(&mut *tx)
        .await?;
    // RETURNING gives no order; FIFO is by enqueue sequence.
    let mut heads = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?;
    heads.sort_by_key(|job| job.seq);
    let (live, dead): (Vec<Job>, Vec<Job>) = heads.into_iter().partition(|job| job.state == JobState::InFlight);
    let dead_lettered = dead.len();
    refresh_heads(
        &mut tx,
        dead.into_iter().map(|job| (job.queue, job.group_key)).collect(),
    )
    .await?;
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let mut followers = Vec::new();
    for head in &live {
        let mut run = vec![head.id.as_str().to_owned()];
        if request.run_length > 1 {
            let rows: Vec<(String, bool, bool)> = sqlx::query_as(FOLLOWERS)
                .bind(request.queue)
                .bind(&head.group_key)
                .bind(head.seq)
                .bind(now)
                .bind(i64::try_from(request.run_length - 1).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await?;
            let prefix = run_prefix(
                rows.into_iter()
                    .map(|(id, visible, receives_left)| Follower {
                        id,
                        visible,
                        receives_left,
                    })
                    .collect(),
            );
            followers.extend(prefix.iter().cloned());
            run.extend(prefix);
        }
        expected.insert(head.group_key.clone(), run);
    }
    let mut leased = live.clone();
    if !followers.is_empty() {
        let rows: Vec<JobRow> = sqlx::query_as(LEASE)
            .bind(json_ids(followers.iter().map(String::as_str))?)
            .bind(now)
            .bind(token.as_str())
            .bind(request.worker_id)
            .fetch_all(&mut *tx)
            .await?;
        leased.extend(rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?);
    }
    let groups: Vec<String> = live.into_iter().map(|job| job.group_key).collect();
    let (runs, strays) = into_runs(&groups, &expected, leased, &token);
    if !strays.is_empty() {
        let pairs: Vec<(JobId, LeaseToken)> = strays.into_iter().map(|id| (id, token.clone())).collect();
        release_in_tx(&mut tx, &pairs, request.now).await?;
    }
    tx.commit().await?;
    Ok((runs, dead_lettered))
}

async fn release_in_tx(
    tx: &mut Transaction<'_, Sqlite>,
    jobs: &[(JobId, LeaseToken)],
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut released = 0;
    for (job, lease) in jobs {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'ready', receive_count = max(receive_count - 1, 0), visible_at = ?3, \
               lease_token = NULL \
             WHERE id = ?1 AND lease_token = ?2 AND state = 'in_flight'",
        )
        .bind(job.as_str())
        .bind(lease.as_str())
        .bind(millis(now))
        .execute(&mut **tx)
        .await?;
        released += done.rows_affected();
    }
    Ok(released)
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
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
        now: DateTime<Utc>,
    ) -> Result<Vec<Vec<ClaimedJob>>> {
        claim_in_rounds(queue, worker_id, groups, run_length, now, |request| async move {
            claim_round(&self.worker, &request).await
        })
        .await
    }

    async fn release(&self, jobs: &[(JobId, LeaseToken)], now: DateTime<Utc>) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut tx = begin_write(&self.worker).await?;
        let released = release_in_tx(&mut tx, jobs, now).await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn heartbeat(
        &self,
        job: &JobId,
        lease: &LeaseToken,
        extend_by: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = begin_write(&self.worker).await?;
        let extended =
            sqlx::query("UPDATE jobs SET visible_at = ?3 WHERE id = ?1 AND lease_token = ?2 AND state = 'in_flight'")
                .bind(job.as_str())
                .bind(lease.as_str())
                .bind(millis(now).saturating_add(duration_ms(extend_by)))
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(extended.rows_affected() == 1)
    }

    async fn complete(&self, job: &JobId, lease: &LeaseToken) -> Result<bool> {
        Ok(self.complete_batch(&[(job.clone(), lease.clone())]).await? == 1)
    }

    async fn complete_batch(&self, jobs: &[(JobId, LeaseToken)]) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        // One write transaction, one statement per job: SQLite runs them in
        // process from its statement cache, so the cost that matters is the
        // single commit.
        let mut tx = begin_write(&self.worker).await?;
        let mut groups = Vec::new();
        for (job, lease) in jobs {
            let deleted: Option<(String, String)> = sqlx::query_as(
                "DELETE FROM jobs WHERE id = ?1 AND lease_token = ?2 AND state = 'in_flight' \
                 RETURNING queue, group_key",
            )
            .bind(job.as_str())
            .bind(lease.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            groups.extend(deleted);
        }
        let removed = groups.len() as u64;
        refresh_heads(&mut tx, groups).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn fail(&self, job: &JobId, lease: &LeaseToken, error: &str, retry_at: DateTime<Utc>) -> Result<FailOutcome> {
        let mut tx = begin_write(&self.worker).await?;
        // A dead job keeps its lease end as `visible_at`: roughly when it died.
        let row: Option<(String, i64, String, String)> = sqlx::query_as(
            "UPDATE jobs SET \
               state = CASE WHEN receive_count >= max_receives THEN 'dead' ELSE 'ready' END, \
               visible_at = CASE WHEN receive_count >= max_receives THEN visible_at ELSE ?4 END, \
               last_error = ?3, lease_token = NULL \
             WHERE id = ?1 AND lease_token = ?2 AND state = 'in_flight' \
             RETURNING state, visible_at, queue, group_key",
        )
        .bind(job.as_str())
        .bind(lease.as_str())
        .bind(error)
        .bind(millis(retry_at))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((state, _, queue, group)) = &row
            && state == JobState::Dead.as_str()
        {
            refresh_head(&mut tx, queue, group).await?;
        }
        tx.commit().await?;
        let Some((state, visible_at, _, _)) = row else {
            return Ok(FailOutcome::LeaseLost);
        };
        Ok(match JobState::parse(&state)? {
            JobState::Dead => FailOutcome::DeadLettered,
            _ => FailOutcome::Retrying {
                visible_at: from_millis(visible_at)?,
            },
        })
    }

    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE queue = ?1 AND state = 'dead' ORDER BY seq LIMIT ?2"
        ))
        .bind(queue)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn redrive(&self, queue: &str, which: &Redrive, now: DateTime<Utc>) -> Result<u64> {
        // The selection travels as one JSON array, read back with json_each.
        let ids = match which {
            Redrive::All => None,
            Redrive::Jobs(ids) => {
                Some(serde_json::to_string(&id_strings(ids)).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
        };
        let mut tx = begin_write(&self.worker).await?;
        let moved: Vec<(String, String)> = sqlx::query_as(
            "UPDATE jobs SET state = 'ready', receive_count = 0, visible_at = ?2, lease_token = NULL, leased_by = NULL \
             WHERE queue = ?1 AND state = 'dead' AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3))) \
             RETURNING queue, group_key",
        )
        .bind(queue)
        .bind(millis(now))
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let count = moved.len() as u64;
        // A redriven job keeps its sequence number, so it may head its group again.
        refresh_heads(&mut tx, moved).await?;
        tx.commit().await?;
        Ok(count)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>> {
        let rows: Vec<(String, i64, i64, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT queue, \
               count(*) FILTER (WHERE state <> 'dead' AND visible_at <= ?1), \
               count(*) FILTER (WHERE state = 'in_flight' AND visible_at > ?1), \
               count(*) FILTER (WHERE state = 'ready' AND visible_at > ?1), \
               count(*) FILTER (WHERE state = 'dead'), \
               min(created_at) FILTER (WHERE state <> 'dead' AND visible_at <= ?1) \
             FROM jobs GROUP BY queue ORDER BY queue",
        )
        .bind(millis(now))
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
                oldest_ready_age_s: oldest.map(|ms| (millis(now).saturating_sub(ms) / 1000).max(0)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::{ConnectOptions, PoolOptions, Pools};

    /// A job enqueued in a transaction that rolls back never existed: the
    /// guarantee business writes rely on.
    #[tokio::test]
    async fn enqueue_in_a_rolled_back_transaction_leaves_no_job() {
        let dir = std::env::temp_dir().join(format!("holdfast-queue-unit-{}", uuid::Uuid::now_v7().simple()));
        let pool = PoolOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(10),
        };
        let options = ConnectOptions {
            url: format!("sqlite://{}/queue.db", dir.display()),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(5),
            pgbouncer: crate::PgBouncer::Off,
            pools: Pools {
                read: pool,
                write: pool,
                worker: pool,
            },
        };
        let store = SqliteStore::connect(&options).await.expect("connect");
        crate::Store::migrate(&store).await.expect("migrate");
        let job = NewJob::new("payments", "creator-1", serde_json::json!({"n": 1}), Utc::now());

        let mut tx = begin_write(&store.write).await.expect("begin");
        enqueue_in_tx(&mut tx, &job).await.expect("enqueue");
        tx.rollback().await.expect("rollback");
        assert!(store.stats(Utc::now()).await.expect("stats").is_empty());

        let mut tx = begin_write(&store.write).await.expect("begin");
        let id = enqueue_in_tx(&mut tx, &job).await.expect("enqueue");
        tx.commit().await.expect("commit");
        assert_eq!(id, job.id);
        assert_eq!(store.stats(Utc::now()).await.expect("stats")[0].ready, 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
