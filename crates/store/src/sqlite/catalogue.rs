//! The catalogue steps (`store_impl.rs`) whose SQL is SQLite's own: one
//! stock row (bucket 0) per SKU, since its one writer serialises checkouts
//! anyway; SKU lists bind as an `IN` list (SQLite has no arrays); a batch's
//! SKUs are set as given, the write lock being the only lock.

use std::borrow::Cow;

use holdfast_domain::Sku;
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};

use crate::Result;
use crate::rows::ProductRow;

/// A new product's stock row: all of `on_hand` in bucket 0.
pub(super) async fn insert_stock(tx: &mut Transaction<'_, Sqlite>, sku: &Sku, on_hand: u32) -> Result<()> {
    sqlx::query("INSERT INTO stock_buckets (sku, bucket, available) VALUES ($1, 0, $2)")
        .bind(sku.as_str())
        .bind(i64::from(on_hand))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn get_products(pool: &SqlitePool, skus: &[Sku]) -> Result<Vec<ProductRow>> {
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
    Ok(query.build_query_as().fetch_all(pool).await?)
}

/// The order a batch's SKUs are set in: as given, since SQLite locks no
/// rows (the write lock is held for the whole batch).
pub(super) fn in_lock_order(levels: &[(Sku, u32)]) -> Cow<'_, [(Sku, u32)]> {
    Cow::Borrowed(levels)
}

/// Sets `sku`'s on-hand level, less the units held by reservations and
/// stock holds; `false` if the SKU is unknown.
pub(super) async fn set_on_hand(tx: &mut Transaction<'_, Sqlite>, sku: &Sku, on_hand: u32) -> Result<bool> {
    let updated = sqlx::query(concat!(
        "UPDATE stock_buckets SET available = max(0, $2 - ",
        reserved_units!(),
        ") WHERE sku = $1"
    ))
    .bind(sku.as_str())
    .bind(i64::from(on_hand))
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() > 0)
}
