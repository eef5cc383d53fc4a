-- The relay's place in the outbox sequence: every seq up to `high_water` is
-- published, and a hole right after it (a transaction still running, or one
-- that rolled back) is tracked until it fills or is known to be permanent,
-- so that events are published in seq order although their transactions
-- commit in any order. See `postgres/sequence.rs`.

CREATE TABLE outbox_relay (
    only_row   BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    high_water BIGINT NOT NULL,
    -- When the hole after `high_water` was first seen.
    gap_since  TIMESTAMPTZ,
    -- `pg_snapshot_xmax` noted once the hole had settled: when the oldest
    -- running transaction is at or past it, nothing can fill the hole.
    gap_xmax   xid8
);

INSERT INTO outbox_relay (high_water)
SELECT coalesce(max(seq), 0) FROM outbox_events WHERE published_at IS NOT NULL;
