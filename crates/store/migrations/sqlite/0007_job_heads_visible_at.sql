-- Each head row carries when its group is next claimable (its job's
-- `visible_at`, in milliseconds), so a claim reads only the heads claimable
-- now instead of walking past every head leased to another worker. See the
-- PostgreSQL migration of the same number.

ALTER TABLE job_heads ADD COLUMN visible_at INTEGER NOT NULL DEFAULT 0;

UPDATE job_heads SET visible_at = coalesce((SELECT j.visible_at FROM jobs j WHERE j.id = job_heads.job_id), 0);

CREATE INDEX job_heads_ready_idx ON job_heads (queue, visible_at, seq);

DROP INDEX job_heads_claim_idx;

-- Nothing walks live jobs in enqueue order since group heads (migration
-- 0006), and a lookup of one group's oldest job could be served by this
-- index, reading a whole deep backlog; see the PostgreSQL migration.
DROP INDEX jobs_live_idx;

-- One writer at a time, so the head row can simply follow its job: every
-- statement that moves a head job's visibility (lease, release, failure,
-- heartbeat) moves the row's with it, in the same transaction.
CREATE TRIGGER job_heads_follow_visibility AFTER UPDATE OF visible_at ON jobs
BEGIN
    UPDATE job_heads SET visible_at = NEW.visible_at
    WHERE queue = NEW.queue AND group_key = NEW.group_key AND job_id = NEW.id;
END;
