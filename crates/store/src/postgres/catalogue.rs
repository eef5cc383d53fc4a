//! Products and stock on PostgreSQL.

use super::Pool;
use holdfast_domain::Sku;

use crate::Result;
use crate::error::StoreError;
use crate::model::{InventoryBatch, InventoryLevel, NewProduct, Product, SyncOutcome};
use crate::rows::{ProductRow, replayed, spread};

/// How many rows one SKU's available stock is spread over. 16 lets 32
/// concurrent buyers of one SKU mostly lock different rows.
pub(crate) const BUCKETS: i64 = 16;

/// The units of SKU `$1` held by active reservations: orders' (awaiting
/// payment or paid) and stock holds' (held or committed).
macro_rules! reserved_units {
    () => {
        "((SELECT coalesce(sum(qty), 0)::bigint FROM stock_reservations \
            WHERE sku = $1 AND status IN ('held', 'committed')) \
         + (SELECT coalesce(sum(l.qty), 0)::bigint FROM stock_hold_lines l JOIN stock_holds h ON h.id = l.hold_id \
            WHERE l.sku = $1 AND h.status IN ('held', 'committed')))"
    };
}

pub(super) async fn create_product(pool: &Pool, product: &NewProduct) -> Result<Product> {
    let mut tx = pool.begin().await?;
    let row: ProductRow = sqlx::query_as(
        "INSERT INTO products (sku, name, price_amount, currency, created_at) VALUES ($1, $2, $3, $4, $5) \
         RETURNING sku, name, price_amount, currency, created_at",
    )
    .bind(product.sku.as_str())
    .bind(&product.name)
    .bind(product.price.amount())
    .bind(product.price.currency().code())
    .bind(product.created_at)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO stock_buckets (sku, bucket, available) \
         SELECT $1, b - 1, a FROM unnest($2::int[]) WITH ORDINALITY AS t(a, b)",
    )
    .bind(product.sku.as_str())
    .bind(spread_i32(i64::from(product.on_hand)))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Product::try_from(row)
}

fn spread_i32(total: i64) -> Vec<i32> {
    spread(total, BUCKETS)
        .into_iter()
        .map(|units| i32::try_from(units).unwrap_or(i32::MAX))
        .collect()
}

pub(super) async fn get_products(pool: &Pool, skus: &[Sku]) -> Result<Vec<Product>> {
    let skus: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    let rows: Vec<ProductRow> =
        sqlx::query_as("SELECT sku, name, price_amount, currency, created_at FROM products WHERE sku = ANY($1)")
            .bind(&skus)
            .fetch_all(pool)
            .await?;
    rows.into_iter().map(Product::try_from).collect()
}

pub(super) async fn get_inventory(pool: &Pool, sku: &Sku) -> Result<Option<InventoryLevel>> {
    let row: (Option<i64>, i64) = sqlx::query_as(concat!(
        "SELECT (SELECT sum(available)::bigint FROM stock_buckets WHERE sku = $1), ",
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

/// Sets on-hand levels. Each SKU's buckets are locked in bucket order (the
/// order checkout uses), the units held by reservations and stock holds are
/// subtracted, and the rest is spread evenly again.
pub(super) async fn sync_inventory(pool: &Pool, batch: &InventoryBatch) -> Result<SyncOutcome> {
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO inventory_sync_batches (batch_id, outcome, created_at) VALUES ($1, '', $2) ON CONFLICT DO NOTHING",
    )
    .bind(&batch.batch_id)
    .bind(batch.received_at)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        let stored: String = sqlx::query_scalar("SELECT outcome FROM inventory_sync_batches WHERE batch_id = $1")
            .bind(&batch.batch_id)
            .fetch_one(&mut *tx)
            .await?;
        return replayed(&stored);
    }
    let mut outcome = SyncOutcome {
        batch_id: batch.batch_id.clone(),
        updated: vec![],
        unknown: vec![],
        replayed: false,
    };
    let mut levels = batch.levels.clone();
    levels.sort_by(|a, b| a.0.cmp(&b.0));
    for (sku, on_hand) in &levels {
        let buckets: Vec<i16> =
            sqlx::query_scalar("SELECT bucket FROM stock_buckets WHERE sku = $1 ORDER BY bucket FOR UPDATE")
                .bind(sku.as_str())
                .fetch_all(&mut *tx)
                .await?;
        if buckets.is_empty() {
            outcome.unknown.push(sku.to_string());
            continue;
        }
        let reserved: i64 = sqlx::query_scalar(concat!("SELECT ", reserved_units!()))
            .bind(sku.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let available = (i64::from(*on_hand) - reserved).max(0);
        let shares: Vec<i32> = spread(available, buckets.len() as i64)
            .into_iter()
            .map(|units| i32::try_from(units).unwrap_or(i32::MAX))
            .collect();
        sqlx::query(
            "UPDATE stock_buckets b SET available = t.a FROM unnest($2::smallint[], $3::int[]) AS t(bucket, a) \
             WHERE b.sku = $1 AND b.bucket = t.bucket",
        )
        .bind(sku.as_str())
        .bind(&buckets)
        .bind(&shares)
        .execute(&mut *tx)
        .await?;
        outcome.updated.push(sku.to_string());
    }
    let stored = serde_json::to_string(&outcome).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query("UPDATE inventory_sync_batches SET outcome = $2 WHERE batch_id = $1")
        .bind(&batch.batch_id)
        .bind(stored)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(outcome)
}
