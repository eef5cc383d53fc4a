-- The durable job queue (SQS-FIFO semantics): one table, one row per job
-- until a worker completes it. Nothing expires.
--
-- Times are Unix milliseconds: the claim adds each job's own visibility
-- timeout to `now` in SQL, which integer columns make exact and cheap.

CREATE TABLE jobs (
    -- Enqueue order; FIFO within a group follows it. AUTOINCREMENT so a
    -- sequence number is never reused after the newest job completes.
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT NOT NULL UNIQUE,
    queue                 TEXT NOT NULL,
    group_key             TEXT NOT NULL,
    payload               TEXT NOT NULL,
    dedup_key             TEXT,
    state                 TEXT NOT NULL CHECK (state IN ('ready', 'in_flight', 'dead')),
    -- Ready: when the job becomes claimable. In flight: when the lease ends.
    visible_at            INTEGER NOT NULL,
    receive_count         INTEGER NOT NULL DEFAULT 0 CHECK (receive_count >= 0),
    max_receives          INTEGER NOT NULL CHECK (max_receives > 0),
    visibility_timeout_ms INTEGER NOT NULL CHECK (visibility_timeout_ms >= 0),
    lease_token           TEXT,
    leased_by             TEXT,
    last_error            TEXT,
    created_at            INTEGER NOT NULL
);

-- A dedup key is unique in its queue while the job exists.
CREATE UNIQUE INDEX jobs_dedup_idx ON jobs (queue, dedup_key) WHERE dedup_key IS NOT NULL;
-- Claims walk live jobs in enqueue order ...
CREATE INDEX jobs_live_idx ON jobs (queue, seq) WHERE state <> 'dead';
-- ... and probe each candidate's group for an older job ...
CREATE INDEX jobs_group_idx ON jobs (queue, group_key, seq) WHERE state <> 'dead';
-- ... or for one in flight; this index stays as small as the in-flight set.
CREATE INDEX jobs_in_flight_idx ON jobs (queue, group_key) WHERE state = 'in_flight';
CREATE INDEX jobs_dead_idx ON jobs (queue, seq) WHERE state = 'dead';
