-- Creator subscriptions: creators and their plans (with versioned prices),
-- test clocks, subscriptions and their billing periods, one row per charge
-- attempt, the subscription timeline, the ledger and settlement batches.
-- Every table is new, so nothing here locks a table that is in use.

CREATE TABLE creators (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    fee_bps               INTEGER NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    settlement_interval   TEXT NOT NULL CHECK (settlement_interval IN ('daily', 'weekly', 'monthly')),
    settlement_delay_days INTEGER NOT NULL CHECK (settlement_delay_days >= 0),
    created_at            TIMESTAMPTZ NOT NULL
);

CREATE TABLE plans (
    id                   TEXT PRIMARY KEY,
    creator_id           TEXT NOT NULL REFERENCES creators (id),
    name                 TEXT NOT NULL,
    interval_unit        TEXT NOT NULL CHECK (interval_unit IN ('day', 'week', 'month', 'year')),
    interval_count       INTEGER NOT NULL CHECK (interval_count > 0),
    trial_days           INTEGER NOT NULL CHECK (trial_days >= 0),
    on_dunning_exhausted TEXT NOT NULL CHECK (on_dunning_exhausted IN ('canceled', 'unpaid')),
    -- The version new subscriptions get.
    price_version        INTEGER NOT NULL CHECK (price_version > 0),
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX plans_creator_idx ON plans (creator_id, id);

-- Every price a plan has had: a price change adds a version, and each
-- subscription keeps the version it started on.
CREATE TABLE plan_prices (
    plan_id    TEXT NOT NULL REFERENCES plans (id),
    version    INTEGER NOT NULL CHECK (version > 0),
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    currency   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (plan_id, version)
);

-- A frozen time that the subscriptions created on it live on.
CREATE TABLE test_clocks (
    id          TEXT PRIMARY KEY,
    frozen_time TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Times of the subscription's life (started_at, anchor, periods, canceled_at,
-- …) are on its clock: the test clock's time when it has one. created_at
-- and updated_at are wall-clock times.
CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    creator_id           TEXT NOT NULL REFERENCES creators (id),
    plan_id              TEXT NOT NULL,
    price_version        INTEGER NOT NULL,
    email                TEXT NOT NULL,
    name                 TEXT,
    status               TEXT NOT NULL,
    payment_method       TEXT NOT NULL,
    test_clock_id        TEXT REFERENCES test_clocks (id),
    started_at           TIMESTAMPTZ NOT NULL,
    -- Periods are computed from the anchor (the end of the trial, or the
    -- start), so a month-end anchor returns to the month's end.
    anchor               TIMESTAMPTZ NOT NULL,
    current_period_index INTEGER NOT NULL CHECK (current_period_index >= 0),
    current_period_start TIMESTAMPTZ NOT NULL,
    current_period_end   TIMESTAMPTZ NOT NULL,
    cancel_at_period_end BOOLEAN NOT NULL,
    canceled_at          TIMESTAMPTZ,
    past_due_since       TIMESTAMPTZ,
    paused_at            TIMESTAMPTZ,
    resumes_at           TIMESTAMPTZ,
    -- The sequence of the timeline's last event.
    last_sequence        INTEGER NOT NULL CHECK (last_sequence >= 0),
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (plan_id, price_version) REFERENCES plan_prices (plan_id, version)
);
CREATE INDEX subscriptions_creator_idx ON subscriptions (creator_id, id);
CREATE INDEX subscriptions_status_idx ON subscriptions (status, id);
CREATE INDEX subscriptions_clock_idx ON subscriptions (test_clock_id) WHERE test_clock_id IS NOT NULL;

-- One row per billing period a subscription has entered or is about to.
-- open: owed and not paid (charged from starts_at on); paid: its charge
-- succeeded, or nothing was owed (a trial); void: given up unpaid (cancel,
-- pause).
CREATE TABLE subscription_periods (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    period_index    INTEGER NOT NULL CHECK (period_index >= 0),
    starts_at       TIMESTAMPTZ NOT NULL,
    ends_at         TIMESTAMPTZ NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'paid', 'void')),
    PRIMARY KEY (subscription_id, period_index)
);
-- The renewal scheduler's catch-up scan: open periods by due time.
CREATE INDEX subscription_periods_due_idx ON subscription_periods (starts_at) WHERE status = 'open';

-- One row per attempt to charge a period. pending: sent (or about to be)
-- to the provider, outcome unknown; a retry after a crash resumes it with
-- the same idempotency key, so the provider sees one intent. duplicate:
-- the provider took the money for a period another charge had already paid
-- (to be refunded).
CREATE TABLE subscription_charges (
    id              TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    period_index    INTEGER NOT NULL,
    attempt         INTEGER NOT NULL CHECK (attempt > 0),
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    currency        TEXT NOT NULL,
    payment_method  TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'duplicate')),
    intent_id       TEXT,
    failure_code    TEXT,
    decline_code    TEXT,
    failure_message TEXT,
    attempted_at    TIMESTAMPTZ NOT NULL,
    completed_at    TIMESTAMPTZ,
    FOREIGN KEY (subscription_id, period_index) REFERENCES subscription_periods (subscription_id, period_index),
    UNIQUE (subscription_id, period_index, attempt)
);
-- No period is ever charged twice: at most one succeeded charge per period,
-- whatever races (two nodes, a late webhook, a retried job).
CREATE UNIQUE INDEX subscription_charges_one_success_idx ON subscription_charges (subscription_id, period_index)
    WHERE status = 'succeeded';
-- At most one attempt in flight per period.
CREATE UNIQUE INDEX subscription_charges_one_pending_idx ON subscription_charges (subscription_id, period_index)
    WHERE status = 'pending';
CREATE INDEX subscription_charges_intent_idx ON subscription_charges (intent_id) WHERE intent_id IS NOT NULL;

-- The timeline: every event about a subscription, numbered per
-- subscription so a consumer can detect a gap; each is also in the outbox.
CREATE TABLE subscription_events (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    sequence        INTEGER NOT NULL CHECK (sequence > 0),
    event_id        TEXT NOT NULL UNIQUE,
    event_type      TEXT NOT NULL,
    from_status     TEXT,
    to_status       TEXT NOT NULL,
    period_index    INTEGER,
    charge_id       TEXT,
    cause           TEXT NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (subscription_id, sequence)
);

-- A creator's payout: the ledger entries of one window and currency.
CREATE TABLE settlement_batches (
    id           TEXT PRIMARY KEY,
    creator_id   TEXT NOT NULL REFERENCES creators (id),
    currency     TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end   TIMESTAMPTZ NOT NULL,
    charges      INTEGER NOT NULL CHECK (charges >= 0),
    gross        BIGINT NOT NULL CHECK (gross >= 0),
    fee          BIGINT NOT NULL CHECK (fee >= 0),
    net          BIGINT NOT NULL CHECK (net >= 0),
    created_at   TIMESTAMPTZ NOT NULL,
    CHECK (fee + net = gross)
);
CREATE INDEX settlement_batches_creator_idx ON settlement_batches (creator_id, window_start);

-- One entry per succeeded charge: what the customer paid, the platform's
-- fee and the creator's net, in minor units.
CREATE TABLE ledger_entries (
    charge_id       TEXT PRIMARY KEY REFERENCES subscription_charges (id),
    creator_id      TEXT NOT NULL REFERENCES creators (id),
    subscription_id TEXT NOT NULL,
    period_index    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    gross           BIGINT NOT NULL CHECK (gross >= 0),
    fee             BIGINT NOT NULL CHECK (fee >= 0),
    net             BIGINT NOT NULL CHECK (net >= 0),
    charged_at      TIMESTAMPTZ NOT NULL,
    settlement_id   TEXT REFERENCES settlement_batches (id),
    CHECK (fee + net = gross)
);
CREATE INDEX ledger_entries_unsettled_idx ON ledger_entries (creator_id, charged_at) WHERE settlement_id IS NULL;
CREATE INDEX ledger_entries_settlement_idx ON ledger_entries (settlement_id) WHERE settlement_id IS NOT NULL;
CREATE INDEX ledger_entries_subscription_idx ON ledger_entries (subscription_id, period_index);
