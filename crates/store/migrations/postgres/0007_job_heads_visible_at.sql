-- A claim walked the group heads in enqueue order and probed each one's job,
-- so every head leased to another worker cost every claim a lookup: with
-- 1,600 heads in flight (16 workers claiming 100 groups each) a claim read
-- 1,700 heads to lease 100, 7.8 ms each. Each head row now carries when its
-- group is next claimable: its job's `visible_at` (the lease's end while it
-- is in flight, the retry time after a failure). Claims read the heads that
-- are claimable now, and nothing else, in the order they became claimable.
--
-- Every write that changes a head job's visibility (enqueue, lease, release,
-- failure, heartbeat, completion, dead-lettering, redrive) sets the row's
-- `visible_at` in the same transaction. It is a hint for finding heads: a
-- claim still checks the job itself, so a stale value costs a wasted look,
-- never a wrong claim.

-- A constant default is stored in the catalogue (PostgreSQL 11 and later): no
-- row is rewritten, and it makes every existing head claimable until the
-- UPDATE below gives it its job's time.
-- holdfast-ignore adding-field-with-default
ALTER TABLE job_heads ADD COLUMN visible_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity';

UPDATE job_heads h SET visible_at = j.visible_at FROM jobs j WHERE j.id = h.job_id;

-- job_heads holds one row per group with a live job, and migrations run in a
-- transaction (as they must behind PgBouncer), so no CONCURRENTLY here.
-- holdfast-ignore require-concurrent-index-creation
CREATE INDEX job_heads_ready_idx ON job_heads (queue, visible_at, seq);

-- Dropping an index holds its lock only for a catalogue change, and every
-- connection runs with `lock_timeout`, so the drop fails the migration rather
-- than queue the tables' traffic behind a long query.
-- holdfast-ignore require-concurrent-index-deletion
DROP INDEX job_heads_claim_idx;

-- Claims walked live jobs in enqueue order through this index until group
-- heads replaced that walk (migration 0006); nothing reads it now. Worse, a
-- lookup of one group's oldest job could still be served by it (queue fixed,
-- in `seq` order, filtering the group): with one group 100,000 jobs deep and
-- statistics that say so, the planner chose it, and every head refresh read
-- the whole backlog (13 s for 100 groups).
-- holdfast-ignore require-concurrent-index-deletion
DROP INDEX jobs_live_idx;
