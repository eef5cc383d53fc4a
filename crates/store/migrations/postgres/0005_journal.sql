-- The operational event journal: facts about the running service (breaker
-- transitions first; later shedding, dead letters, drill faults), kept so
-- `holdfast postmortem` can draft an incident timeline from them.

CREATE TABLE ops_journal (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- When it happened, which may be before it was written (a write retried
    -- while the database was down).
    at      TIMESTAMPTZ NOT NULL,
    -- `breaker`, `journal`, …
    kind    TEXT NOT NULL,
    -- What it is about, e.g. the dependency `payments`.
    subject TEXT NOT NULL,
    -- One human line, e.g. "payments breaker closed → open: failure rate 0.62 over 21 calls".
    summary TEXT NOT NULL,
    -- JSON object with the machine-readable facts.
    detail  TEXT NOT NULL,
    -- The process that wrote it: hostname:pid or its listen address.
    node    TEXT NOT NULL
);
CREATE INDEX ops_journal_at_idx ON ops_journal (at);
