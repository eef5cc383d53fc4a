//! Stock holds on PostgreSQL: checkout's bucket claims, without an order.

use super::{Conn, Pool};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::OrderId;

use super::PgStore;
use super::orders::reserve_line;
use crate::Result;
use crate::error::{PlaceOrderError, StoreError};
use crate::holds::*;

#[async_trait]
impl StockHolds for PgStore {
    async fn hold(&self, hold: &NewHold) -> Result<Hold, PlaceOrderError> {
        take_hold(&self.write, hold).await
    }

    async fn settle(&self, id: &OrderId, action: HoldAction, now: DateTime<Utc>) -> Result<Hold> {
        settle(&self.write, id, action, now).await
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Hold>> {
        let rows: Vec<HoldLineRow> = sqlx::query_as(hold_by_id_sql!("$1"))
            .bind(id.as_str())
            .fetch_all(&self.read)
            .await?;
        hold_from_rows(rows)
    }

    async fn expired(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM stock_holds WHERE status = 'held' AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.worker)
        .await?;
        Ok(ids.into_iter().map(OrderId::from_trusted).collect())
    }
}

/// Takes a hold in one transaction on the write pool, as checkout does, so
/// the request's deadline bounds it the same way.
async fn take_hold(pool: &Pool, hold: &NewHold) -> Result<Hold, PlaceOrderError> {
    let lines = merged_lines(hold)?;
    let mut tx = pool.begin().await?;
    // The hold row comes first. A concurrent hold with the same id waits on
    // this insert, then either finds the committed hold or, if this one
    // rolled back, takes its place: one id never holds stock twice.
    let claimed = sqlx::query(
        "INSERT INTO stock_holds (id, status, expires_at, created_at, updated_at) VALUES ($1, 'held', $2, $3, $3) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(hold.id.as_str())
    .bind(hold.expires_at)
    .bind(hold.now)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        // Read committed: this statement sees the hold that won the insert.
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
        let extended = read_hold(&mut tx, &hold.id).await?;
        tx.commit().await?;
        return Ok(extended);
    }
    let mut taken = Vec::with_capacity(lines.len());
    for (sku, qty) in &lines {
        taken.extend(reserve_line(&mut tx, sku, *qty).await?);
    }
    sqlx::query(
        "INSERT INTO stock_hold_lines (hold_id, sku, bucket, qty) \
         SELECT $1, s, b, q FROM unnest($2::text[], $3::smallint[], $4::int[]) AS t(s, b, q)",
    )
    .bind(hold.id.as_str())
    .bind(taken.iter().map(|t| t.sku.as_str()).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.bucket).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.qty).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let held = read_hold(&mut tx, &hold.id).await?;
    tx.commit().await?;
    Ok(held)
}

async fn settle(pool: &Pool, id: &OrderId, action: HoldAction, now: DateTime<Utc>) -> Result<Hold> {
    let mut tx = pool.begin().await?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM stock_holds WHERE id = $1 FOR UPDATE")
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let from: HoldStatus = status
        .ok_or_else(|| StoreError::NotFound(format!("hold {id}")))?
        .parse()?;
    if let Some(to) = action.apply(id, from)? {
        if to == HoldStatus::Released {
            return_units(&mut tx, id).await?;
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

/// Gives a hold's units back to their buckets.
async fn return_units(conn: &mut Conn, id: &OrderId) -> Result<()> {
    // Lock the buckets in (sku, bucket) order first, the order checkout and
    // order releases take them in, so none of them deadlock with this.
    sqlx::query(
        "SELECT 1 FROM stock_buckets WHERE (sku, bucket) IN ( \
           SELECT sku, bucket FROM stock_hold_lines WHERE hold_id = $1) \
         ORDER BY sku, bucket FOR UPDATE",
    )
    .bind(id.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE stock_buckets b SET available = b.available + l.qty FROM stock_hold_lines l \
         WHERE l.hold_id = $1 AND b.sku = l.sku AND b.bucket = l.bucket",
    )
    .bind(id.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The hold as this transaction sees it; it must exist.
async fn read_hold(conn: &mut Conn, id: &OrderId) -> Result<Hold> {
    let rows: Vec<HoldLineRow> = sqlx::query_as(hold_by_id_sql!("$1"))
        .bind(id.as_str())
        .fetch_all(&mut *conn)
        .await?;
    hold_from_rows(rows)?.ok_or_else(|| StoreError::NotFound(format!("hold {id}")))
}
