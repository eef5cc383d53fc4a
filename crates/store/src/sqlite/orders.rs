//! The steps of the order flows (`store_impl.rs`) whose SQL is SQLite's own.
//! SQLite has no writes inside `WITH`, so a new order and a status change
//! are several statements in the write transaction. Stock comes from one
//! bucket per SKU, checked and taken under the one writer's lock, and a
//! batch of changes is applied as given: no row is locked but by that lock.

use holdfast_domain::{CustomerId, EventId, OrderId, OrderStatus, Quantity, Sku};
use sqlx::{Sqlite, Transaction};

use crate::Result;
use crate::error::{PlaceOrderError, StoreError};
use crate::model::*;
use crate::rows::OrderRow;
use crate::store_impl::StatusWrite;

type Tx<'c> = Transaction<'c, Sqlite>;

/// Writes an order with its customer, timeline entry and outbox event;
/// `reserve` also takes its stock (all or nothing).
pub(super) async fn insert_order(tx: &mut Tx<'_>, order: &NewOrder, reserve: bool) -> Result<Order, PlaceOrderError> {
    let lines = order_lines(order);
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    sqlx::query(
        "INSERT INTO customers (id, email, name, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (email) DO UPDATE SET name = excluded.name \
         WHERE excluded.name IS NOT NULL AND customers.name IS NOT excluded.name",
    )
    .bind(CustomerId::generate().as_str())
    .bind(order.email.as_str())
    .bind(order.name.as_ref().map(|n| n.as_str()))
    .bind(order.now)
    .execute(&mut **tx)
    .await?;
    let row: OrderRow = sqlx::query_as(concat!(
        "INSERT INTO orders (id, status, email, name, shipping_address, lines, currency, total_amount, ",
        "payment_method, expires_at, created_at, updated_at) ",
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING ",
        order_columns!()
    ))
    .bind(order.id.as_str())
    .bind(order.status.as_str())
    .bind(order.email.as_str())
    .bind(order.name.as_ref().map(|n| n.as_str()))
    .bind(serde_json::to_string(&order.address).map_err(corrupt)?)
    .bind(serde_json::to_string(&lines).map_err(corrupt)?)
    .bind(order.total.currency().code())
    .bind(order.total.amount())
    .bind(&order.payment_method)
    .bind(order.expires_at)
    .bind(order.now)
    .fetch_one(&mut **tx)
    .await?;
    // The order row comes first because reservations reference it; a line
    // out of stock rolls the whole transaction back.
    if reserve {
        for (sku, qty, _) in &order.lines {
            reserve_line(tx, &order.id, sku, *qty).await?;
        }
    }
    let first = StatusWrite {
        order_id: &order.id,
        from: None,
        to: order.status,
        cause: &order.cause,
        at: order.now,
        tracking_number: None,
        expires_at: None,
        payload: new_order_payload(order, &lines),
    };
    record_change(tx, &first).await?;
    Ok(Order::try_from(row)?)
}

/// Takes the stock of an accepted order's lines and records its reservations.
pub(super) async fn reserve_lines(
    tx: &mut Tx<'_>,
    order_id: &OrderId,
    lines: &[(Sku, Quantity)],
) -> Result<(), PlaceOrderError> {
    for (sku, qty) in lines {
        reserve_line(tx, order_id, sku, *qty).await?;
    }
    Ok(())
}

/// Takes `qty` units of `sku` for an order and records its reservation.
async fn reserve_line(tx: &mut Tx<'_>, order_id: &OrderId, sku: &Sku, qty: Quantity) -> Result<(), PlaceOrderError> {
    let qty = i64::from(qty.get());
    take_stock(tx, sku, qty).await?;
    // A failed checkout's retry reserves again: its released row comes back
    // as held.
    sqlx::query(
        "INSERT INTO stock_reservations (order_id, sku, bucket, qty, status) VALUES ($1, $2, 0, $3, 'held') \
         ON CONFLICT (order_id, sku, bucket) DO UPDATE SET qty = excluded.qty, status = 'held' \
         WHERE stock_reservations.status = 'released'",
    )
    .bind(order_id.as_str())
    .bind(sku.as_str())
    .bind(qty)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes `qty` units of `sku` from its single bucket (bucket 0), or fails
/// with the amount available. The write lock is held, so check-then-update
/// is safe. Checkout and stock holds both take stock through it.
pub(super) async fn take_stock(tx: &mut Tx<'_>, sku: &Sku, qty: i64) -> Result<(), PlaceOrderError> {
    let taken = sqlx::query(
        "UPDATE stock_buckets SET available = available - $2 WHERE sku = $1 AND bucket = 0 AND available >= $2",
    )
    .bind(sku.as_str())
    .bind(qty)
    .execute(&mut **tx)
    .await?;
    if taken.rows_affected() == 0 {
        let available: Option<i64> = sqlx::query_scalar("SELECT sum(available) FROM stock_buckets WHERE sku = $1")
            .bind(sku.as_str())
            .fetch_one(&mut **tx)
            .await?;
        return Err(match available {
            None => PlaceOrderError::UnknownSku(sku.clone()),
            Some(available) => PlaceOrderError::OutOfStock {
                sku: sku.clone(),
                requested: u32::try_from(qty).unwrap_or(u32::MAX),
                available,
            },
        });
    }
    Ok(())
}

/// Writes a status change: the order row, then its timeline entry and
/// outbox event.
pub(super) async fn write_change(tx: &mut Tx<'_>, change: &StatusWrite<'_>) -> Result<()> {
    sqlx::query(
        "UPDATE orders SET status = $2, updated_at = $3, tracking_number = coalesce($4, tracking_number), \
         expires_at = coalesce($5, expires_at) WHERE id = $1",
    )
    .bind(change.order_id.as_str())
    .bind(change.to.as_str())
    .bind(change.at)
    .bind(change.tracking_number)
    .bind(change.expires_at)
    .execute(&mut **tx)
    .await?;
    record_change(tx, change).await
}

/// Writes the timeline entry (the order's next `seq`) and the outbox event
/// of a status change.
async fn record_change(tx: &mut Tx<'_>, change: &StatusWrite<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO order_events (order_id, seq, from_status, to_status, cause, at) \
         SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5 FROM order_events WHERE order_id = $1",
    )
    .bind(change.order_id.as_str())
    .bind(change.from.map(OrderStatus::as_str))
    .bind(change.to.as_str())
    .bind(change.cause)
    .bind(change.at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(EventId::generate().as_str())
    .bind(change.order_id.as_str())
    .bind(change.to.event_type())
    .bind(&change.payload)
    .bind(change.at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Gives an order's held or committed units back to their buckets, then
/// marks its reservations released.
pub(super) async fn release_stock(tx: &mut Tx<'_>, order_id: &OrderId) -> Result<()> {
    for statement in [
        "UPDATE stock_buckets SET available = available + (SELECT r.qty FROM stock_reservations r \
           WHERE r.order_id = $1 AND r.sku = stock_buckets.sku AND r.bucket = stock_buckets.bucket \
           AND r.status IN ('held', 'committed')) \
         WHERE (sku, bucket) IN (SELECT sku, bucket FROM stock_reservations \
           WHERE order_id = $1 AND status IN ('held', 'committed'))",
        "UPDATE stock_reservations SET status = 'released' WHERE order_id = $1 AND status IN ('held', 'committed')",
    ] {
        sqlx::query(statement)
            .bind(order_id.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The order a batch of status changes is applied in: as given, since the
/// write transaction already excludes every other writer.
pub(super) fn in_lock_order(changes: &[StatusChange]) -> Vec<usize> {
    (0..changes.len()).collect()
}
