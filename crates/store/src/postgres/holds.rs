//! Stock holds' PostgreSQL steps: units claimed from a SKU's buckets as
//! checkout claims them, the lines recorded with `unnest`, and buckets locked
//! in checkout's order before units go back. The rest is shared
//! (`impl_holds!` in `holds.rs`).

use holdfast_domain::{OrderId, Quantity, Sku};

use super::orders::reserve_line;
use super::{Conn, Tx};
use crate::Result;
use crate::error::PlaceOrderError;

/// Claims each line's units with checkout's `reserve_line`, then records
/// every bucket taken in one statement.
pub(super) async fn take_lines(tx: &mut Tx, hold: &OrderId, lines: &[(Sku, Quantity)]) -> Result<(), PlaceOrderError> {
    let mut taken = Vec::with_capacity(lines.len());
    for (sku, qty) in lines {
        taken.extend(reserve_line(tx, sku, *qty).await?);
    }
    sqlx::query(
        "INSERT INTO stock_hold_lines (hold_id, sku, bucket, qty) \
         SELECT $1, s, b, q FROM unnest($2::text[], $3::smallint[], $4::int[]) AS t(s, b, q)",
    )
    .bind(hold.as_str())
    .bind(taken.iter().map(|t| t.sku.as_str()).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.bucket).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.qty).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Gives a hold's units back to their buckets.
pub(super) async fn return_units(conn: &mut Conn, id: &OrderId) -> Result<()> {
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
