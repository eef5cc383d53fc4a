//! Products and stock on SQLite (one bucket per SKU: there is one writer).

use holdfast_domain::Sku;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::begin_write;
use crate::Result;
use crate::error::StoreError;
use crate::model::{InventoryBatch, InventoryLevel, NewProduct, Product, SyncOutcome};
use crate::rows::{ProductRow, replayed};

/// The units of SKU `?1` held by active reservations: orders' (awaiting
/// payment or paid) and stock holds' (held or committed).
macro_rules! reserved_units {
    () => {
        "((SELECT coalesce(sum(qty), 0) FROM stock_reservations WHERE sku = ?1 AND status IN ('held', 'committed')) \
         + (SELECT coalesce(sum(l.qty), 0) FROM stock_hold_lines l JOIN stock_holds h ON h.id = l.hold_id \
           WHERE l.sku = ?1 AND h.status IN ('held', 'committed')))"
    };
}

pub(super) async fn create_product(pool: &SqlitePool, product: &NewProduct) -> Result<Product> {
    let mut tx = begin_write(pool).await?;
    let row: ProductRow = sqlx::query_as(
        "INSERT INTO products (sku, name, price_amount, currency, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         RETURNING sku, name, price_amount, currency, created_at",
    )
    .bind(product.sku.as_str())
    .bind(&product.name)
    .bind(product.price.amount())
    .bind(product.price.currency().code())
    .bind(product.created_at)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO stock_buckets (sku, bucket, available) VALUES (?1, 0, ?2)")
        .bind(product.sku.as_str())
        .bind(i64::from(product.on_hand))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Product::try_from(row)
}

pub(super) async fn get_products(pool: &SqlitePool, skus: &[Sku]) -> Result<Vec<Product>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let mut query: QueryBuilder<Sqlite> =
        QueryBuilder::new("SELECT sku, name, price_amount, currency, created_at FROM products WHERE sku IN (");
    let mut separated = query.separated(", ");
    for sku in skus {
        separated.push_bind(sku.as_str());
    }
    separated.push_unseparated(")");
    let rows: Vec<ProductRow> = query.build_query_as().fetch_all(pool).await?;
    rows.into_iter().map(Product::try_from).collect()
}

pub(super) async fn get_inventory(pool: &SqlitePool, sku: &Sku) -> Result<Option<InventoryLevel>> {
    let row: (Option<i64>, i64) = sqlx::query_as(concat!(
        "SELECT (SELECT sum(available) FROM stock_buckets WHERE sku = ?1), ",
        reserved_units!()
    ))
    .bind(sku.as_str())
    .fetch_one(pool)
    .await?;
    Ok(row.0.map(|available| InventoryLevel {
        on_hand: available + row.1,
        reserved: row.1,
        available,
    }))
}

pub(super) async fn sync_inventory(pool: &SqlitePool, batch: &InventoryBatch) -> Result<SyncOutcome> {
    let mut tx = begin_write(pool).await?;
    let stored: Option<String> = sqlx::query_scalar("SELECT outcome FROM inventory_sync_batches WHERE batch_id = ?1")
        .bind(&batch.batch_id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(stored) = stored {
        return replayed(&stored);
    }
    let mut outcome = SyncOutcome {
        batch_id: batch.batch_id.clone(),
        updated: vec![],
        unknown: vec![],
        replayed: false,
    };
    for (sku, on_hand) in &batch.levels {
        let updated = sqlx::query(concat!(
            "UPDATE stock_buckets SET available = max(0, ?2 - ",
            reserved_units!(),
            ") WHERE sku = ?1"
        ))
        .bind(sku.as_str())
        .bind(i64::from(*on_hand))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            outcome.unknown.push(sku.to_string());
        } else {
            outcome.updated.push(sku.to_string());
        }
    }
    let stored = serde_json::to_string(&outcome).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query("INSERT INTO inventory_sync_batches (batch_id, outcome, created_at) VALUES (?1, ?2, ?3)")
        .bind(&batch.batch_id)
        .bind(stored)
        .bind(batch.received_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(outcome)
}
