//! Orders, reservations and their timeline on PostgreSQL.

use super::{Pool, Tx};
use chrono::{DateTime, Utc};
use holdfast_domain::{EventId, OrderId, OrderStatus, Quantity, Sku};
use rand::Rng;

use super::catalogue::BUCKETS;
use super::queue::enqueue_in_tx;
use crate::NewJob;
use crate::Result;
use crate::error::{PlaceOrderError, StoreError};
use crate::model::*;
use crate::rows::{CustomerRow, OrderEventRow, OrderRow, like_pattern, orders};

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
/// INSERT would queue behind a lock on it (a plain `CREATE INDEX`'s).
const ACCEPT: &str = insert_order_sql!("  SELECT $15::text[], $16::smallint[], $17::int[]");

pub(super) async fn place_order(pool: &Pool, order: &NewOrder) -> Result<Order, PlaceOrderError> {
    let mut tx = pool.begin().await?;
    let mut taken = Vec::with_capacity(order.lines.len());
    // Lines arrive sorted by SKU (the cart sorts them), so every checkout
    // locks stock rows in the same order and two never deadlock.
    for (sku, qty, _) in &order.lines {
        taken.extend(reserve_line(&mut tx, sku, *qty).await?);
    }
    let placed = insert_order(&mut tx, PLACE, order, &taken).await?;
    tx.commit().await?;
    Ok(placed)
}

pub(super) async fn accept_order(pool: &Pool, order: &NewOrder, jobs: &[NewJob]) -> Result<Order, PlaceOrderError> {
    let mut tx = pool.begin().await?;
    let accepted = insert_order(&mut tx, ACCEPT, order, &[]).await?;
    for job in jobs {
        enqueue_in_tx(&mut tx, job).await?;
    }
    tx.commit().await?;
    Ok(accepted)
}

async fn insert_order(
    tx: &mut Tx,
    sql: &'static str,
    order: &NewOrder,
    taken: &[Taken],
) -> Result<Order, PlaceOrderError> {
    let lines = order_lines(order);
    let address = serde_json::to_string(&order.address).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let customer_id = holdfast_domain::CustomerId::generate();
    let row: OrderRow = sqlx::query_as(sql)
        .bind(order.id.as_str())
        .bind(order.status.as_str())
        .bind(order.email.as_str())
        .bind(order.name.as_ref().map(|n| n.as_str()))
        .bind(address)
        .bind(serde_json::to_string(&lines).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(order.total.currency().code())
        .bind(order.total.amount())
        .bind(&order.payment_method)
        .bind(order.expires_at)
        .bind(order.now)
        .bind(&order.cause)
        .bind(EventId::generate().as_str())
        .bind(customer_id.as_str())
        .bind(taken.iter().map(|t| t.sku.as_str()).collect::<Vec<_>>())
        .bind(taken.iter().map(|t| t.bucket).collect::<Vec<_>>())
        .bind(taken.iter().map(|t| t.qty).collect::<Vec<_>>())
        .bind(order.status.event_type())
        .bind(new_order_payload(order, &lines))
        .fetch_one(&mut **tx)
        .await?;
    Ok(Order::try_from(row)?)
}

pub(super) async fn reserve_accepted(
    pool: &Pool,
    order_id: &OrderId,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Order, PlaceOrderError> {
    let mut tx = pool.begin().await?;
    let row: Option<OrderRow> = sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1 FOR UPDATE"
    ))
    .bind(order_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let mut order = Order::try_from(row.ok_or_else(|| StoreError::NotFound(order_id.to_string()))?)?;
    if order.status != OrderStatus::Accepted {
        return Ok(order);
    }
    let mut taken = Vec::with_capacity(order.lines.len());
    for (sku, qty) in stored_lines(&order)? {
        taken.extend(reserve_line(&mut tx, &sku, qty).await?);
    }
    sqlx::query(
        "INSERT INTO stock_reservations (order_id, sku, bucket, qty, status) \
         SELECT $1, s, b, q, 'held' FROM unnest($2::text[], $3::smallint[], $4::int[]) AS t(s, b, q)",
    )
    .bind(order_id.as_str())
    .bind(taken.iter().map(|t| t.sku.as_str()).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.bucket).collect::<Vec<_>>())
    .bind(taken.iter().map(|t| t.qty).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    order.status = order
        .status
        .transition(OrderStatus::PendingPayment)
        .map_err(StoreError::from)?;
    order.expires_at = Some(expires_at);
    order.updated_at = now;
    sqlx::query(concat!(
        "WITH updated AS (UPDATE orders SET status = 'pending_payment', expires_at = $2, updated_at = $3 WHERE id = $1), ",
        "timeline AS (INSERT INTO order_events (order_id, seq, from_status, to_status, cause, at) ",
        "  SELECT $1, coalesce(max(seq), 0) + 1, 'accepted', 'pending_payment', 'stock reserved', $3 ",
        "  FROM order_events WHERE order_id = $1) ",
        "INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) VALUES ($4, $1, $5, $6, $3)"
    ))
    .bind(order_id.as_str())
    .bind(expires_at)
    .bind(now)
    .bind(EventId::generate().as_str())
    .bind(OrderStatus::PendingPayment.event_type())
    .bind(order_event_payload(&order))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(order)
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

pub(super) async fn transition_order(pool: &Pool, change: &StatusChange) -> Result<TransitionOutcome> {
    let mut tx = pool.begin().await?;
    let outcome = transition_in_tx(&mut tx, change).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Several status changes in one transaction: one commit (one WAL flush)
/// for the batch. The orders are locked in id order, so two batches never
/// wait on each other in a cycle. A change that cannot apply (unknown order,
/// illegal transition) is refused before it writes anything, so it leaves
/// the others alone; a database error fails the whole batch.
pub(super) async fn transition_orders(pool: &Pool, changes: &[StatusChange]) -> Result<Vec<Result<TransitionOutcome>>> {
    let mut order: Vec<usize> = (0..changes.len()).collect();
    order.sort_by(|&a, &b| changes[a].order_id.as_str().cmp(changes[b].order_id.as_str()));
    let mut outcomes: Vec<Option<Result<TransitionOutcome>>> = (0..changes.len()).map(|_| None).collect();
    let mut tx = pool.begin().await?;
    for i in order {
        match transition_in_tx(&mut tx, &changes[i]).await {
            Err(error @ (StoreError::NotFound(_) | StoreError::InvalidTransition(_))) => outcomes[i] = Some(Err(error)),
            Err(other) => return Err(other),
            Ok(outcome) => outcomes[i] = Some(Ok(outcome)),
        }
    }
    tx.commit().await?;
    Ok(outcomes.into_iter().flatten().collect())
}

/// Locks the order, checks the change against it, then writes it. Every
/// refusal comes before the first write.
async fn transition_in_tx(tx: &mut Tx, change: &StatusChange) -> Result<TransitionOutcome> {
    let row: Option<OrderRow> = sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1 FOR UPDATE"
    ))
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
    sqlx::query(concat!(
        "WITH updated AS (UPDATE orders SET status = $2, updated_at = $4, ",
        "  tracking_number = coalesce($9, tracking_number), expires_at = coalesce($10, expires_at) WHERE id = $1), ",
        "timeline AS (INSERT INTO order_events (order_id, seq, from_status, to_status, cause, at) ",
        "  SELECT $1, coalesce(max(seq), 0) + 1, $3, $2, $5, $4 FROM order_events WHERE order_id = $1) ",
        "INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) VALUES ($6, $1, $7, $8, $4)"
    ))
    .bind(change.order_id.as_str())
    .bind(change.to.as_str())
    .bind(from.as_str())
    .bind(change.at)
    .bind(&change.cause)
    .bind(EventId::generate().as_str())
    .bind(change.to.event_type())
    .bind(order_event_payload(&order))
    .bind(change.tracking_number.as_deref())
    .bind(change.expires_at)
    .execute(&mut **tx)
    .await?;
    for job in &change.enqueue {
        enqueue_in_tx(tx, job).await?;
    }
    Ok(TransitionOutcome::Changed { from, to: change.to })
}

/// What entering `to` does to the order's reserved stock.
async fn apply_stock_effect(tx: &mut Tx, order_id: &OrderId, to: OrderStatus) -> Result<()> {
    match to {
        OrderStatus::Paid => {
            sqlx::query("UPDATE stock_reservations SET status = 'committed' WHERE order_id = $1 AND status = 'held'")
                .bind(order_id.as_str())
                .execute(&mut **tx)
                .await?;
        }
        OrderStatus::Shipped => {
            sqlx::query(
                "UPDATE stock_reservations SET status = 'consumed' WHERE order_id = $1 AND status = 'committed'",
            )
            .bind(order_id.as_str())
            .execute(&mut **tx)
            .await?;
        }
        OrderStatus::PaymentFailed | OrderStatus::Cancelled | OrderStatus::Rejected => {
            // Lock the buckets in (sku, bucket) order first, the order
            // checkout takes them in, then give the units back.
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
        }
        OrderStatus::Accepted | OrderStatus::PendingPayment | OrderStatus::Fulfilling => {}
    }
    Ok(())
}

pub(super) async fn get_order(pool: &Pool, id: &OrderId) -> Result<Option<Order>> {
    let row: Option<OrderRow> = sqlx::query_as(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    row.map(Order::try_from).transpose()
}

pub(super) async fn list_orders(pool: &Pool, filter: &OrderFilter) -> Result<Vec<Order>> {
    let rows: Vec<OrderRow> = sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE ($1::text IS NULL OR email = $1) AND ($2::text IS NULL OR status = $2) ",
        "AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(filter.email.as_ref().map(|e| e.as_str()))
    .bind(filter.status.map(OrderStatus::as_str))
    .bind(filter.before.as_ref().map(OrderId::as_str))
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    orders(rows)
}

pub(super) async fn order_events(pool: &Pool, id: &OrderId) -> Result<Vec<OrderEvent>> {
    let rows: Vec<OrderEventRow> = sqlx::query_as(
        "SELECT seq, from_status, to_status, cause, at FROM order_events WHERE order_id = $1 ORDER BY seq",
    )
    .bind(id.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(OrderEvent::try_from).collect()
}

pub(super) async fn search_customers(pool: &Pool, query: &str, limit: i64) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT id, email, name, created_at FROM customers \
         WHERE lower(name) LIKE $1 ESCAPE '\\' OR email LIKE $1 ESCAPE '\\' ORDER BY email LIMIT $2",
    )
    .bind(like_pattern(query))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Customer::from).collect())
}
