//! The job queue on PostgreSQL: many workers on many nodes claim disjoint jobs
//! with `FOR UPDATE SKIP LOCKED`, with no leader and no coordination outside
//! the database.

use std::collections::HashMap;
use std::time::Duration;

use super::{Pool, Tx};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::Result;
use crate::error::StoreError;
use crate::queue::*;

macro_rules! job_columns {
    () => {
        "id, seq, queue, group_key, payload, dedup_key, state, visible_at, receive_count, max_receives, \
         visibility_timeout_ms, leased_by, last_error, created_at"
    };
}

/// Candidates for a claim: the heads of `$1`'s groups (`job_heads`, one row
/// per group with a live job), visible now, oldest-claimable first, from
/// groups with no other unexpired lease. A claim reads only the heads whose
/// row says they are claimable now (`job_heads_ready_idx`): neither a group's
/// backlog nor the heads leased to other workers cost it anything, and the
/// job itself is checked again, so a stale row costs a look, never a wrong
/// claim. The head rows are locked with SKIP
/// LOCKED, so concurrent claimers take disjoint groups instead of queueing
/// behind each other, and a group whose head another transaction is
/// changing (an enqueue, a completion) is left for the next round.
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
    job_columns!()
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
/// in one). The caller holds the rows' locks
/// (or the groups have no row yet), so this runs with a snapshot taken after
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

/// Groups (queue and key as two parallel arrays) that changed in one write.
#[derive(Default)]
struct Groups {
    queues: Vec<String>,
    keys: Vec<String>,
}

impl Groups {
    fn from_rows(rows: Vec<(String, String)>) -> Self {
        let mut rows = rows;
        rows.sort();
        rows.dedup();
        let (queues, keys) = rows.into_iter().unzip();
        Self { queues, keys }
    }

    fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// Locks the groups of `ids` (see `LOCK_HEADS_OF_JOBS`).
async fn lock_groups_of(tx: &mut Tx, ids: &[&str]) -> Result<()> {
    sqlx::query(LOCK_HEADS_OF_JOBS).bind(ids).execute(&mut **tx).await?;
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
/// when the business write that needs it commits. The job becomes its
/// group's head when the group has none, or when it is older than the head
/// (an enqueue that commits late with an earlier sequence number); the upsert
/// locks the head row either way, which is what orders this enqueue against
/// a completion that is about to remove the group's last job.
pub(crate) async fn enqueue_in_tx(tx: &mut Tx, job: &NewJob) -> Result<JobId> {
    // A duplicate's holder may complete between our insert and our read; a
    // second attempt then inserts. Two rounds settle any such race.
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
        .bind(job.first_visible_at())
        .bind(job.max_receives_column())
        .bind(job.visibility_timeout_ms())
        .bind(job.now)
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
            .bind(job.first_visible_at())
            .execute(&mut **tx)
            .await?;
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
    let mut columns = EnqueueColumns::default();
    for job in jobs {
        columns.push(job);
    }
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
    .bind(&columns.ids)
    .bind(&columns.queues)
    .bind(&columns.groups)
    .bind(&columns.payloads)
    .bind(&columns.dedup_keys)
    .bind(&columns.visible_at)
    .bind(&columns.max_receives)
    .bind(&columns.visibility_timeout_ms)
    .bind(&columns.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `enqueue_many_in_tx`'s jobs as one array per column.
#[derive(Default)]
struct EnqueueColumns {
    ids: Vec<String>,
    queues: Vec<String>,
    groups: Vec<String>,
    payloads: Vec<String>,
    dedup_keys: Vec<Option<String>>,
    visible_at: Vec<DateTime<Utc>>,
    max_receives: Vec<i32>,
    visibility_timeout_ms: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
}

impl EnqueueColumns {
    fn push(&mut self, job: &NewJob) {
        self.ids.push(job.id.as_str().to_owned());
        self.queues.push(job.queue.clone());
        self.groups.push(job.group_key.clone());
        self.payloads.push(job.payload_text());
        self.dedup_keys.push(job.dedup_key.clone());
        self.visible_at.push(job.first_visible_at());
        self.max_receives.push(job.max_receives_column());
        self.visibility_timeout_ms.push(job.visibility_timeout_ms());
        self.created_at.push(job.now);
    }
}

struct Round {
    runs: Vec<Vec<ClaimedJob>>,
    dead_lettered: usize,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    group_key: String,
    job_id: String,
    seq: i64,
    exhausted: bool,
}

#[derive(sqlx::FromRow)]
struct FollowerRow {
    group_key: String,
    id: String,
    visible: bool,
    receives_left: bool,
}

async fn claim_round(pool: &Pool, request: &ClaimRequest<'_>) -> Result<Round> {
    let token = LeaseToken::generate();
    let mut tx = pool.begin().await?;
    let candidates: Vec<Candidate> = sqlx::query_as(CANDIDATES)
        .bind(request.queue)
        .bind(request.now)
        .bind(i64::try_from(request.groups).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
    let (exhausted, live): (Vec<Candidate>, Vec<Candidate>) = candidates.into_iter().partition(|c| c.exhausted);
    let dead_lettered = dead_letter_heads(&mut tx, request, &exhausted).await?;
    let mut expected: HashMap<String, Vec<String>> = live
        .iter()
        .map(|c| (c.group_key.clone(), vec![c.job_id.clone()]))
        .collect();
    if request.run_length > 1 && !live.is_empty() {
        let followers: Vec<FollowerRow> = sqlx::query_as(FOLLOWERS)
            .bind(request.queue)
            .bind(live.iter().map(|c| c.group_key.as_str()).collect::<Vec<_>>())
            .bind(live.iter().map(|c| c.seq).collect::<Vec<_>>())
            .bind(request.now)
            .bind(i64::try_from(request.run_length - 1).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        let mut by_group: HashMap<String, Vec<Follower>> = HashMap::new();
        for row in followers {
            by_group.entry(row.group_key).or_default().push(Follower {
                id: row.id,
                visible: row.visible,
                receives_left: row.receives_left,
            });
        }
        for (group, followers) in by_group {
            if let Some(run) = expected.get_mut(&group) {
                run.extend(run_prefix(followers));
            }
        }
    }
    let ids: Vec<&str> = expected.values().flatten().map(String::as_str).collect();
    let leased: Vec<JobRow> = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(LEASE)
            .bind(&ids)
            .bind(request.now)
            .bind(token.as_str())
            .bind(request.worker_id)
            .fetch_all(&mut *tx)
            .await?
    };
    let leased = leased.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?;
    let heads: Vec<String> = live.into_iter().map(|c| c.group_key).collect();
    let (runs, strays) = into_runs(&heads, &expected, leased, &token);
    if !strays.is_empty() {
        release_in_tx(&mut tx, &strays, &token, request.now).await?;
    }
    // The leased heads are claimable again when their leases end.
    let head_ids: Vec<&str> = expected
        .values()
        .filter_map(|run| run.first())
        .map(String::as_str)
        .collect();
    sync_heads_of(&mut tx, &head_ids).await?;
    tx.commit().await?;
    Ok(Round { runs, dead_lettered })
}

/// Dead-letters claimed heads that already used up their receives (each
/// lease ran out without a completion), keeping their last error, and lets
/// the next job of each group take its place.
async fn dead_letter_heads(tx: &mut Tx, request: &ClaimRequest<'_>, exhausted: &[Candidate]) -> Result<usize> {
    if exhausted.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = exhausted.iter().map(|c| c.job_id.as_str()).collect();
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

async fn release_in_tx(tx: &mut Tx, ids: &[JobId], token: &LeaseToken, now: DateTime<Utc>) -> Result<u64> {
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

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let mut tx = self.worker.begin().await?;
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
            claim_round(&self.worker, &request)
                .await
                .map(|round| (round.runs, round.dead_lettered))
        })
        .await
    }

    async fn release(&self, jobs: &[(JobId, LeaseToken)], now: DateTime<Utc>) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let (ids, tokens): (Vec<&str>, Vec<&str>) =
            jobs.iter().map(|(id, lease)| (id.as_str(), lease.as_str())).unzip();
        let mut tx = self.worker.begin().await?;
        lock_groups_of(&mut tx, &ids).await?;
        let released = sqlx::query(
            "UPDATE jobs SET state = 'ready', receive_count = greatest(receive_count - 1, 0), visible_at = $3, \
               lease_token = NULL \
             WHERE (id, lease_token) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        )
        .bind(&ids)
        .bind(tokens)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sync_heads_of(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(released.rows_affected())
    }

    async fn heartbeat(
        &self,
        job: &JobId,
        lease: &LeaseToken,
        extend_by: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.worker.begin().await?;
        lock_groups_of(&mut tx, &[job.as_str()]).await?;
        let extended =
            sqlx::query("UPDATE jobs SET visible_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'in_flight'")
                .bind(job.as_str())
                .bind(lease.as_str())
                .bind(lease_end(now, extend_by))
                .execute(&mut *tx)
                .await?;
        sync_heads_of(&mut tx, &[job.as_str()]).await?;
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
        // The pairs travel as two parallel arrays: one statement and one
        // round trip whatever the batch size. A pair listed twice still
        // removes its job once, and counts once. See `LEASED` for why the
        // state is not named.
        let (ids, tokens): (Vec<&str>, Vec<&str>) =
            jobs.iter().map(|(id, lease)| (id.as_str(), lease.as_str())).unzip();
        let mut tx = self.worker.begin().await?;
        lock_groups_of(&mut tx, &ids).await?;
        let deleted: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM jobs WHERE (id, lease_token) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
             RETURNING queue, group_key",
        )
        .bind(ids)
        .bind(tokens)
        .fetch_all(&mut *tx)
        .await?;
        let removed = deleted.len() as u64;
        refresh_heads(&mut tx, &Groups::from_rows(deleted)).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn fail(&self, job: &JobId, lease: &LeaseToken, error: &str, retry_at: DateTime<Utc>) -> Result<FailOutcome> {
        let mut tx = self.worker.begin().await?;
        lock_groups_of(&mut tx, &[job.as_str()]).await?;
        // A dead job keeps its lease end as `visible_at`: roughly when it died.
        let row: Option<(String, DateTime<Utc>, String, String)> = sqlx::query_as(
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
        .bind(retry_at)
        .fetch_optional(&mut *tx)
        .await?;
        // Dead: the next job heads the group. Retrying: the head waits for its retry time.
        if let Some((_, _, queue, group)) = &row {
            refresh_heads(&mut tx, &Groups::from_rows(vec![(queue.clone(), group.clone())])).await?;
        }
        tx.commit().await?;
        fail_outcome(row.map(|(state, visible_at, _, _)| (state, visible_at)))
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
        let mut tx = self.worker.begin().await?;
        sqlx::query(
            "SELECT 1 FROM job_heads WHERE (queue, group_key) IN \
               (SELECT queue, group_key FROM jobs WHERE queue = $1 AND state = 'dead' \
                AND ($2::text[] IS NULL OR id = ANY($2))) \
             ORDER BY queue COLLATE \"C\", group_key COLLATE \"C\" FOR UPDATE",
        )
        .bind(queue)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let moved: Vec<(String, String)> = sqlx::query_as(
            "UPDATE jobs SET state = 'ready', receive_count = 0, visible_at = $2, lease_token = NULL, leased_by = NULL \
             WHERE queue = $1 AND state = 'dead' AND ($3::text[] IS NULL OR id = ANY($3)) \
             RETURNING queue, group_key",
        )
        .bind(queue)
        .bind(now)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let count = moved.len() as u64;
        // A redriven job keeps its sequence number, so it may head its group again.
        refresh_heads(&mut tx, &Groups::from_rows(moved)).await?;
        tx.commit().await?;
        Ok(count)
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
