//! The job queue on SQLite. The SQL both backends share is `impl_job_queue!`
//! (`queue/sql.rs`); what stays here, and why:
//! - the claim: there is one writer at a time, so `CLAIM_HEADS` chooses and
//!   leases the heads in a single `UPDATE … RETURNING` inside a `BEGIN
//!   IMMEDIATE` transaction, and nothing can change in between;
//! - keeping `job_heads` in step: a trigger (migration 0007) moves a head
//!   row's `visible_at` with its job and nothing needs locking, so only
//!   `refresh_heads` does any work;
//! - statements over many jobs run once per job, and id lists are JSON
//!   arrays read with `json_each`.
//!
//! Every write here opens its transaction with `BEGIN IMMEDIATE`, even a
//! single statement: a deferred transaction that reads first may fail to
//! upgrade to a write while the checkout pool writes, and such a failure
//! does not wait on `busy_timeout`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, begin_write};
use crate::Result;
use crate::error::StoreError;
use crate::queue::*;

type Tx<'c> = Transaction<'c, Sqlite>;

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
    crate::queue::job_columns!()
);

/// The jobs right behind one claimed head, for runs longer than one.
const FOLLOWERS: &str = "\
    SELECT id, visible_at <= ?4 AS visible, receive_count < max_receives AS receives_left FROM jobs \
    WHERE queue = ?1 AND group_key = ?2 AND state <> 'dead' AND seq > ?3 \
    ORDER BY queue, group_key, seq LIMIT ?5";

/// Leases the followers chosen for runs.
const LEASE: &str = concat!(
    "UPDATE jobs SET state = 'in_flight', receive_count = receive_count + 1, ",
    "  visible_at = ?2 + visibility_timeout_ms, lease_token = ?3, leased_by = ?4 ",
    "WHERE id IN (SELECT value FROM json_each(?1)) AND state <> 'dead' AND visible_at <= ?2 ",
    "  AND receive_count < max_receives ",
    "RETURNING ",
    crate::queue::job_columns!()
);

/// One writer, so there are no head rows to lock.
async fn lock_groups_of(_: &mut Tx<'_>, _: &[&str]) -> Result<()> {
    Ok(())
}

/// One writer, so there are no head rows to lock.
async fn lock_dead_groups(_: &mut Tx<'_>, _: &str, _: &Option<String>) -> Result<()> {
    Ok(())
}

/// The trigger already moved the head rows with their jobs.
async fn sync_heads_of(_: &mut Tx<'_>, _: &[&str]) -> Result<()> {
    Ok(())
}

/// Points each group's head row at its oldest live job, or removes it when
/// the group has none left. There is one writer, so nothing changes in between.
async fn refresh_heads(tx: &mut Tx<'_>, groups: &Groups) -> Result<()> {
    for (queue, group) in groups.iter() {
        sqlx::query("DELETE FROM job_heads WHERE queue = ?1 AND group_key = ?2")
            .bind(queue)
            .bind(group)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO job_heads (queue, group_key, seq, job_id, visible_at) \
             SELECT queue, group_key, seq, id, visible_at FROM jobs WHERE queue = ?1 AND group_key = ?2 \
               AND state <> 'dead' \
             ORDER BY queue, group_key, seq LIMIT 1",
        )
        .bind(queue)
        .bind(group)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// One statement per job: SQLite runs them in process from its statement
/// cache, so the cost that matters is the transaction's single commit.
async fn release_leased(tx: &mut Tx<'_>, ids: &[&str], tokens: &[&str], now: DateTime<Utc>) -> Result<u64> {
    let mut released = 0;
    for (id, token) in ids.iter().zip(tokens) {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'ready', receive_count = max(receive_count - 1, 0), visible_at = ?3, \
               lease_token = NULL \
             WHERE id = ?1 AND lease_token = ?2 AND state = 'in_flight'",
        )
        .bind(id)
        .bind(token)
        .bind(now.timestamp_millis())
        .execute(&mut **tx)
        .await?;
        released += done.rows_affected();
    }
    Ok(released)
}

/// One statement per job, as `release_leased`.
async fn delete_leased(tx: &mut Tx<'_>, ids: &[&str], tokens: &[&str]) -> Result<Vec<(String, String)>> {
    let mut groups = Vec::new();
    for (id, token) in ids.iter().zip(tokens) {
        let deleted: Option<(String, String)> = sqlx::query_as(
            "DELETE FROM jobs WHERE id = ?1 AND lease_token = ?2 AND state = 'in_flight' RETURNING queue, group_key",
        )
        .bind(id)
        .bind(token)
        .fetch_optional(&mut **tx)
        .await?;
        groups.extend(deleted);
    }
    Ok(groups)
}

/// An id list as one JSON array, read back with `json_each`.
fn id_list<'a>(ids: impl IntoIterator<Item = &'a JobId>) -> Result<String> {
    let ids: Vec<&str> = ids.into_iter().map(JobId::as_str).collect();
    serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))
}

crate::queue::impl_job_queue!(
    SqliteStore,
    tx: Tx<'_>,
    time: i64,
    id_in_list: "id IN (SELECT value FROM json_each($3))"
);

/// A claim round's heads, leased or dead-lettered by `CLAIM_HEADS`.
async fn claim_heads(tx: &mut Tx<'_>, request: &ClaimRequest<'_>, token: &LeaseToken) -> Result<ClaimedHeads> {
    let rows: Vec<JobRow<i64>> = sqlx::query_as(CLAIM_HEADS)
        .bind(request.queue)
        .bind(request.now.timestamp_millis())
        .bind(i64::try_from(request.groups).unwrap_or(i64::MAX))
        .bind(token.as_str())
        .bind(request.worker_id)
        .bind(EXPIRED_WITHOUT_ERROR)
        .fetch_all(&mut **tx)
        .await?;
    // RETURNING gives no order; FIFO is by enqueue sequence.
    let mut jobs = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?;
    jobs.sort_by_key(|job| job.seq);
    let (leased, dead): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|job| job.state == JobState::InFlight);
    let dead_groups = dead.iter().map(|job| (job.queue.clone(), job.group_key.clone()));
    refresh_heads(tx, &Groups::from_rows(dead_groups.collect())).await?;
    let heads = leased.iter().map(|job| Head {
        group_key: job.group_key.clone(),
        job_id: job.id.as_str().to_owned(),
        seq: job.seq,
    });
    Ok(ClaimedHeads {
        heads: heads.collect(),
        leased,
        dead_lettered: dead.len(),
    })
}

/// The followers of each head, one statement a head (`FOLLOWERS`).
async fn followers_of(
    tx: &mut Tx<'_>,
    request: &ClaimRequest<'_>,
    heads: &[Head],
) -> Result<HashMap<String, Vec<Follower>>> {
    let mut by_group = HashMap::new();
    for head in heads {
        let followers: Vec<Follower> = sqlx::query_as(FOLLOWERS)
            .bind(request.queue)
            .bind(&head.group_key)
            .bind(head.seq)
            .bind(request.now.timestamp_millis())
            .bind(i64::try_from(request.run_length - 1).unwrap_or(i64::MAX))
            .fetch_all(&mut **tx)
            .await?;
        by_group.insert(head.group_key.clone(), followers);
    }
    Ok(by_group)
}

/// Leases the followers of a round's runs (`LEASE`).
async fn lease(tx: &mut Tx<'_>, request: &ClaimRequest<'_>, token: &LeaseToken, ids: &[&str]) -> Result<Vec<Job>> {
    let rows: Vec<JobRow<i64>> = sqlx::query_as(LEASE)
        .bind(serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(request.now.timestamp_millis())
        .bind(token.as_str())
        .bind(request.worker_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Gives back the jobs of one lease that its runs could not use.
async fn release_strays(tx: &mut Tx<'_>, ids: &[JobId], token: &LeaseToken, now: DateTime<Utc>) -> Result<u64> {
    let ids: Vec<&str> = ids.iter().map(JobId::as_str).collect();
    release_leased(tx, &ids, &vec![token.as_str(); ids.len()], now).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
