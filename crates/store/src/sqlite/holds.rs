//! Stock holds on SQLite: one bucket per SKU, under the one writer's lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::OrderId;
use sqlx::{SqliteConnection, SqlitePool};

use super::orders::take_stock;
use super::{SqliteStore, begin_write};
use crate::Result;
use crate::error::{PlaceOrderError, StoreError};
use crate::holds::*;

#[async_trait]
impl StockHolds for SqliteStore {
    async fn hold(&self, hold: &NewHold) -> Result<Hold, PlaceOrderError> {
        take_hold(&self.write, hold).await
    }

    async fn settle(&self, id: &OrderId, action: HoldAction, now: DateTime<Utc>) -> Result<Hold> {
        settle(&self.write, id, action, now).await
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Hold>> {
        let rows: Vec<HoldLineRow> = sqlx::query_as(hold_by_id_sql!("?1"))
            .bind(id.as_str())
            .fetch_all(&self.read)
            .await?;
        hold_from_rows(rows)
    }

    async fn expired(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM stock_holds WHERE status = 'held' AND expires_at <= ?1 ORDER BY expires_at, id LIMIT ?2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(ids.into_iter().map(OrderId::from_trusted).collect())
    }
}

/// Takes a hold in one `BEGIN IMMEDIATE` transaction on the shared writing
/// connection, as checkout does. Holding the write lock from the start makes
/// the existence check and the insert one step: two holds with one id
/// cannot both get past it.
async fn take_hold(pool: &SqlitePool, hold: &NewHold) -> Result<Hold, PlaceOrderError> {
    let lines = merged_lines(hold)?;
    let mut tx = begin_write(pool).await?;
    if let Some(existing) = find_hold(&mut tx, &hold.id).await? {
        let existing = existing_or_conflict(existing, &lines)?;
        if !extends(&existing, hold) {
            tx.rollback().await?;
            return Ok(existing);
        }
        sqlx::query("UPDATE stock_holds SET expires_at = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'held'")
            .bind(hold.id.as_str())
            .bind(hold.expires_at)
            .bind(hold.now)
            .execute(&mut *tx)
            .await?;
        let extended = find_hold(&mut tx, &hold.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("hold {}", hold.id)))?;
        tx.commit().await?;
        return Ok(extended);
    }
    sqlx::query(
        "INSERT INTO stock_holds (id, status, expires_at, created_at, updated_at) VALUES (?1, 'held', ?2, ?3, ?3)",
    )
    .bind(hold.id.as_str())
    .bind(hold.expires_at)
    .bind(hold.now)
    .execute(&mut *tx)
    .await?;
    for (sku, qty) in &lines {
        let qty = i64::from(qty.get());
        take_stock(&mut tx, sku, qty).await?;
        sqlx::query("INSERT INTO stock_hold_lines (hold_id, sku, bucket, qty) VALUES (?1, ?2, 0, ?3)")
            .bind(hold.id.as_str())
            .bind(sku.as_str())
            .bind(qty)
            .execute(&mut *tx)
            .await?;
    }
    let held = find_hold(&mut tx, &hold.id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("hold {}", hold.id)))?;
    tx.commit().await?;
    Ok(held)
}

async fn settle(pool: &SqlitePool, id: &OrderId, action: HoldAction, now: DateTime<Utc>) -> Result<Hold> {
    let mut tx = begin_write(pool).await?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM stock_holds WHERE id = ?1")
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let from: HoldStatus = status
        .ok_or_else(|| StoreError::NotFound(format!("hold {id}")))?
        .parse()?;
    if let Some(to) = action.apply(id, from)? {
        if to == HoldStatus::Released {
            sqlx::query(
                "UPDATE stock_buckets SET available = available + (SELECT l.qty FROM stock_hold_lines l \
                   WHERE l.hold_id = ?1 AND l.sku = stock_buckets.sku AND l.bucket = stock_buckets.bucket) \
                 WHERE (sku, bucket) IN (SELECT sku, bucket FROM stock_hold_lines WHERE hold_id = ?1)",
            )
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE stock_holds SET status = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(id.as_str())
            .bind(to.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    let hold = find_hold(&mut tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("hold {id}")))?;
    tx.commit().await?;
    Ok(hold)
}

async fn find_hold(conn: &mut SqliteConnection, id: &OrderId) -> Result<Option<Hold>> {
    let rows: Vec<HoldLineRow> = sqlx::query_as(hold_by_id_sql!("?1"))
        .bind(id.as_str())
        .fetch_all(&mut *conn)
        .await?;
    hold_from_rows(rows)
}
