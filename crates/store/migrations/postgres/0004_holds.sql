-- Stock holds: the inventory node's reservations, keyed by the order id the
-- order node sends. That node has no orders rows, so a hold cannot use
-- stock_reservations (which references orders); it takes units from the
-- same stock_buckets. One status per hold, on the hold row.

CREATE TABLE stock_holds (
    id         TEXT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('held', 'committed', 'consumed', 'released')),
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- The sweeper releases held holds past their expiry, oldest first.
CREATE INDEX stock_holds_expiry_idx ON stock_holds (expires_at) WHERE status = 'held';

-- One row per (hold, sku, bucket) the hold took stock from.
CREATE TABLE stock_hold_lines (
    hold_id TEXT NOT NULL REFERENCES stock_holds (id),
    sku     TEXT NOT NULL,
    bucket  SMALLINT NOT NULL,
    qty     INTEGER NOT NULL CHECK (qty > 0),
    PRIMARY KEY (hold_id, sku, bucket)
);
-- Inventory levels and syncs sum a SKU's held units.
CREATE INDEX stock_hold_lines_sku_idx ON stock_hold_lines (sku);
