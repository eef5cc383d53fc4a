-- The checkout foundation: catalogue, stock, orders, idempotency, API keys,
-- the payment inbox and the transactional outbox.

CREATE TABLE products (
    sku          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    price_amount BIGINT NOT NULL CHECK (price_amount >= 0),
    currency     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

-- Available stock of a SKU is spread over several buckets so concurrent
-- buyers of one hot SKU lock different rows (SKIP LOCKED) instead of queueing
-- on one. on_hand = sum(available) + units held by active reservations.
CREATE TABLE stock_buckets (
    sku       TEXT NOT NULL REFERENCES products (sku),
    bucket    SMALLINT NOT NULL,
    available INTEGER NOT NULL CHECK (available >= 0),
    PRIMARY KEY (sku, bucket)
);

CREATE TABLE customers (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    name       TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX customers_name_idx ON customers (lower(name));

CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    status            TEXT NOT NULL,
    email             TEXT NOT NULL,
    name              TEXT,
    shipping_address  TEXT NOT NULL,
    lines             TEXT NOT NULL,
    currency          TEXT NOT NULL,
    total_amount      BIGINT NOT NULL,
    payment_method    TEXT NOT NULL,
    payment_intent_id TEXT,
    client_secret     TEXT,
    tracking_number   TEXT,
    expires_at        TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_email_idx ON orders (email, id);
CREATE INDEX orders_status_idx ON orders (status, id);
CREATE INDEX orders_expiry_idx ON orders (expires_at) WHERE status = 'pending_payment';

-- One row per (order, sku, bucket) the order took stock from.
CREATE TABLE stock_reservations (
    order_id TEXT NOT NULL REFERENCES orders (id),
    sku      TEXT NOT NULL,
    bucket   SMALLINT NOT NULL,
    qty      INTEGER NOT NULL CHECK (qty > 0),
    -- held (awaiting payment), committed (paid), consumed (shipped), released
    status   TEXT NOT NULL,
    PRIMARY KEY (order_id, sku, bucket)
);
CREATE INDEX stock_reservations_active_idx ON stock_reservations (sku)
    WHERE status IN ('held', 'committed');

CREATE TABLE order_events (
    order_id    TEXT NOT NULL REFERENCES orders (id),
    seq         INTEGER NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    cause       TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE outbox_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_events_unpublished_idx ON outbox_events (seq) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    -- The id of what the first attempt creates (an order), so a retry after
    -- a crash resumes that order instead of placing a second one.
    resource_id     TEXT NOT NULL,
    state           TEXT NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    locked_until    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    scope      TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

CREATE TABLE payment_inbox (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    processed_at TIMESTAMPTZ,
    outcome      TEXT
);
CREATE INDEX payment_inbox_pending_idx ON payment_inbox (received_at) WHERE processed_at IS NULL;

CREATE TABLE inventory_sync_batches (
    batch_id   TEXT PRIMARY KEY,
    outcome    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
