-- Only a group's head is claimable: `job_heads` holds one row per group that
-- has a live (not dead) job, the oldest such job, so a claim costs the number
-- of groups rather than the length of a group's backlog. See the PostgreSQL
-- migration of the same number for the whole story; SQLite has one writer, so
-- the rows need no locking here.

CREATE TABLE job_heads (
    queue     TEXT NOT NULL,
    group_key TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    job_id    TEXT NOT NULL,
    PRIMARY KEY (queue, group_key)
);
CREATE INDEX job_heads_claim_idx ON job_heads (queue, seq);

-- With min() the only aggregate, SQLite takes the bare column `id` from the
-- row that holds the minimum.
INSERT INTO job_heads (queue, group_key, seq, job_id)
SELECT queue, group_key, min(seq), id
FROM jobs WHERE state <> 'dead'
GROUP BY queue, group_key;
