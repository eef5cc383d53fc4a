-- Only a group's head is claimable. Before, a claim walked every live job in
-- enqueue order and probed each one's group, so while one group's head was in
-- flight every claim walked that group's whole backlog (a partner endpoint
-- with 10,000 queued deliveries made every claim of the queue slow).
--
-- `job_heads` holds one row per group that has a live (not dead) job: the
-- oldest such job. Claims walk these rows, so a claim costs the number of
-- groups, not the number of jobs. The row is also the group's lock: every
-- transaction that changes which job heads a group (enqueue, completion,
-- dead-lettering, redrive) locks it first, and a claim skips a group whose row
-- another transaction holds (SKIP LOCKED).

CREATE TABLE job_heads (
    queue     TEXT NOT NULL,
    group_key TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    job_id    TEXT NOT NULL,
    PRIMARY KEY (queue, group_key)
);
CREATE INDEX job_heads_claim_idx ON job_heads (queue, seq);

INSERT INTO job_heads (queue, group_key, seq, job_id)
SELECT DISTINCT ON (queue, group_key) queue, group_key, seq, id
FROM jobs WHERE state <> 'dead'
ORDER BY queue, group_key, seq;
