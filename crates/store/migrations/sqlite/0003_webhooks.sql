-- Partner webhooks: endpoints, one delivery per (event, endpoint) and every
-- attempt of it. The outbox relay creates deliveries with their jobs.

CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    -- JSON array of event types; ["*"] for all.
    event_types     TEXT NOT NULL,
    secret          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    disabled_at     TEXT,
    disabled_reason TEXT,
    -- Start of the current unbroken run of failed attempts.
    failing_since   TEXT,
    -- Deleted endpoints stay so their delivery log keeps its meaning.
    deleted_at      TEXT
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_id         TEXT NOT NULL REFERENCES outbox_events (id),
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_latency_ms  INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    completed_at     TEXT
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt     INTEGER NOT NULL,
    at          TEXT NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
