//! The steps of the order flows (`store_impl.rs`) whose SQL is PostgreSQL's
//! own. A new order and a status change are each one statement
//! (data-modifying `WITH`): one round trip inside checkout's transaction.
//! Stock comes from buckets claimed `FOR UPDATE SKIP LOCKED` and is written
//! back in `unnest` batches; a batch of changes locks its orders in id order.

use holdfast_domain::{CustomerId, EventId, OrderId, OrderStatus, Quantity, Sku};
use rand::Rng;

use super::Tx;
use super::catalogue::BUCKETS;
use crate::Result;
use crate::error::{PlaceOrderError, StoreError};
use crate::model::*;
use crate::rows::OrderRow;
use crate::store_impl::StatusWrite;

/// Stock taken for one line: which bucket and how many units.
pub(super) struct Taken {
    pub(super) sku: Sku,
    pub(super) bucket: i16,
    pub(super) qty: i32,
}

/// The statement that writes an order with its customer, timeline entry and
/// outbox event, and the reservation rows given as arrays ($15–$17).
macro_rules! insert_order_sql {
    ($reservations:literal) => {
        concat!(
            "WITH customer AS (",
            "  INSERT INTO customers (id, email, name, created_at) VALUES ($14, $3, $4, $11) ",
            "  ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name ",
            "  WHERE EXCLUDED.name IS NOT NULL AND customers.name IS DISTINCT FROM EXCLUDED.name), ",
            "reservations AS (",
            $reservations,
            "), placed AS (",
            "  INSERT INTO orders (id, status, email, name, shipping_address, lines, currency, total_amount, ",
            "    payment_method, expires_at, created_at, updated_at) ",
            "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING ",
            order_columns!(),
            "), timeline AS (",
            "  INSERT INTO order_events (order_id, seq, from_status, to_status, cause, at) ",
            "  VALUES ($1, 1, NULL, $2, $12, $11)), ",
            "outbox AS (",
            "  INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) ",
            "  VALUES ($13, $1, $18, $19, $11)) ",
            "SELECT * FROM placed"
        )
    };
}

const PLACE: &str = insert_order_sql!(
    "  INSERT INTO stock_reservations (order_id, sku, bucket, qty, status) \
       SELECT $1, s, b, q, 'held' FROM unnest($15::text[], $16::smallint[], $17::int[]) AS t(s, b, q)"
);

/// The same without touching `stock_reservations` at all: even an empty
/// INSERT would queue behind a lock on it (a `CREATE INDEX`, say).
const ACCEPT: &str = insert_order_sql!("  SELECT $15::text[], $16::smallint[], $17::int[]");

/// Writes an order with its customer, first timeline entry and outbox event
/// in one statement; `reserve` first takes its stock (all or nothing) and
/// writes its reservations with it.
pub(super) async fn insert_order(tx: &mut Tx, order: &NewOrder, reserve: bool) -> Result<Order, PlaceOrderError> {
    let mut taken = Vec::with_capacity(order.lines.len());
    if reserve {
        // Lines arrive sorted by SKU (the cart sorts them), so every checkout
        // locks stock rows in the same order and two never deadlock.
        for (sku, qty, _) in &order.lines {
            taken.extend(reserve_line(tx, sku, *qty).await?);
        }
    }
    let lines = order_lines(order);
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let row: OrderRow = sqlx::query_as(if reserve { PLACE } else { ACCEPT })
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
        .bind(&order.cause)
        .bind(EventId::generate().as_str())
        .bind(CustomerId::generate().as_str())
        .bind(taken.iter().map(|t| t.sku.as_str()).collect::<Vec<_>>())
        .bind(taken.iter().map(|t| t.bucket).collect::<Vec<_>>())
        .bind(taken.iter().map(|t| t.qty).collect::<Vec<_>>())
        .bind(order.status.event_type())
        .bind(new_order_payload(order, &lines))
        .fetch_one(&mut **tx)
        .await?;
    Ok(Order::try_from(row)?)
}

/// Takes the stock of an accepted order's lines (sorted by SKU) and writes
/// its reservations in one statement (the worker's reservation, or the
/// retry of a checkout that failed and gave its stock back).
pub(super) async fn reserve_lines(
    tx: &mut Tx,
    order_id: &OrderId,
    lines: &[(Sku, Quantity)],
) -> Result<(), PlaceOrderError> {
    let mut taken = Vec::with_capacity(lines.len());
    for (sku, qty) in lines {
        taken.extend(reserve_line(tx, sku, *qty).await?);
    }
    // A failed checkout's retry reserves again: its released rows, where the
    // same bucket is taken again, come back as held.
    sqlx::query(
        "INSERT INTO stock_reservations (order_id, sku, bucket, qty, status) \
         SELECT $1, s, b, q, 'held' FROM unnest($2::text[], $3::smallint[], $4::int[]) AS t(s, b, q) \
         ON CONFLICT (order_id, sku, bucket) DO UPDATE SET qty = excluded.qty, status = 'held' \
         WHERE stock_reservations.status = 'released'",
    )
    .bind(order_id.as_str())
    .bind(taken.iter().map(|t| t.sku.as_str()).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.bucket).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.qty).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes `qty` units of `sku`. The fast path claims one bucket that holds
/// enough, skipping buckets other checkouts have locked, starting at a random
/// bucket so concurrent buyers spread out. Only when no unlocked bucket holds
/// enough does it lock every bucket of the SKU (in bucket order) and decide
/// from the true total, so "out of stock" is never answered while stock exists.
/// Checkout and stock holds both take stock through it.
pub(super) async fn reserve_line(tx: &mut Tx, sku: &Sku, qty: Quantity) -> Result<Vec<Taken>, PlaceOrderError> {
    let wanted = i32::try_from(qty.get()).unwrap_or(i32::MAX);
    let start: i64 = rand::thread_rng().gen_range(0..BUCKETS);
    let fast: Option<i16> = sqlx::query_scalar(
        "UPDATE stock_buckets SET available = available - $2 WHERE sku = $1 AND bucket = ( \
           SELECT bucket FROM stock_buckets WHERE sku = $1 AND available >= $2 \
           ORDER BY (bucket + $3) % $4 LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING bucket",
    )
    .bind(sku.as_str())
    .bind(wanted)
    .bind(start)
    .bind(BUCKETS)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(bucket) = fast {
        return Ok(vec![Taken {
            sku: sku.clone(),
            bucket,
            qty: wanted,
        }]);
    }
    // Committed stock is an upper bound on what this checkout could ever get
    // (in-flight checkouts only lower it), so a snapshot read that finds too
    // little answers "out of stock" without queueing behind any lock.
    let (rows, committed): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(available), 0)::bigint FROM stock_buckets WHERE sku = $1")
            .bind(sku.as_str())
            .fetch_one(&mut **tx)
            .await?;
    if rows == 0 {
        return Err(PlaceOrderError::UnknownSku(sku.clone()));
    }
    if committed < i64::from(wanted) {
        return Err(PlaceOrderError::OutOfStock {
            sku: sku.clone(),
            requested: qty.get(),
            available: committed,
        });
    }
    let buckets: Vec<(i16, i32)> =
        sqlx::query_as("SELECT bucket, available FROM stock_buckets WHERE sku = $1 ORDER BY bucket FOR UPDATE")
            .bind(sku.as_str())
            .fetch_all(&mut **tx)
            .await?;
    if buckets.is_empty() {
        return Err(PlaceOrderError::UnknownSku(sku.clone()));
    }
    let total: i64 = buckets.iter().map(|(_, available)| i64::from(*available)).sum();
    if total < i64::from(wanted) {
        return Err(PlaceOrderError::OutOfStock {
            sku: sku.clone(),
            requested: qty.get(),
            available: total,
        });
    }
    let plan = take_from(&buckets, wanted);
    sqlx::query(
        "UPDATE stock_buckets b SET available = b.available - t.q FROM unnest($2::smallint[], $3::int[]) AS t(bucket, q) \
         WHERE b.sku = $1 AND b.bucket = t.bucket",
    )
    .bind(sku.as_str())
    .bind(plan.iter().map(|(bucket, _)| *bucket).collect::<Vec<_>>())
    .bind(plan.iter().map(|(_, q)| *q).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(plan
        .into_iter()
        .map(|(bucket, qty)| Taken {
            sku: sku.clone(),
            bucket,
            qty,
        })
        .collect())
}

/// Greedy split of `wanted` units over buckets that together hold enough.
pub(crate) fn take_from(buckets: &[(i16, i32)], wanted: i32) -> Vec<(i16, i32)> {
    let mut remaining = wanted;
    let mut plan = Vec::new();
    for (bucket, available) in buckets {
        if remaining == 0 {
            break;
        }
        let take = remaining.min(*available);
        if take > 0 {
            plan.push((*bucket, take));
            remaining -= take;
        }
    }
    plan
}

/// Writes a status change in one statement: the order row, its timeline
/// entry (the order's next `seq`) and its outbox event.
pub(super) async fn write_change(tx: &mut Tx, change: &StatusWrite<'_>) -> Result<()> {
    sqlx::query(concat!(
        "WITH updated AS (UPDATE orders SET status = $2, updated_at = $4, ",
        "  tracking_number = coalesce($9, tracking_number), expires_at = coalesce($10, expires_at) WHERE id = $1), ",
        "timeline AS (INSERT INTO order_events (order_id, seq, from_status, to_status, cause, at) ",
        "  SELECT $1, coalesce(max(seq), 0) + 1, $3, $2, $5, $4 FROM order_events WHERE order_id = $1) ",
        "INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) VALUES ($6, $1, $7, $8, $4)"
    ))
    .bind(change.order_id.as_str())
    .bind(change.to.as_str())
    .bind(change.from.map(OrderStatus::as_str))
    .bind(change.at)
    .bind(change.cause)
    .bind(EventId::generate().as_str())
    .bind(change.to.event_type())
    .bind(&change.payload)
    .bind(change.tracking_number)
    .bind(change.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Gives an order's held or committed units back to their buckets.
pub(super) async fn release_stock(tx: &mut Tx, order_id: &OrderId) -> Result<()> {
    // Lock the buckets in (sku, bucket) order first, the order checkout
    // takes them in, then give the units back.
    sqlx::query(
        "SELECT 1 FROM stock_buckets WHERE (sku, bucket) IN ( \
           SELECT sku, bucket FROM stock_reservations WHERE order_id = $1 AND status IN ('held', 'committed')) \
         ORDER BY sku, bucket FOR UPDATE",
    )
    .bind(order_id.as_str())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "WITH released AS ( \
           UPDATE stock_reservations SET status = 'released' \
           WHERE order_id = $1 AND status IN ('held', 'committed') RETURNING sku, bucket, qty) \
         UPDATE stock_buckets b SET available = b.available + r.qty FROM released r \
         WHERE b.sku = r.sku AND b.bucket = r.bucket",
    )
    .bind(order_id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The order a batch of status changes is applied in: by order id, so two
/// batches lock their orders in the same order and never wait on each other
/// in a cycle.
pub(super) fn in_lock_order(changes: &[StatusChange]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..changes.len()).collect();
    order.sort_by(|&a, &b| changes[a].order_id.as_str().cmp(changes[b].order_id.as_str()));
    order
}
