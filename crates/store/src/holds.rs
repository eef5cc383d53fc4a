//! Stock holds: the inventory node's reservations, keyed by the order id the
//! order node sends.
//!
//! The inventory node keeps no orders, so its reservations cannot live in
//! `stock_reservations` (which references `orders`). A hold takes units from
//! the same `stock_buckets` as checkout, with checkout's algorithm, all or
//! nothing, and carries one status for all its lines: `held` (awaiting
//! payment), `committed` (paid), `consumed` (shipped) or `released` (units
//! returned). Units of held and committed holds count as reserved.
//!
//! Both backends run the same SQL ([`impl_holds!`]) but for taking and
//! returning units: PostgreSQL claims them from a SKU's buckets as checkout
//! does (`SKIP LOCKED`), records the lines with `unnest` and locks buckets in
//! checkout's order before returning units; SQLite takes them from a SKU's one
//! bucket under its one writer. `settle` reads the hold `FOR UPDATE` on
//! PostgreSQL; SQLite's write lock already serialises it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, Quantity, Sku};

use crate::Result;
use crate::error::{PlaceOrderError, StoreError, corrupt};

/// A hold to take: every line or none.
#[derive(Debug, Clone)]
pub struct NewHold {
    pub id: OrderId,
    pub lines: Vec<(Sku, Quantity)>,
    pub expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    /// Units taken, awaiting payment; released by the sweeper after expiry.
    Held,
    /// Paid: the units stay taken until shipped or released.
    Committed,
    /// Shipped: the units left the warehouse.
    Consumed,
    /// The units went back to their buckets.
    Released,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Consumed => "consumed",
            Self::Released => "released",
        }
    }
}

impl fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HoldStatus {
    type Err = StoreError;

    /// Parses a stored status; anything else is a corrupt row.
    fn from_str(raw: &str) -> Result<Self> {
        match raw {
            "held" => Ok(Self::Held),
            "committed" => Ok(Self::Committed),
            "consumed" => Ok(Self::Consumed),
            "released" => Ok(Self::Released),
            _ => Err(corrupt("hold status", raw)),
        }
    }
}

/// What the order node tells the inventory node about a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldAction {
    /// The order was paid.
    Commit,
    /// The order shipped.
    Consume,
    /// The order failed, was cancelled or expired: give the units back.
    Release,
}

impl HoldAction {
    /// The status a hold in `from` moves to, `None` when it is already there
    /// (a repeated call), or `Conflict` when the hold can no longer get there.
    pub(crate) fn apply(self, id: &OrderId, from: HoldStatus) -> Result<Option<HoldStatus>> {
        use HoldStatus::*;
        let to = match (self, from) {
            (Self::Commit, Held) => Committed,
            (Self::Commit, Committed | Consumed) => return Ok(None),
            (Self::Consume, Held | Committed) => Consumed,
            (Self::Consume, Consumed) => return Ok(None),
            (Self::Release, Held | Committed) => Released,
            (Self::Release, Released) => return Ok(None),
            (Self::Commit | Self::Consume, Released) | (Self::Release, Consumed) => {
                return Err(StoreError::Conflict(format!("hold {id} is {from}")));
            }
        };
        Ok(Some(to))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: OrderId,
    pub status: HoldStatus,
    /// The requested units per SKU (summed over buckets), sorted by SKU.
    pub lines: Vec<(Sku, Quantity)>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait StockHolds: Send + Sync {
    /// Takes every line's units in one transaction (all or nothing), with
    /// checkout's algorithm. A hold with this id that already exists comes
    /// back unchanged when its lines are the same, whatever its status, and
    /// is a `Conflict` when they differ.
    async fn hold(&self, hold: &NewHold) -> Result<Hold, PlaceOrderError>;
    /// Commits, consumes or releases a hold; repeating an action changes
    /// nothing. Releasing returns the units to their buckets. `Conflict` when
    /// a released hold is committed or consumed, or a consumed one released.
    async fn settle(&self, id: &OrderId, action: HoldAction, now: DateTime<Utc>) -> Result<Hold>;
    async fn get(&self, id: &OrderId) -> Result<Option<Hold>>;
    /// Held holds whose expiry is at or before `now`, oldest expiry first.
    async fn expired(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>>;
}

/// The lines of a new hold merged per SKU and sorted by SKU, the order every
/// checkout takes stock rows in, so a hold and a checkout never deadlock.
pub(crate) fn merged_lines(hold: &NewHold) -> Result<Vec<(Sku, Quantity)>, PlaceOrderError> {
    let mut merged: BTreeMap<&Sku, i64> = BTreeMap::new();
    for (sku, qty) in &hold.lines {
        *merged.entry(sku).or_default() += i64::from(qty.get());
    }
    let mut lines = Vec::with_capacity(merged.len());
    for (sku, total) in merged {
        // A cart caps each SKU's total the same way; only a caller that skips
        // the cart gets here.
        let qty = Quantity::parse(total).map_err(|_| {
            StoreError::Conflict(format!(
                "hold {}: {sku} totals {total} units, more than {} per SKU",
                hold.id,
                Quantity::MAX
            ))
        })?;
        lines.push((sku.clone(), qty));
    }
    Ok(lines)
}

/// The answer to a `hold` whose id exists: the same hold again, or a
/// `Conflict` if the lines differ.
/// Whether a repeated hold moves the existing one's expiry later: only a
/// hold still `held`, and never earlier. An order completed long after a
/// first (hung) call held its stock asks again with its new payment
/// deadline, and its hold must not expire before that.
pub(crate) fn extends(existing: &Hold, hold: &NewHold) -> bool {
    existing.status == HoldStatus::Held && hold.expires_at > existing.expires_at
}

pub(crate) fn existing_or_conflict(existing: Hold, lines: &[(Sku, Quantity)]) -> Result<Hold, PlaceOrderError> {
    if existing.lines == lines {
        Ok(existing)
    } else {
        Err(StoreError::Conflict(format!("hold {} exists with other lines", existing.id)).into())
    }
}

/// The rows `HoldLineRow` reads for the hold `$1`: one row per SKU of the
/// hold (one row with no SKU if it has no lines).
pub(crate) const HOLD_BY_ID: &str = concat!(
    "SELECT h.id, h.status, h.expires_at, h.created_at, h.updated_at, l.sku, sum(l.qty) AS qty ",
    "FROM stock_holds h LEFT JOIN stock_hold_lines l ON l.hold_id = h.id WHERE h.id = $1 GROUP BY h.id, l.sku"
);

#[derive(sqlx::FromRow)]
pub(crate) struct HoldLineRow {
    id: String,
    status: String,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sku: Option<String>,
    qty: Option<i64>,
}

/// Builds a hold from its rows (`HOLD_BY_ID`); `None` if there are none.
pub(crate) fn hold_from_rows(rows: Vec<HoldLineRow>) -> Result<Option<Hold>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut hold = Hold {
        id: OrderId::from_trusted(first.id.clone()),
        status: first.status.parse()?,
        lines: Vec::with_capacity(rows.len()),
        expires_at: first.expires_at,
        created_at: first.created_at,
        updated_at: first.updated_at,
    };
    for row in rows {
        let (Some(sku), Some(qty)) = (row.sku, row.qty) else {
            continue;
        };
        let qty = Quantity::parse(qty).map_err(|_| corrupt("hold line qty", &qty.to_string()))?;
        let sku = Sku::parse(&sku).map_err(|_| corrupt("hold line sku", &sku))?;
        hold.lines.push((sku, qty));
    }
    // Sorted here, not in SQL: PostgreSQL orders text by its collation, the
    // domain by bytes.
    hold.lines.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(hold))
}

/// `StockHolds` for a backend's store: the same SQL on both. Besides what
/// every backend provides (see the crate's docs), the arguments:
///
/// - `tx`: the type `begin_write` returns;
/// - `worker_reads`: the pool the sweeper's `StockHolds::expired` reads on
///   (see `impl_webhooks!`);
/// - `for_update`: what locks the hold's row as `settle` reads it;
/// - `take_lines(tx, hold_id, lines)`: takes the merged lines' units and
///   records where they came from, all or nothing;
/// - `return_units(tx, hold_id)`: gives a hold's units back to their buckets.
macro_rules! impl_holds {
    (
        $store:ty,
        tx: $tx:ty,
        worker_reads: $reads:ident,
        for_update: $for_update:literal,
        take_lines: $take_lines:path,
        return_units: $return_units:path $(,)?
    ) => {
        const _: () = {
            use chrono::{DateTime, Utc};
            use holdfast_domain::OrderId;

            use $crate::error::{PlaceOrderError, StoreError};
            use $crate::holds::{HoldLineRow, existing_or_conflict, extends, hold_from_rows, merged_lines};
            use $crate::{Hold, HoldAction, HoldStatus, NewHold, Result};

            /// The hold as this transaction sees it; it must exist.
            async fn read_hold(tx: &mut $tx, id: &OrderId) -> Result<Hold> {
                let rows: Vec<HoldLineRow> = sqlx::query_as($crate::holds::HOLD_BY_ID)
                    .bind(id.as_str())
                    .fetch_all(&mut **tx)
                    .await?;
                hold_from_rows(rows)?.ok_or_else(|| StoreError::NotFound(format!("hold {id}")))
            }

            #[async_trait::async_trait]
            impl $crate::StockHolds for $store {
                /// Takes a hold in one transaction on the write pool, as
                /// checkout does, so the request's deadline bounds it the
                /// same way.
                async fn hold(&self, hold: &NewHold) -> Result<Hold, PlaceOrderError> {
                    let lines = merged_lines(hold)?;
                    let mut tx = begin_write(&self.write).await?;
                    // The hold row comes first. A concurrent hold with the
                    // same id waits on this insert (SQLite: on the write lock),
                    // then either finds the committed hold or, if this one
                    // rolled back, takes its place: one id never holds stock
                    // twice.
                    let claimed = sqlx::query(
                        "INSERT INTO stock_holds (id, status, expires_at, created_at, updated_at) \
                         VALUES ($1, 'held', $2, $3, $3) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(hold.id.as_str())
                    .bind(hold.expires_at)
                    .bind(hold.now)
                    .execute(&mut *tx)
                    .await?;
                    if claimed.rows_affected() == 0 {
                        // Read committed (PostgreSQL): this statement sees
                        // the hold that won the insert.
                        let existing = existing_or_conflict(read_hold(&mut tx, &hold.id).await?, &lines)?;
                        if !extends(&existing, hold) {
                            tx.rollback().await?;
                            return Ok(existing);
                        }
                        sqlx::query(
                            "UPDATE stock_holds SET expires_at = $2, updated_at = $3 \
                             WHERE id = $1 AND status = 'held' AND expires_at < $2",
                        )
                        .bind(hold.id.as_str())
                        .bind(hold.expires_at)
                        .bind(hold.now)
                        .execute(&mut *tx)
                        .await?;
                    } else {
                        $take_lines(&mut tx, &hold.id, &lines).await?;
                    }
                    let held = read_hold(&mut tx, &hold.id).await?;
                    tx.commit().await?;
                    Ok(held)
                }

                async fn settle(&self, id: &OrderId, action: HoldAction, now: DateTime<Utc>) -> Result<Hold> {
                    let mut tx = begin_write(&self.write).await?;
                    let status: Option<String> = sqlx::query_scalar(concat!(
                        "SELECT status FROM stock_holds WHERE id = $1",
                        $for_update
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let from: HoldStatus = status
                        .ok_or_else(|| StoreError::NotFound(format!("hold {id}")))?
                        .parse()?;
                    if let Some(to) = action.apply(id, from)? {
                        if to == HoldStatus::Released {
                            $return_units(&mut tx, id).await?;
                        }
                        sqlx::query("UPDATE stock_holds SET status = $2, updated_at = $3 WHERE id = $1")
                            .bind(id.as_str())
                            .bind(to.as_str())
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let hold = read_hold(&mut tx, id).await?;
                    tx.commit().await?;
                    Ok(hold)
                }

                async fn get(&self, id: &OrderId) -> Result<Option<Hold>> {
                    let rows: Vec<HoldLineRow> = sqlx::query_as($crate::holds::HOLD_BY_ID)
                        .bind(id.as_str())
                        .fetch_all(&self.read)
                        .await?;
                    hold_from_rows(rows)
                }

                async fn expired(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>> {
                    let ids: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM stock_holds WHERE status = 'held' AND expires_at <= $1 \
                         ORDER BY expires_at, id LIMIT $2",
                    )
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.$reads)
                    .await?;
                    Ok(ids.into_iter().map(OrderId::from_trusted).collect())
                }
            }
        };
    };
}
