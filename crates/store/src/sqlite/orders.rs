//! Orders, reservations and their timeline on SQLite.

use chrono::{DateTime, Utc};
use holdfast_domain::{CustomerId, EventId, OrderId, OrderStatus, Sku};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::begin_write;
use super::queue::enqueue_in_tx;
use crate::NewJob;
use crate::Result;
use crate::error::{PlaceOrderError, StoreError};
use crate::model::*;
use crate::rows::{CustomerRow, OrderEventRow, OrderRow, like_pattern, orders};

/// Writes an order with its customer, timeline entry and outbox event;
/// `reserve` also takes its stock (all or nothing).
async fn insert_order(
    tx: &mut Transaction<'static, Sqlite>,
    order: &NewOrder,
    reserve: bool,
) -> Result<Order, PlaceOrderError> {
    let lines = order_lines(order);
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    sqlx::query(
        "INSERT INTO customers (id, email, name, created_at) VALUES (?1, ?2, ?3, ?4) \
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
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING ",
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
            reserve_line(tx, &order.id, sku, i64::from(qty.get())).await?;
        }
    }
    record_change(
        tx,
        &order.id,
        None,
        order.status,
        &order.cause,
        order.now,
        new_order_payload(order, &lines),
    )
    .await?;
    Ok(Order::try_from(row)?)
}

pub(super) async fn place_order(pool: &SqlitePool, order: &NewOrder) -> Result<Order, PlaceOrderError> {
    let mut tx = begin_write(pool).await?;
    let placed = insert_order(&mut tx, order, true).await?;
    tx.commit().await?;
    Ok(placed)
}

pub(super) async fn accept_order(
    pool: &SqlitePool,
    order: &NewOrder,
    jobs: &[NewJob],
) -> Result<Order, PlaceOrderError> {
    let mut tx = begin_write(pool).await?;
    let accepted = insert_order(&mut tx, order, false).await?;
    for job in jobs {
        enqueue_in_tx(&mut tx, job).await?;
    }
    tx.commit().await?;
    Ok(accepted)
}

pub(super) async fn reserve_accepted(
    pool: &SqlitePool,
    order_id: &OrderId,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Order, PlaceOrderError> {
    let mut tx = begin_write(pool).await?;
    let row: Option<OrderRow> = sqlx::query_as(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = ?1"))
        .bind(order_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let mut order = Order::try_from(row.ok_or_else(|| StoreError::NotFound(order_id.to_string()))?)?;
    if order.status != OrderStatus::Accepted {
        return Ok(order);
    }
    for (sku, qty) in stored_lines(&order)? {
        reserve_line(&mut tx, order_id, &sku, i64::from(qty.get())).await?;
    }
    order.status = order
        .status
        .transition(OrderStatus::PendingPayment)
        .map_err(StoreError::from)?;
    order.expires_at = Some(expires_at);
    order.updated_at = now;
    sqlx::query("UPDATE orders SET status = 'pending_payment', expires_at = ?2, updated_at = ?3 WHERE id = ?1")
        .bind(order_id.as_str())
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    record_change(
        &mut tx,
        order_id,
        Some(OrderStatus::Accepted),
        OrderStatus::PendingPayment,
        "stock reserved",
        now,
        order_event_payload(&order),
    )
    .await?;
    tx.commit().await?;
    Ok(order)
}

/// Takes `qty` units of `sku` for an order and records its reservation.
async fn reserve_line(
    tx: &mut Transaction<'static, Sqlite>,
    order_id: &OrderId,
    sku: &Sku,
    qty: i64,
) -> Result<(), PlaceOrderError> {
    take_stock(tx, sku, qty).await?;
    sqlx::query("INSERT INTO stock_reservations (order_id, sku, bucket, qty, status) VALUES (?1, ?2, 0, ?3, 'held')")
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
pub(super) async fn take_stock(
    tx: &mut Transaction<'static, Sqlite>,
    sku: &Sku,
    qty: i64,
) -> Result<(), PlaceOrderError> {
    let taken = sqlx::query(
        "UPDATE stock_buckets SET available = available - ?2 WHERE sku = ?1 AND bucket = 0 AND available >= ?2",
    )
    .bind(sku.as_str())
    .bind(qty)
    .execute(&mut **tx)
    .await?;
    if taken.rows_affected() == 0 {
        let available: Option<i64> = sqlx::query_scalar("SELECT sum(available) FROM stock_buckets WHERE sku = ?1")
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

/// Writes the timeline entry and the outbox event of a status change.
async fn record_change(
    tx: &mut Transaction<'_, Sqlite>,
    order_id: &OrderId,
    from: Option<OrderStatus>,
    to: OrderStatus,
    cause: &str,
    at: chrono::DateTime<chrono::Utc>,
    payload: String,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO order_events (order_id, seq, from_status, to_status, cause, at) \
         SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM order_events WHERE order_id = ?1",
    )
    .bind(order_id.as_str())
    .bind(from.map(OrderStatus::as_str))
    .bind(to.as_str())
    .bind(cause)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(EventId::generate().as_str())
    .bind(order_id.as_str())
    .bind(to.event_type())
    .bind(payload)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn transition_order(pool: &SqlitePool, change: &StatusChange) -> Result<TransitionOutcome> {
    let mut tx = begin_write(pool).await?;
    let outcome = transition_in_tx(&mut tx, change).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Several status changes in one write transaction: one wait for SQLite's
/// writer and one commit for the batch. A change that cannot apply (unknown
/// order, illegal transition) is refused before it writes anything, so it
/// leaves the others alone; a database error fails the whole batch.
pub(super) async fn transition_orders(
    pool: &SqlitePool,
    changes: &[StatusChange],
) -> Result<Vec<Result<TransitionOutcome>>> {
    let mut tx = begin_write(pool).await?;
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes {
        match transition_in_tx(&mut tx, change).await {
            Err(error @ (StoreError::NotFound(_) | StoreError::InvalidTransition(_))) => outcomes.push(Err(error)),
            Err(other) => return Err(other),
            Ok(outcome) => outcomes.push(Ok(outcome)),
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Checks the change against the order as stored, then writes it. Every
/// refusal comes before the first write.
async fn transition_in_tx(tx: &mut Transaction<'_, Sqlite>, change: &StatusChange) -> Result<TransitionOutcome> {
    let row: Option<OrderRow> = sqlx::query_as(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = ?1"))
        .bind(change.order_id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let mut order = Order::try_from(row.ok_or_else(|| StoreError::NotFound(change.order_id.to_string()))?)?;
    if order.status == change.to {
        return Ok(TransitionOutcome::Unchanged);
    }
    let from = order.status;
    order.status = from.transition(change.to)?;
    if change.tracking_number.is_some() {
        order.tracking_number.clone_from(&change.tracking_number);
    }
    if change.expires_at.is_some() {
        order.expires_at = change.expires_at;
    }
    apply_stock_effect(tx, &change.order_id, change.to).await?;
    sqlx::query(
        "UPDATE orders SET status = ?2, updated_at = ?3, tracking_number = coalesce(?4, tracking_number), \
         expires_at = coalesce(?5, expires_at) WHERE id = ?1",
    )
    .bind(change.order_id.as_str())
    .bind(change.to.as_str())
    .bind(change.at)
    .bind(change.tracking_number.as_deref())
    .bind(change.expires_at)
    .execute(&mut **tx)
    .await?;
    for job in &change.enqueue {
        enqueue_in_tx(tx, job).await?;
    }
    record_change(
        tx,
        &change.order_id,
        Some(from),
        change.to,
        &change.cause,
        change.at,
        order_event_payload(&order),
    )
    .await?;
    Ok(TransitionOutcome::Changed { from, to: change.to })
}

async fn apply_stock_effect(tx: &mut Transaction<'_, Sqlite>, order_id: &OrderId, to: OrderStatus) -> Result<()> {
    let statements: &[&'static str] = match to {
        OrderStatus::Paid => {
            &["UPDATE stock_reservations SET status = 'committed' WHERE order_id = ?1 AND status = 'held'"]
        }
        OrderStatus::Shipped => {
            &["UPDATE stock_reservations SET status = 'consumed' WHERE order_id = ?1 AND status = 'committed'"]
        }
        OrderStatus::PaymentFailed | OrderStatus::Cancelled | OrderStatus::Rejected => &[
            "UPDATE stock_buckets SET available = available + (SELECT r.qty FROM stock_reservations r \
               WHERE r.order_id = ?1 AND r.sku = stock_buckets.sku AND r.bucket = stock_buckets.bucket \
               AND r.status IN ('held', 'committed')) \
             WHERE (sku, bucket) IN (SELECT sku, bucket FROM stock_reservations \
               WHERE order_id = ?1 AND status IN ('held', 'committed'))",
            "UPDATE stock_reservations SET status = 'released' WHERE order_id = ?1 AND status IN ('held', 'committed')",
        ],
        OrderStatus::Accepted | OrderStatus::PendingPayment | OrderStatus::Fulfilling => &[],
    };
    for statement in statements {
        sqlx::query(*statement)
            .bind(order_id.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn get_order(pool: &SqlitePool, id: &OrderId) -> Result<Option<Order>> {
    let row: Option<OrderRow> = sqlx::query_as(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = ?1"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    row.map(Order::try_from).transpose()
}

pub(super) async fn list_orders(pool: &SqlitePool, filter: &OrderFilter) -> Result<Vec<Order>> {
    let rows: Vec<OrderRow> = sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE (?1 IS NULL OR email = ?1) AND (?2 IS NULL OR status = ?2) ",
        "AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
    ))
    .bind(filter.email.as_ref().map(|e| e.as_str()))
    .bind(filter.status.map(OrderStatus::as_str))
    .bind(filter.before.as_ref().map(OrderId::as_str))
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    orders(rows)
}

pub(super) async fn order_events(pool: &SqlitePool, id: &OrderId) -> Result<Vec<OrderEvent>> {
    let rows: Vec<OrderEventRow> = sqlx::query_as(
        "SELECT seq, from_status, to_status, cause, at FROM order_events WHERE order_id = ?1 ORDER BY seq",
    )
    .bind(id.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(OrderEvent::try_from).collect()
}

pub(super) async fn search_customers(pool: &SqlitePool, query: &str, limit: i64) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT id, email, name, created_at FROM customers \
         WHERE lower(name) LIKE ?1 ESCAPE '\\' OR email LIKE ?1 ESCAPE '\\' ORDER BY email LIMIT ?2",
    )
    .bind(like_pattern(query))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Customer::from).collect())
}
