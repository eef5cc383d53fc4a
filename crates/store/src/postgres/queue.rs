//! The job queue on PostgreSQL: many workers on many nodes claim disjoint jobs
//! with `FOR UPDATE SKIP LOCKED`, with no leader and no coordination outside
//! the database. The SQL both backends share is `impl_job_queue!` (`queue/sql.rs`);
//! what stays here, and why:
//! - the claim (`CANDIDATES`, `FOLLOWERS`, `LEASE`): head rows locked with
//!   SKIP LOCKED, and the followers of all heads read in one statement;
//! - keeping `job_heads` in step: writers run concurrently, so each write
//!   locks its groups' head rows first and updates them explicitly;
//! - statements over many jobs (release, completion, the relay's
//!   `enqueue_many_in_tx`, redrive's selection) bind arrays and run once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{PgStore, Tx, begin_write};
use crate::Result;
use crate::queue::*;

/// Candidates for a claim: the heads of `$1`'s groups (`job_heads`, one row
/// per group with a live job), visible now, oldest-claimable first, from
/// groups with no other unexpired lease. A claim reads only the heads whose
/// row says they are claimable now (`job_heads_ready_idx`): neither a group's
/// backlog nor the heads leased to other workers cost it anything, and the
/// job itself is checked again, so a stale row costs a look, never a wrong
/// claim. The head rows are locked with SKIP LOCKED, so concurrent claimers
/// take disjoint groups instead of queueing behind each other, and a group
/// whose head another transaction is changing (an enqueue, a completion) is
/// left for the next round.
///
/// The in-flight probe ends in `OFFSET 0` so that it stays a per-candidate
/// lookup in `jobs_in_flight_idx` rather than an anti-join that the planner
/// may choose when statistics were gathered while few jobs were in flight.
const CANDIDATES: &str = "\
    SELECT h.group_key, h.job_id, h.seq, j.receive_count >= j.max_receives AS exhausted \
    FROM job_heads h JOIN jobs j ON j.id = h.job_id \
    WHERE h.queue = $1 AND h.visible_at <= $2 AND j.state <> 'dead' AND j.visible_at <= $2 \
      AND NOT EXISTS (SELECT 1 FROM jobs f WHERE f.queue = h.queue AND f.group_key = h.group_key \
                      AND f.state = 'in_flight' AND f.visible_at > $2 AND f.id <> h.job_id OFFSET 0) \
    ORDER BY h.visible_at, h.seq \
    LIMIT $3 \
    FOR UPDATE OF h SKIP LOCKED";

/// The jobs right behind each claimed head, for runs longer than one.
const FOLLOWERS: &str = "\
    SELECT g.group_key, f.id, f.visible_at <= $4 AS visible, f.receive_count < f.max_receives AS receives_left \
    FROM unnest($2::text[], $3::bigint[]) AS g(group_key, head_seq) \
    CROSS JOIN LATERAL ( \
      SELECT id, seq, visible_at, receive_count, max_receives FROM jobs \
      WHERE queue = $1 AND group_key = g.group_key AND state <> 'dead' AND seq > g.head_seq \
      ORDER BY queue, group_key, seq LIMIT $5) f \
    ORDER BY g.group_key, f.seq";

/// Leases the chosen jobs. The group rows are locked, so no other claim,
/// enqueue or completion can change these groups meanwhile; the conditions
/// are checked again only against the jobs' own owners (a lease that ran out
/// may still be completed or failed by its late worker).
const LEASE: &str = concat!(
    "UPDATE jobs SET state = 'in_flight', receive_count = receive_count + 1, ",
    "  visible_at = $2 + visibility_timeout_ms * interval '1 millisecond', lease_token = $3, leased_by = $4 ",
    "WHERE id = ANY($1) AND state <> 'dead' AND visible_at <= $2 AND receive_count < max_receives ",
    "RETURNING ",
    crate::queue::job_columns!()
);

/// Sets the head rows of the listed jobs' groups, where the job heads its
/// group, to the job's `visible_at`: after a lease, a release, a heartbeat.
/// The caller holds the rows' locks (head row before job, as claims take them).
const SYNC_HEADS_OF_JOBS: &str = "\
    UPDATE job_heads h SET visible_at = j.visible_at FROM jobs j \
    WHERE j.id = ANY($1) AND h.queue = j.queue AND h.group_key = j.group_key AND h.job_id = j.id \
      AND h.visible_at <> j.visible_at";

/// Points each listed group's head row at its oldest live job, or removes
/// the row when the group has none left. The lookup is served by
/// `jobs_group_idx`; no index that walks a whole queue in enqueue order
/// exists any more (migration 0007 dropped `jobs_live_idx`, which the planner
/// chose here whenever statistics showed one deep group, reading that group's
/// whole backlog on every refresh: 13 s for 100 groups beside 100,000 jobs
/// in one). The caller holds the rows' locks (or the groups have no row
/// yet), so this runs with a snapshot taken after
/// every change to these groups that committed before it.
const REFRESH_HEADS: &str = "\
    WITH g AS (SELECT DISTINCT queue, group_key FROM unnest($1::text[], $2::text[]) AS g(queue, group_key)), \
    first AS ( \
      SELECT g.queue, g.group_key, f.seq, f.id, f.visible_at FROM g \
      LEFT JOIN LATERAL (SELECT seq, id, visible_at FROM jobs j WHERE j.queue = g.queue AND j.group_key = g.group_key \
                         AND j.state <> 'dead' ORDER BY j.queue, j.group_key, j.seq LIMIT 1) f ON true), \
    gone AS ( \
      DELETE FROM job_heads h USING first \
      WHERE h.queue = first.queue AND h.group_key = first.group_key AND first.id IS NULL) \
    INSERT INTO job_heads (queue, group_key, seq, job_id, visible_at) \
    SELECT queue, group_key, seq, id, visible_at FROM first WHERE id IS NOT NULL \
    ON CONFLICT (queue, group_key) DO UPDATE \
      SET seq = excluded.seq, job_id = excluded.job_id, visible_at = excluded.visible_at";

/// Locks the head rows of the groups of the listed jobs, before the jobs
/// themselves, in the order claims lock them too (head row, then its job), and
/// in one order of groups for every caller, so two transactions never wait on
/// each other in a cycle.
const LOCK_HEADS_OF_JOBS: &str = "\
    SELECT 1 FROM job_heads \
    WHERE (queue, group_key) IN (SELECT queue, group_key FROM jobs WHERE id = ANY($1)) \
    ORDER BY queue COLLATE \"C\", group_key COLLATE \"C\" FOR UPDATE";

// LEASED: a job carries a lease token only while it is in flight (a lease
// sets it; release, failure, dead-lettering and redrive clear it), so a
// matching (id, lease_token) pair is an in-flight lease. Statements that take
// such pairs do not also name `state = 'in_flight'`: with it, the planner may
// drive the statement from `jobs_in_flight_idx` and compare every in-flight
// job with every pair (53 ms per completion of 100 jobs with 1,600 in
// flight) instead of looking the listed ids up in `jobs_pkey`.

/// Locks the groups of `ids` (see `LOCK_HEADS_OF_JOBS`).
async fn lock_groups_of(tx: &mut Tx, ids: &[&str]) -> Result<()> {
    sqlx::query(LOCK_HEADS_OF_JOBS).bind(ids).execute(&mut **tx).await?;
    Ok(())
}

/// Locks the head rows of the groups a redrive of `ids` (all dead letters of
/// `queue` when `None`) changes, as `LOCK_HEADS_OF_JOBS` does.
async fn lock_dead_groups(tx: &mut Tx, queue: &str, ids: &Option<Vec<String>>) -> Result<()> {
    sqlx::query(
        "SELECT 1 FROM job_heads WHERE (queue, group_key) IN \
           (SELECT queue, group_key FROM jobs WHERE queue = $1 AND state = 'dead' \
            AND ($2::text[] IS NULL OR id = ANY($2))) \
         ORDER BY queue COLLATE \"C\", group_key COLLATE \"C\" FOR UPDATE",
    )
    .bind(queue)
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// After the visibility of `ids` changed: their head rows follow (see
/// `SYNC_HEADS_OF_JOBS`). The caller locked the groups first.
async fn sync_heads_of(tx: &mut Tx, ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(SYNC_HEADS_OF_JOBS).bind(ids).execute(&mut **tx).await?;
    Ok(())
}

/// After jobs left their groups (completed, dead-lettered) or came back
/// (redriven): point the groups' head rows at their new heads. The caller
/// locked the rows first (`lock_groups_of`), so this statement's snapshot
/// holds every change to these groups that committed before it.
async fn refresh_heads(tx: &mut Tx, groups: &Groups) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    sqlx::query(REFRESH_HEADS)
        .bind(&groups.queues)
        .bind(&groups.keys)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The pairs travel as two parallel arrays: one statement and one round trip
/// whatever the batch size. See `LEASED` for why the state is not named.
async fn release_leased(tx: &mut Tx, ids: &[&str], tokens: &[&str], now: DateTime<Utc>) -> Result<u64> {
    let released = sqlx::query(
        "UPDATE jobs SET state = 'ready', receive_count = greatest(receive_count - 1, 0), visible_at = $3, \
           lease_token = NULL \
         WHERE (id, lease_token) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(ids)
    .bind(tokens)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(released.rows_affected())
}

/// As `release_leased`: one statement for the whole batch.
async fn delete_leased(tx: &mut Tx, ids: &[&str], tokens: &[&str]) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "DELETE FROM jobs WHERE (id, lease_token) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
         RETURNING queue, group_key",
    )
    .bind(ids)
    .bind(tokens)
    .fetch_all(&mut **tx)
    .await?)
}

fn id_list(ids: &[JobId]) -> Result<Vec<String>> {
    Ok(id_strings(ids))
}

crate::queue::impl_job_queue!(PgStore, tx: Tx, time: DateTime<Utc>, id_in_list: "id = ANY($3)");

/// Enqueues many jobs in one statement, inside the caller's transaction:
/// the relay's fan-out, which would otherwise cost two round trips a job.
/// The jobs are taken in the order given, so each group keeps its jobs'
/// order; head rows are upserted sorted by queue and group (`COLLATE "C"`,
/// as every other writer locks them), so no two writers wait on each other
/// in a cycle. A job whose dedup key is held is left out, as `enqueue_in_tx`
/// would return the holder.
pub(crate) async fn enqueue_many_in_tx(tx: &mut Tx, jobs: &[NewJob]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    // One array per column.
    sqlx::query(
        "WITH input AS ( \
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
                                $7::int[], $8::bigint[], $9::timestamptz[]) WITH ORDINALITY \
             AS t(id, queue, group_key, payload, dedup_key, visible_at, max_receives, visibility_timeout_ms, \
                  created_at, n)), \
         inserted AS ( \
           INSERT INTO jobs (id, queue, group_key, payload, dedup_key, state, visible_at, max_receives, \
                             visibility_timeout_ms, created_at) \
           SELECT id, queue, group_key, payload, dedup_key, 'ready', visible_at, max_receives, \
                  visibility_timeout_ms, created_at FROM input ORDER BY n \
           ON CONFLICT (queue, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING \
           RETURNING queue, group_key, seq, id, visible_at), \
         heads AS ( \
           INSERT INTO job_heads (queue, group_key, seq, job_id, visible_at) \
           SELECT DISTINCT ON (queue COLLATE \"C\", group_key COLLATE \"C\") queue, group_key, seq, id, visible_at \
           FROM inserted ORDER BY queue COLLATE \"C\", group_key COLLATE \"C\", seq \
           ON CONFLICT (queue, group_key) DO UPDATE \
             SET seq = excluded.seq, job_id = excluded.job_id, visible_at = excluded.visible_at \
           WHERE excluded.seq < job_heads.seq) \
         SELECT count(*) FROM inserted",
    )
    .bind(jobs.iter().map(|job| job.id.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|job| job.queue.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|job| job.group_key.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(NewJob::payload_text).collect::<Vec<_>>())
    .bind(jobs.iter().map(|job| job.dedup_key.as_deref()).collect::<Vec<_>>())
    .bind(jobs.iter().map(NewJob::first_visible_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(NewJob::max_receives_column).collect::<Vec<_>>())
    .bind(jobs.iter().map(NewJob::visibility_timeout_ms).collect::<Vec<_>>())
    .bind(jobs.iter().map(|job| job.now).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Candidate {
    #[sqlx(flatten)]
    head: Head,
    exhausted: bool,
}

#[derive(sqlx::FromRow)]
struct FollowerRow {
    group_key: String,
    #[sqlx(flatten)]
    follower: Follower,
}

/// A claim round's heads (`CANDIDATES`), not yet leased; those that used up
/// their receives are dead-lettered instead.
async fn claim_heads(tx: &mut Tx, request: &ClaimRequest<'_>, _: &LeaseToken) -> Result<ClaimedHeads> {
    let candidates: Vec<Candidate> = sqlx::query_as(CANDIDATES)
        .bind(request.queue)
        .bind(request.now)
        .bind(i64::try_from(request.groups).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?;
    let (exhausted, live): (Vec<Candidate>, Vec<Candidate>) = candidates.into_iter().partition(|c| c.exhausted);
    Ok(ClaimedHeads {
        dead_lettered: dead_letter_heads(tx, request, &exhausted).await?,
        heads: live.into_iter().map(|c| c.head).collect(),
        leased: Vec::new(),
    })
}

/// The followers of every head, in one statement (`FOLLOWERS`).
async fn followers_of(
    tx: &mut Tx,
    request: &ClaimRequest<'_>,
    heads: &[Head],
) -> Result<HashMap<String, Vec<Follower>>> {
    let rows: Vec<FollowerRow> = sqlx::query_as(FOLLOWERS)
        .bind(request.queue)
        .bind(heads.iter().map(|h| h.group_key.as_str()).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.seq).collect::<Vec<_>>())
        .bind(request.now)
        .bind(i64::try_from(request.run_length - 1).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?;
    let mut by_group: HashMap<String, Vec<Follower>> = HashMap::new();
    for row in rows {
        by_group.entry(row.group_key).or_default().push(row.follower);
    }
    Ok(by_group)
}

/// Leases the heads and followers of a round's runs (`LEASE`).
async fn lease(tx: &mut Tx, request: &ClaimRequest<'_>, token: &LeaseToken, ids: &[&str]) -> Result<Vec<Job>> {
    let rows: Vec<JobRow<DateTime<Utc>>> = sqlx::query_as(LEASE)
        .bind(ids)
        .bind(request.now)
        .bind(token.as_str())
        .bind(request.worker_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Dead-letters claimed heads that already used up their receives (each
/// lease ran out without a completion), keeping their last error, and lets
/// the next job of each group take its place.
async fn dead_letter_heads(tx: &mut Tx, request: &ClaimRequest<'_>, exhausted: &[Candidate]) -> Result<usize> {
    if exhausted.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = exhausted.iter().map(|c| c.head.job_id.as_str()).collect();
    let moved: Vec<(String, String)> = sqlx::query_as(
        "UPDATE jobs SET state = 'dead', visible_at = $2, lease_token = NULL, \
           last_error = coalesce(last_error, $3) \
         WHERE id = ANY($1) AND state <> 'dead' RETURNING queue, group_key",
    )
    .bind(&ids)
    .bind(request.now)
    .bind(EXPIRED_WITHOUT_ERROR)
    .fetch_all(&mut **tx)
    .await?;
    let count = moved.len();
    refresh_heads(tx, &Groups::from_rows(moved)).await?;
    Ok(count)
}

/// Gives back the jobs of one lease that its runs could not use.
async fn release_strays(tx: &mut Tx, ids: &[JobId], token: &LeaseToken, now: DateTime<Utc>) -> Result<u64> {
    let ids = id_strings(ids);
    let released = sqlx::query(
        "UPDATE jobs SET state = 'ready', receive_count = greatest(receive_count - 1, 0), visible_at = $3, \
           lease_token = NULL \
         WHERE id = ANY($1) AND lease_token = $2",
    )
    .bind(&ids)
    .bind(token.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(released.rows_affected())
}
