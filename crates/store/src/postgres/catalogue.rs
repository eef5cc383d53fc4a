//! The catalogue steps (`store_impl.rs`) whose SQL is PostgreSQL's own: a
//! SKU's stock is spread over `BUCKETS` rows so concurrent checkouts lock
//! different ones, written in `unnest` batches; SKU lists bind as one array
//! (`= ANY($1)`); a batch's SKUs are locked in SKU order.

use std::borrow::Cow;

use holdfast_domain::Sku;

use super::{Pool, Tx};
use crate::Result;
use crate::rows::{ProductRow, spread};

/// How many rows one SKU's available stock is spread over. 16 lets 32
/// concurrent buyers of one SKU mostly lock different rows.
pub(crate) const BUCKETS: i64 = 16;

/// A new product's stock rows: `on_hand` spread over `BUCKETS` buckets.
pub(super) async fn insert_stock(tx: &mut Tx, sku: &Sku, on_hand: u32) -> Result<()> {
    sqlx::query(
        "INSERT INTO stock_buckets (sku, bucket, available) \
         SELECT $1, b - 1, a FROM unnest($2::int[]) WITH ORDINALITY AS t(a, b)",
    )
    .bind(sku.as_str())
    .bind(spread_i32(i64::from(on_hand), BUCKETS))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn spread_i32(total: i64, buckets: i64) -> Vec<i32> {
    spread(total, buckets)
        .into_iter()
        .map(|units| i32::try_from(units).unwrap_or(i32::MAX))
        .collect()
}

pub(super) async fn get_products(pool: &Pool, skus: &[Sku]) -> Result<Vec<ProductRow>> {
    let skus: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    Ok(
        sqlx::query_as("SELECT sku, name, price_amount, currency, created_at FROM products WHERE sku = ANY($1)")
            .bind(&skus)
            .fetch_all(pool)
            .await?,
    )
}

/// The order a batch's SKUs are set in: by SKU, as checkout locks them, so
/// a sync and a checkout never wait on each other in a cycle.
pub(super) fn in_lock_order(levels: &[(Sku, u32)]) -> Cow<'_, [(Sku, u32)]> {
    let mut levels = levels.to_vec();
    levels.sort_by(|a, b| a.0.cmp(&b.0));
    Cow::Owned(levels)
}

/// Sets `sku`'s on-hand level; `false` if the SKU is unknown. Its buckets
/// are locked in bucket order (the order checkout uses), the units held by
/// reservations and stock holds are subtracted, and the rest is spread
/// evenly again.
pub(super) async fn set_on_hand(tx: &mut Tx, sku: &Sku, on_hand: u32) -> Result<bool> {
    let buckets: Vec<i16> =
        sqlx::query_scalar("SELECT bucket FROM stock_buckets WHERE sku = $1 ORDER BY bucket FOR UPDATE")
            .bind(sku.as_str())
            .fetch_all(&mut **tx)
            .await?;
    if buckets.is_empty() {
        return Ok(false);
    }
    let reserved: i64 = sqlx::query_scalar(concat!("SELECT ", reserved_units!()))
        .bind(sku.as_str())
        .fetch_one(&mut **tx)
        .await?;
    let available = (i64::from(on_hand) - reserved).max(0);
    sqlx::query(
        "UPDATE stock_buckets b SET available = t.a FROM unnest($2::smallint[], $3::int[]) AS t(bucket, a) \
         WHERE b.sku = $1 AND b.bucket = t.bucket",
    )
    .bind(sku.as_str())
    .bind(&buckets)
    .bind(spread_i32(available, buckets.len() as i64))
    .execute(&mut **tx)
    .await?;
    Ok(true)
}
