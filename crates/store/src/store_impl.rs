//! The [`Store`](crate::Store) trait's implementation, written once for both
//! backends: `impl_store!`, expanded in each backend's `mod.rs` for its store
//! type. It holds API keys, the payment inbox, the catalogue and the order
//! flows (place, accept, reserve, change status); checkout's own two
//! transactions and its idempotency keys are in `checkout.rs`, which calls
//! the helpers written here.
//!
//! A flow's shape is shared: which pool, which transaction, lock the order,
//! check the transition, apply its stock effect, write it, enqueue its jobs.
//! A step whose SQL differs is a function of the same name in each backend's
//! `orders.rs` or `catalogue.rs`, which the shared body calls as `orders::…`
//! and `catalogue::…`. Functions rather than macro arguments, because each
//! such step is whole statements (several on SQLite), not a fragment, and a
//! named, documented function reads better than SQL threaded through a
//! macro. Only one-word differences are arguments of the macro.
//!
//! Per backend, and why:
//! - in the macro call (`mod.rs`): `backend()` and `migrate` (PostgreSQL's
//!   runner behind transaction pooling); marking inbox events processed (PostgreSQL's `now()` and one `unnest`
//!   batch; SQLite binds the time and loops under its one writer);
//! - as arguments: the transaction type; the query that finds the migrations
//!   table (`to_regclass` vs `sqlite_master`); `FOR UPDATE` on an order read to be
//!   changed (PostgreSQL; SQLite's write lock already excludes every other
//!   writer); the pool background reads use (PostgreSQL's `worker`, beside
//!   neither checkouts nor `GET`s; SQLite's `read`, since its `worker` is the
//!   one writer);
//! - `orders.rs`: writing a new order and a status change (one statement with
//!   data-modifying `WITH` on PostgreSQL, which SQLite lacks), taking and
//!   releasing stock (buckets claimed `FOR UPDATE SKIP LOCKED` vs
//!   `take_stock`), the order a batch of changes is applied in;
//! - `catalogue.rs`: a new product's stock rows, `get_products`' SKU list
//!   (`= ANY($1)` vs an `IN` list), setting one SKU's on-hand level, the order
//!   a batch's SKUs are locked in.

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, OrderStatus};

/// A status change as both backends write it: the order row's new status
/// (and tracking number or payment deadline, when given), its timeline entry
/// and its outbox event. `from` is `None` for a new order's first entry.
pub(crate) struct StatusWrite<'a> {
    pub(crate) order_id: &'a OrderId,
    pub(crate) from: Option<OrderStatus>,
    pub(crate) to: OrderStatus,
    pub(crate) cause: &'a str,
    pub(crate) at: DateTime<Utc>,
    pub(crate) tracking_number: Option<&'a str>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// The outbox event's payload: the order as it is after the change.
    pub(crate) payload: String,
}

/// How an `accepted` order moves to `pending_payment`: the checkout
/// worker's reservation, or a client's retry of a checkout that failed.
pub(crate) struct ResumeAccepted {
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) now: DateTime<Utc>,
    /// Reserve its stock here; `false` when an inventory node holds it.
    pub(crate) reserve: bool,
    pub(crate) cause: &'static str,
}

/// The units of SKU `$1` held by active reservations: orders' (awaiting
/// payment or paid) and stock holds' (held or committed).
macro_rules! reserved_units {
    () => {
        "((SELECT coalesce(sum(qty), 0) FROM stock_reservations WHERE sku = $1 AND status IN ('held', 'committed')) \
         + (SELECT coalesce(sum(l.qty), 0) FROM stock_hold_lines l JOIN stock_holds h ON h.id = l.hold_id \
           WHERE l.sku = $1 AND h.status IN ('held', 'committed')))"
    };
}

/// `Store` for a backend's store type. See the module's docs for the
/// arguments and the crate's for what a backend provides: `begin_write`, the
/// `read`, `write` and `worker` pools, and here also its `MIGRATOR`, a
/// `usage(name, &pool)` for `pool_usage`, and its `orders`, `catalogue` and
/// `queue` modules.
macro_rules! impl_store {
    (
        $store:ty,
        tx: $tx:ty,
        lock_for_update: $for_update:literal,
        migrations_table: $migrations_table:literal,
        worker_reads: $worker_reads:ident,
        per_backend: { $($per_backend:tt)* } $(,)?
    ) => {
        const _: () = {
            use chrono::{DateTime, Utc};
            use holdfast_domain::{OrderId, OrderStatus, Sku};
            use $crate::Result;
            use $crate::error::{PlaceOrderError, StoreError};
            use $crate::model::*;
            use $crate::rows::{CustomerRow, OrderEventRow, OrderRow, ProductRow, api_key_record, inbox_event};
            use $crate::store_impl::{ResumeAccepted, StatusWrite};

            #[async_trait::async_trait]
            impl $crate::Store for $store {
                $($per_backend)*

                async fn migration_status(&self) -> Result<MigrationStatus> {
                    let exists: Option<Option<String>> =
                        sqlx::query_scalar($migrations_table).fetch_optional(&self.read).await?;
                    let applied = match exists.flatten() {
                        Some(_) => {
                            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                                .fetch_all(&self.read)
                                .await?
                        }
                        None => Vec::new(),
                    };
                    Ok(MigrationStatus {
                        expected: MIGRATOR.iter().map(|m| m.version).collect(),
                        applied,
                    })
                }

                fn pool_usage(&self) -> Vec<PoolUsage> {
                    vec![
                        usage("read", &self.read),
                        usage("write", &self.write),
                        usage("worker", &self.worker),
                    ]
                }

                async fn ping(&self) -> Result<()> {
                    sqlx::query("SELECT 1").execute(&self.read).await?;
                    Ok(())
                }

                fn checkouts(&self) -> &dyn $crate::Checkouts {
                    self
                }

                fn queue(&self) -> &dyn $crate::JobQueue {
                    self
                }

                fn outbox(&self) -> &dyn $crate::Outbox {
                    self
                }

                fn journal(&self) -> &dyn $crate::Journal {
                    self
                }

                fn webhooks(&self) -> &dyn $crate::WebhookStore {
                    self
                }

                fn holds(&self) -> &dyn $crate::StockHolds {
                    self
                }

                fn subscriptions(&self) -> &dyn $crate::Subscriptions {
                    self
                }

                async fn count_api_keys(&self) -> Result<i64> {
                    Ok(
                        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
                            .fetch_one(&self.read)
                            .await?,
                    )
                }

                async fn insert_api_key(&self, key: &NewApiKey) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO api_keys (id, hash, scope, name, created_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(key.id.as_str())
                    .bind(&key.hash)
                    .bind(key.scope.as_str())
                    .bind(&key.name)
                    .bind(key.created_at)
                    .execute(&self.write)
                    .await?;
                    Ok(())
                }

                async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
                    let row: Option<(String, String, String)> =
                        sqlx::query_as("SELECT id, scope, name FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
                            .bind(hash)
                            .fetch_optional(&self.read)
                            .await?;
                    row.map(api_key_record).transpose()
                }

                async fn create_product(&self, product: &NewProduct) -> Result<Product> {
                    let mut tx = begin_write(&self.write).await?;
                    let row: ProductRow = sqlx::query_as(
                        "INSERT INTO products (sku, name, price_amount, currency, created_at) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING sku, name, price_amount, currency, created_at",
                    )
                    .bind(product.sku.as_str())
                    .bind(&product.name)
                    .bind(product.price.amount())
                    .bind(product.price.currency().code())
                    .bind(product.created_at)
                    .fetch_one(&mut *tx)
                    .await?;
                    catalogue::insert_stock(&mut tx, &product.sku, product.on_hand).await?;
                    tx.commit().await?;
                    Product::try_from(row)
                }

                async fn get_products(&self, skus: &[Sku]) -> Result<Vec<Product>> {
                    let rows = catalogue::get_products(&self.read, skus).await?;
                    rows.into_iter().map(Product::try_from).collect()
                }

                async fn get_inventory(&self, sku: &Sku) -> Result<Option<InventoryLevel>> {
                    let row: (Option<i64>, i64) = sqlx::query_as(concat!(
                        "SELECT (SELECT sum(available) FROM stock_buckets WHERE sku = $1), ",
                        reserved_units!()
                    ))
                    .bind(sku.as_str())
                    .fetch_one(&self.read)
                    .await?;
                    Ok(row.0.map(|available| InventoryLevel {
                        on_hand: available + row.1,
                        reserved: row.1,
                        available,
                    }))
                }

                /// Sets on-hand levels. The batch id is claimed first: a batch
                /// seen before, or being applied by a concurrent call (which
                /// this one then waits for), replays its first outcome. Each
                /// SKU's available stock is its new level less the units held
                /// by reservations and stock holds.
                async fn sync_inventory(&self, batch: &InventoryBatch) -> Result<SyncOutcome> {
                    let mut tx = begin_write(&self.write).await?;
                    let claimed = sqlx::query(
                        "INSERT INTO inventory_sync_batches (batch_id, outcome, created_at) VALUES ($1, '', $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&batch.batch_id)
                    .bind(batch.received_at)
                    .execute(&mut *tx)
                    .await?;
                    if claimed.rows_affected() == 0 {
                        let stored: String =
                            sqlx::query_scalar("SELECT outcome FROM inventory_sync_batches WHERE batch_id = $1")
                                .bind(&batch.batch_id)
                                .fetch_one(&mut *tx)
                                .await?;
                        return $crate::rows::replayed(&stored);
                    }
                    let mut outcome = SyncOutcome {
                        batch_id: batch.batch_id.clone(),
                        updated: vec![],
                        unknown: vec![],
                        replayed: false,
                    };
                    for (sku, on_hand) in catalogue::in_lock_order(&batch.levels).iter() {
                        if catalogue::set_on_hand(&mut tx, sku, *on_hand).await? {
                            outcome.updated.push(sku.to_string());
                        } else {
                            outcome.unknown.push(sku.to_string());
                        }
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

                async fn place_order(&self, order: &NewOrder) -> Result<Order, PlaceOrderError> {
                    let mut tx = begin_write(&self.write).await?;
                    let placed = orders::insert_order(&mut tx, order, true).await?;
                    tx.commit().await?;
                    Ok(placed)
                }

                async fn accept_order(&self, order: &NewOrder, jobs: &[$crate::NewJob]) -> Result<Order, PlaceOrderError> {
                    let mut tx = begin_write(&self.write).await?;
                    let accepted = orders::insert_order(&mut tx, order, false).await?;
                    for job in jobs {
                        queue::enqueue_in_tx(&mut tx, job).await?;
                    }
                    tx.commit().await?;
                    Ok(accepted)
                }

                async fn reserve_accepted(
                    &self,
                    order_id: &OrderId,
                    expires_at: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<Order, PlaceOrderError> {
                    let mut tx = begin_write(&self.worker).await?;
                    let order = Self::order_to_change(&mut tx, order_id).await?;
                    if order.status != OrderStatus::Accepted {
                        return Ok(order);
                    }
                    let resume = ResumeAccepted {
                        expires_at,
                        now,
                        reserve: true,
                        cause: "stock reserved",
                    };
                    let order = Self::resume_accepted(&mut tx, order, &resume).await?;
                    tx.commit().await?;
                    Ok(order)
                }

                async fn attach_payment_intent(&self, order_id: &OrderId, intent: &PaymentIntentRef) -> Result<()> {
                    sqlx::query("UPDATE orders SET payment_intent_id = $2, client_secret = $3 WHERE id = $1")
                        .bind(order_id.as_str())
                        .bind(&intent.intent_id)
                        .bind(&intent.client_secret)
                        .execute(&self.write)
                        .await?;
                    Ok(())
                }

                async fn transition_order(&self, change: &StatusChange) -> Result<TransitionOutcome> {
                    let mut tx = begin_write(&self.worker).await?;
                    let outcome = Self::transition_in_tx(&mut tx, change).await?;
                    tx.commit().await?;
                    Ok(outcome)
                }

                /// Several status changes in one write transaction: one commit
                /// (and on SQLite one wait for its writer) for the batch, in the
                /// order `orders::in_lock_order` gives. A change that cannot
                /// apply (unknown order, illegal transition) is refused before
                /// it writes anything, so it leaves the others alone; a database
                /// error fails the whole batch.
                async fn transition_orders(&self, changes: &[StatusChange]) -> Result<Vec<Result<TransitionOutcome>>> {
                    let mut outcomes: Vec<Option<Result<TransitionOutcome>>> = (0..changes.len()).map(|_| None).collect();
                    let mut tx = begin_write(&self.worker).await?;
                    for i in orders::in_lock_order(changes) {
                        match Self::transition_in_tx(&mut tx, &changes[i]).await {
                            Err(error @ (StoreError::NotFound(_) | StoreError::InvalidTransition(_))) => {
                                outcomes[i] = Some(Err(error))
                            }
                            Err(other) => return Err(other),
                            Ok(outcome) => outcomes[i] = Some(Ok(outcome)),
                        }
                    }
                    tx.commit().await?;
                    Ok(outcomes.into_iter().flatten().collect())
                }

                async fn get_order(&self, id: &OrderId) -> Result<Option<Order>> {
                    let row: Option<OrderRow> =
                        sqlx::query_as(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1"))
                            .bind(id.as_str())
                            .fetch_optional(&self.read)
                            .await?;
                    row.map(Order::try_from).transpose()
                }

                async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
                    let rows: Vec<OrderRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        order_columns!(),
                        " FROM orders WHERE ($1 IS NULL OR email = $1) AND ($2 IS NULL OR status = $2) ",
                        "AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
                    ))
                    .bind(filter.email.as_ref().map(|e| e.as_str()))
                    .bind(filter.status.map(OrderStatus::as_str))
                    .bind(filter.before.as_ref().map(OrderId::as_str))
                    .bind(filter.limit)
                    .fetch_all(&self.read)
                    .await?;
                    $crate::rows::orders(rows)
                }

                async fn order_events(&self, id: &OrderId) -> Result<Vec<OrderEvent>> {
                    let rows: Vec<OrderEventRow> = sqlx::query_as(
                        "SELECT seq, from_status, to_status, cause, at FROM order_events WHERE order_id = $1 ORDER BY seq",
                    )
                    .bind(id.as_str())
                    .fetch_all(&self.read)
                    .await?;
                    rows.into_iter().map(OrderEvent::try_from).collect()
                }

                /// Two selects, so the first keeps to the partial index on
                /// orders awaiting payment; failed checkouts waiting for their
                /// retry are few, found by the `accepted` status and the
                /// timeline entry that brought them back there.
                async fn expired_orders(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>> {
                    let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                        "SELECT id, expires_at FROM orders WHERE status = 'pending_payment' AND expires_at < $1 \
                         UNION ALL \
                         SELECT id, expires_at FROM orders WHERE status = 'accepted' AND expires_at < $1 \
                           AND EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = orders.id \
                             AND e.from_status = 'pending_payment' AND e.to_status = 'accepted') \
                         ORDER BY expires_at LIMIT $2",
                    )
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.$worker_reads)
                    .await?;
                    Ok(rows.into_iter().map(|(id, _)| OrderId::from_trusted(id)).collect())
                }

                /// Kept to the partial index on orders awaiting payment,
                /// which are few at any moment.
                async fn stalled_checkouts(&self, placed_before: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>> {
                    let ids: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM orders WHERE status = 'pending_payment' AND payment_intent_id IS NULL \
                           AND created_at < $1 ORDER BY created_at LIMIT $2",
                    )
                    .bind(placed_before)
                    .bind(limit)
                    .fetch_all(&self.$worker_reads)
                    .await?;
                    Ok(ids.into_iter().map(OrderId::from_trusted).collect())
                }

                async fn search_customers(&self, query: &str, limit: i64) -> Result<Vec<Customer>> {
                    let rows: Vec<CustomerRow> = sqlx::query_as(
                        "SELECT id, email, name, created_at FROM customers \
                         WHERE lower(name) LIKE $1 ESCAPE '\\' OR email LIKE $1 ESCAPE '\\' ORDER BY email LIMIT $2",
                    )
                    .bind($crate::rows::like_pattern(query))
                    .bind(limit)
                    .fetch_all(&self.read)
                    .await?;
                    Ok(rows.into_iter().map(Customer::from).collect())
                }

                async fn order_counts(&self) -> Result<Vec<(OrderStatus, i64)>> {
                    let rows: Vec<(String, i64)> =
                        sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status")
                            .fetch_all(&self.read)
                            .await?;
                    rows.into_iter()
                        .map(|(status, n)| Ok(($crate::error::parse_status(&status)?, n)))
                        .collect()
                }

                async fn record_inbox_event(&self, event: &InboxEvent) -> Result<bool> {
                    let inserted = sqlx::query(
                        "INSERT INTO payment_inbox (event_id, event_type, payload, received_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&event.id)
                    .bind(&event.event_type)
                    .bind(&event.payload)
                    .bind(event.received_at)
                    .execute(&self.write)
                    .await?;
                    Ok(inserted.rows_affected() == 1)
                }

                async fn pending_inbox_events(&self, limit: i64) -> Result<Vec<InboxEvent>> {
                    let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
                        "SELECT event_id, event_type, payload, received_at FROM payment_inbox \
                         WHERE processed_at IS NULL ORDER BY received_at LIMIT $1",
                    )
                    .bind(limit)
                    .fetch_all(&self.$worker_reads)
                    .await?;
                    Ok(rows.into_iter().map(inbox_event).collect())
                }
            }

            impl $store {
                /// The order `id` as stored, locked for the rest of `tx` where
                /// the backend locks rows.
                async fn order_to_change(tx: &mut $tx, id: &OrderId) -> Result<Order> {
                    let row: Option<OrderRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        order_columns!(),
                        " FROM orders WHERE id = $1",
                        $for_update
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&mut **tx)
                    .await?;
                    Order::try_from(row.ok_or_else(|| StoreError::NotFound(id.to_string()))?)
                }

                /// Moves an `accepted` order (read in `tx`) to `pending_payment`
                /// with its new payment deadline, reserving its stock first when
                /// `resume.reserve` (all or nothing).
                async fn resume_accepted(
                    tx: &mut $tx,
                    mut order: Order,
                    resume: &ResumeAccepted,
                ) -> Result<Order, PlaceOrderError> {
                    if resume.reserve {
                        orders::reserve_lines(tx, &order.id, &stored_lines(&order)?).await?;
                    }
                    order.status = order
                        .status
                        .transition(OrderStatus::PendingPayment)
                        .map_err(StoreError::from)?;
                    order.expires_at = Some(resume.expires_at);
                    order.updated_at = resume.now;
                    let write = StatusWrite {
                        order_id: &order.id,
                        from: Some(OrderStatus::Accepted),
                        to: OrderStatus::PendingPayment,
                        cause: resume.cause,
                        at: resume.now,
                        tracking_number: None,
                        expires_at: Some(resume.expires_at),
                        payload: order_event_payload(&order),
                    };
                    orders::write_change(tx, &write).await?;
                    Ok(order)
                }

                /// Checks the change against the order as stored, then writes
                /// it. Every refusal comes before the first write.
                async fn transition_in_tx(tx: &mut $tx, change: &StatusChange) -> Result<TransitionOutcome> {
                    let mut order = Self::order_to_change(tx, &change.order_id).await?;
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
                    Self::apply_stock_effect(tx, &change.order_id, change.to).await?;
                    let write = StatusWrite {
                        order_id: &change.order_id,
                        from: Some(from),
                        to: change.to,
                        cause: &change.cause,
                        at: change.at,
                        tracking_number: change.tracking_number.as_deref(),
                        expires_at: change.expires_at,
                        payload: order_event_payload(&order),
                    };
                    orders::write_change(tx, &write).await?;
                    for job in &change.enqueue {
                        queue::enqueue_in_tx(tx, job).await?;
                    }
                    Ok(TransitionOutcome::Changed { from, to: change.to })
                }

                /// What entering `to` does to the order's reserved stock.
                async fn apply_stock_effect(tx: &mut $tx, order_id: &OrderId, to: OrderStatus) -> Result<()> {
                    let mark = match to {
                        OrderStatus::Paid => {
                            "UPDATE stock_reservations SET status = 'committed' WHERE order_id = $1 AND status = 'held'"
                        }
                        OrderStatus::Shipped => {
                            "UPDATE stock_reservations SET status = 'consumed' WHERE order_id = $1 AND status = 'committed'"
                        }
                        // An order goes back to `accepted` only from `pending_payment`,
                        // when its checkout failed and waits for its client's retry.
                        OrderStatus::PaymentFailed
                        | OrderStatus::Cancelled
                        | OrderStatus::Rejected
                        | OrderStatus::Accepted => {
                            return orders::release_stock(tx, order_id).await;
                        }
                        OrderStatus::PendingPayment | OrderStatus::Fulfilling => return Ok(()),
                    };
                    sqlx::query(mark).bind(order_id.as_str()).execute(&mut **tx).await?;
                    Ok(())
                }
            }
        };
    };
}
