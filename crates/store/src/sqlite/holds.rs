//! Stock holds' SQLite steps: one bucket per SKU, taken and given back under
//! the one writer's lock, so nothing is locked row by row. The rest is shared
//! (`impl_holds!` in `holds.rs`).

use holdfast_domain::{OrderId, Quantity, Sku};
use sqlx::{Sqlite, Transaction};

use super::orders::take_stock;
use crate::Result;
use crate::error::PlaceOrderError;

/// Takes each line's units from its SKU's bucket with checkout's
/// `take_stock`, and records the line.
pub(super) async fn take_lines(
    tx: &mut Transaction<'static, Sqlite>,
    hold: &OrderId,
    lines: &[(Sku, Quantity)],
) -> Result<(), PlaceOrderError> {
    for (sku, qty) in lines {
        let qty = i64::from(qty.get());
        take_stock(tx, sku, qty).await?;
        sqlx::query("INSERT INTO stock_hold_lines (hold_id, sku, bucket, qty) VALUES ($1, $2, 0, $3)")
            .bind(hold.as_str())
            .bind(sku.as_str())
            .bind(qty)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Gives a hold's units back to their buckets.
pub(super) async fn return_units(tx: &mut Transaction<'static, Sqlite>, id: &OrderId) -> Result<()> {
    sqlx::query(
        "UPDATE stock_buckets SET available = available + (SELECT l.qty FROM stock_hold_lines l \
           WHERE l.hold_id = $1 AND l.sku = stock_buckets.sku AND l.bucket = stock_buckets.bucket) \
         WHERE (sku, bucket) IN (SELECT sku, bucket FROM stock_hold_lines WHERE hold_id = $1)",
    )
    .bind(id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
