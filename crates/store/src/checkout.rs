//! Checkout's own writes: two write transactions per order, with the
//! idempotency key in both, so a retry after a crash anywhere resumes from
//! the key.
//!
//! - [`Checkouts::begin`] claims the idempotency key and writes the order
//!   (its reservation, first timeline entry and outbox event) in one
//!   transaction. The key and the order commit together, so a key that is
//!   in progress always names an order that exists, and a retry that takes
//!   the key over resumes that order instead of placing a second one.
//! - Then the caller calls the payment provider, outside any transaction.
//! - [`Checkouts::finish`] writes the intent (or the job that creates it
//!   later) and the answer stored for the key, in one transaction.
//!
//! An order taken for later (`accepted`) is one transaction: `begin` with
//! its job and its answer. A retryable failure after `begin` committed gives
//! the order's stock back and opens the key for the client's retry at once
//! ([`Checkouts::reopen`]); the key stays bound to the order, so the retry
//! resumes it.
//!
//! Both backends run the same SQL ([`impl_checkouts!`]): claiming a key is
//! an insert, and only when the key exists a read and a compare-and-set on
//! its lease, so no row stays locked while a request decides (on
//! PostgreSQL a second request with the same key waits only for the first
//! one's `begin` to commit). What differs is the order's own write, in each
//! backend's `orders.rs`, and `FOR UPDATE` on a resumed order (PostgreSQL).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::error::PlaceOrderError;
use crate::model::{
    IdempotencyBegin, IdempotentRequest, NewOrder, Order, PaymentIntentRef, StatusChange, StoredResponse,
};
use crate::{NewJob, TransitionOutcome};

/// Where a new order's stock comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stock {
    /// Reserved in this database, all or nothing, in the same transaction.
    Reserve,
    /// Touch no stock table: the order is taken for later (`accepted`), so
    /// a locked reservations table cannot stop it, or a remote inventory
    /// node holds its stock.
    Untouched,
}

/// Renders the answer stored for the key of an order `begin` writes and
/// completes at once (a `202` for an order taken for later).
pub type Answer<'a> = &'a (dyn Fn(&Order) -> StoredResponse + Send + Sync);

/// The first write transaction of a checkout.
pub struct CheckoutStart<'a> {
    /// The key; its `resource_id` is `order.id`.
    pub key: &'a IdempotentRequest,
    pub order: &'a NewOrder,
    pub stock: Stock,
    /// Enqueued with a new order (the job that completes an accepted one).
    pub jobs: &'a [NewJob],
    /// Set when this transaction completes the request: the key is stored
    /// as done with this answer for the order written.
    pub answer: Option<Answer<'a>>,
}

/// What `begin` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutBegin {
    /// The key's first request: the order is written.
    Placed(Order),
    /// The key was in progress and its lease had run out (the first attempt
    /// crashed, or failed and opened the key for a retry): its order, as
    /// stored. An `accepted` order is brought to the new order's status
    /// (`pending_payment`: its stock reserved, or held elsewhere) on the way.
    Resumed(Order),
    /// Answered before: the stored answer.
    Replay(StoredResponse),
    /// Another request with the key is running.
    InProgress,
    /// Same key, different request body.
    Mismatch,
}

/// The second write transaction of a checkout.
pub struct CheckoutFinish<'a> {
    pub scope: &'a str,
    pub key: &'a str,
    pub order_id: &'a holdfast_domain::OrderId,
    /// The intent the provider created.
    pub intent: Option<&'a PaymentIntentRef>,
    /// Work left for later (the job that creates the intent once the
    /// provider answers).
    pub jobs: &'a [NewJob],
    pub answer: &'a StoredResponse,
}

/// Checkout's writes; see the module's docs.
#[async_trait]
pub trait Checkouts: Send + Sync {
    /// Claims `start.key` and, for its first request (or a taken-over key
    /// whose order was never written, which is bound to this one), writes
    /// `start.order` with its stock, jobs and answer; all in one transaction
    /// on the write pool. A taken-over key whose order exists resumes it.
    /// Out of stock or an unknown SKU rolls everything back, the key too.
    async fn begin(&self, start: &CheckoutStart<'_>) -> Result<CheckoutBegin, PlaceOrderError>;
    /// Writes the intent and the jobs, and stores the answer for the key, in
    /// one transaction.
    async fn finish(&self, finish: &CheckoutFinish<'_>) -> Result<()>;
    /// After a retryable failure: applies `change`, if any (the order back
    /// to `accepted`, its stock returned), and opens the key for a retry at
    /// `at`, in one transaction. The key stays bound to the order.
    async fn reopen(
        &self,
        scope: &str,
        key: &str,
        change: Option<&StatusChange>,
        at: DateTime<Utc>,
    ) -> Result<Option<TransitionOutcome>>;
    /// What a request with this key would find, read without writing: the
    /// id an order would get (`New`), or the key's answer or state.
    async fn peek(&self, key: &IdempotentRequest) -> Result<IdempotencyBegin>;
    /// Stores a final failure (a `4xx`) as the key's answer: a new key, or
    /// one still in progress for the same request body. The key's order, if
    /// it is `accepted` (a retry that found its stock gone), is rejected in
    /// the same transaction, with `cause`.
    async fn record_failure(&self, key: &IdempotentRequest, answer: &StoredResponse, cause: &str) -> Result<()>;
    /// Claims `key` in a transaction of its own, for a request that makes
    /// some other resource (a subscription): `New` with the id to make it
    /// with (a retry after a crash gets the same id back), or the key's
    /// answer or state.
    async fn claim_key(&self, key: &IdempotentRequest) -> Result<IdempotencyBegin>;
    /// Stores `answer` for a key claimed with `claim_key`.
    async fn complete_key(&self, scope: &str, key: &str, answer: &StoredResponse) -> Result<()>;
    /// Forgets a key claimed with `claim_key` while it is still in progress,
    /// so the client's retry runs again.
    async fn release_key(&self, scope: &str, key: &str) -> Result<()>;
}

/// How claiming a key went.
pub(crate) enum Claimed {
    /// The key's first request.
    Fresh,
    /// A stale claim taken over: the resource id it is bound to.
    TakenOver(String),
    /// Nothing to write: the key's answer or state.
    Decided(IdempotencyBegin),
}

/// `Checkouts` for a backend's store. Besides what every backend provides
/// (see the crate's docs) it calls the backend's `orders::insert_order`,
/// `queue::enqueue_in_tx` and the inherent helpers `impl_store!` writes
/// (`resume_accepted`, `transition_in_tx`). `for_update` locks a resumed
/// order where the backend locks rows.
macro_rules! impl_checkouts {
    ($store:ty, tx: $tx:ty, for_update: $for_update:literal $(,)?) => {
        const _: () = {
            use holdfast_domain::OrderStatus;

            use $crate::Result;
            use chrono::{DateTime, Utc};

            use $crate::checkout::{CheckoutBegin, CheckoutFinish, CheckoutStart, Claimed, Stock};
            use $crate::error::PlaceOrderError;
            use $crate::model::{IdempotencyBegin, IdempotentRequest, Order, StatusChange, StoredResponse};
            use $crate::rows::{IdempotencyRow, OrderRow};
            use $crate::store_impl::ResumeAccepted;

            const KEY_ROW: &str = "SELECT request_hash, resource_id, state, response_status, response_body, locked_until \
                                   FROM idempotency_keys WHERE scope = $1 AND key = $2";

            /// Claims the key: an insert for its first request; otherwise
            /// the stored decision, and a stale claim taken over with a
            /// compare-and-set on its lease (another retry may just have).
            async fn claim(tx: &mut $tx, key: &IdempotentRequest) -> Result<Claimed> {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, state, created_at, locked_until) \
                     VALUES ($1, $2, $3, $6, 'in_progress', $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&key.scope)
                .bind(&key.key)
                .bind(&key.request_hash)
                .bind(key.now)
                .bind(key.now + key.lease)
                .bind(&key.resource_id)
                .execute(&mut **tx)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(Claimed::Fresh);
                }
                let row: Option<IdempotencyRow> = sqlx::query_as(KEY_ROW)
                    .bind(&key.scope)
                    .bind(&key.key)
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(row) = row else {
                    // Removed between the insert and the read: try again.
                    return Ok(Claimed::Decided(IdempotencyBegin::InProgress));
                };
                let id = match row.decide(key) {
                    IdempotencyBegin::New(id) => id,
                    decided => return Ok(Claimed::Decided(decided)),
                };
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET locked_until = $3 WHERE scope = $1 AND key = $2 \
                     AND state = 'in_progress' AND locked_until <= $4",
                )
                .bind(&key.scope)
                .bind(&key.key)
                .bind(key.now + key.lease)
                .bind(key.now)
                .execute(&mut **tx)
                .await?;
                Ok(if taken.rows_affected() == 1 {
                    Claimed::TakenOver(id)
                } else {
                    Claimed::Decided(IdempotencyBegin::InProgress)
                })
            }

            /// Binds the key to the order of `key.resource_id`.
            async fn rebind(tx: &mut $tx, key: &IdempotentRequest) -> Result<()> {
                sqlx::query("UPDATE idempotency_keys SET resource_id = $3 WHERE scope = $1 AND key = $2")
                    .bind(&key.scope)
                    .bind(&key.key)
                    .bind(&key.resource_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            impl $store {
                /// A taken-over key's order, brought to the new order's
                /// status when it is `accepted` and the new order is not (a
                /// retry of a checkout that failed: reserve again).
                async fn resume(tx: &mut $tx, order: Order, start: &CheckoutStart<'_>) -> Result<Order, PlaceOrderError> {
                    if order.status != OrderStatus::Accepted || start.order.status != OrderStatus::PendingPayment {
                        return Ok(order);
                    }
                    let cause = match start.stock {
                        Stock::Reserve => "checkout retried: stock reserved",
                        Stock::Untouched => "checkout retried: stock held by the inventory node",
                    };
                    let resume = ResumeAccepted {
                        expires_at: start.order.expires_at,
                        now: start.order.now,
                        reserve: start.stock == Stock::Reserve,
                        cause,
                    };
                    Self::resume_accepted(tx, order, &resume).await
                }
            }

            /// Stores `answer` as the key's final answer.
            async fn answer_key(tx: &mut $tx, scope: &str, key: &str, answer: &StoredResponse) -> Result<()> {
                sqlx::query(
                    "UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4 \
                     WHERE scope = $1 AND key = $2",
                )
                .bind(scope)
                .bind(key)
                .bind(i32::from(answer.status))
                .bind(&answer.body)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// The order `id`, locked where the backend locks rows.
            async fn existing_order(tx: &mut $tx, id: &str) -> Result<Option<Order>> {
                let row: Option<OrderRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    order_columns!(),
                    " FROM orders WHERE id = $1",
                    $for_update
                ))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
                row.map(Order::try_from).transpose()
            }

            #[async_trait::async_trait]
            impl $crate::checkout::Checkouts for $store {
                async fn begin(&self, start: &CheckoutStart<'_>) -> Result<CheckoutBegin, PlaceOrderError> {
                    let mut tx = begin_write(&self.write).await?;
                    match claim(&mut tx, start.key).await? {
                        Claimed::Fresh => {}
                        Claimed::TakenOver(id) => {
                            if let Some(order) = existing_order(&mut tx, &id).await? {
                                let order = Self::resume(&mut tx, order, start).await?;
                                tx.commit().await?;
                                return Ok(CheckoutBegin::Resumed(order));
                            }
                            if id != start.order.id.as_str() {
                                // A first attempt that wrote its key but no
                                // order: the key takes this request's order.
                                rebind(&mut tx, start.key).await?;
                            }
                        }
                        Claimed::Decided(IdempotencyBegin::Replay(answer)) => return Ok(CheckoutBegin::Replay(answer)),
                        Claimed::Decided(IdempotencyBegin::Mismatch) => return Ok(CheckoutBegin::Mismatch),
                        Claimed::Decided(_) => return Ok(CheckoutBegin::InProgress),
                    }
                    let placed = orders::insert_order(&mut tx, start.order, start.stock == Stock::Reserve).await?;
                    for job in start.jobs {
                        queue::enqueue_in_tx(&mut tx, job).await?;
                    }
                    if let Some(answer) = start.answer {
                        answer_key(&mut tx, &start.key.scope, &start.key.key, &answer(&placed)).await?;
                    }
                    tx.commit().await?;
                    Ok(CheckoutBegin::Placed(placed))
                }

                async fn finish(&self, finish: &CheckoutFinish<'_>) -> Result<()> {
                    let mut tx = begin_write(&self.write).await?;
                    if let Some(intent) = finish.intent {
                        sqlx::query("UPDATE orders SET payment_intent_id = $2, client_secret = $3 WHERE id = $1")
                            .bind(finish.order_id.as_str())
                            .bind(&intent.intent_id)
                            .bind(&intent.client_secret)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for job in finish.jobs {
                        queue::enqueue_in_tx(&mut tx, job).await?;
                    }
                    answer_key(&mut tx, finish.scope, finish.key, finish.answer).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn reopen(
                    &self,
                    scope: &str,
                    key: &str,
                    change: Option<&StatusChange>,
                    at: DateTime<Utc>,
                ) -> Result<Option<$crate::TransitionOutcome>> {
                    let mut tx = begin_write(&self.write).await?;
                    let outcome = match change {
                        Some(change) => Some(Self::transition_in_tx(&mut tx, change).await?),
                        None => None,
                    };
                    sqlx::query(
                        "UPDATE idempotency_keys SET locked_until = $3 WHERE scope = $1 AND key = $2 AND state = 'in_progress'",
                    )
                    .bind(scope)
                    .bind(key)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(outcome)
                }

                async fn peek(&self, key: &IdempotentRequest) -> Result<IdempotencyBegin> {
                    let row: Option<IdempotencyRow> = sqlx::query_as(KEY_ROW)
                        .bind(&key.scope)
                        .bind(&key.key)
                        .fetch_optional(&self.read)
                        .await?;
                    Ok(row.map_or_else(|| IdempotencyBegin::New(key.resource_id.clone()), |row| row.decide(key)))
                }

                async fn claim_key(&self, key: &IdempotentRequest) -> Result<IdempotencyBegin> {
                    let mut tx = begin_write(&self.write).await?;
                    let decided = match claim(&mut tx, key).await? {
                        Claimed::Fresh => IdempotencyBegin::New(key.resource_id.clone()),
                        Claimed::TakenOver(id) => IdempotencyBegin::New(id),
                        Claimed::Decided(decided) => decided,
                    };
                    tx.commit().await?;
                    Ok(decided)
                }

                async fn complete_key(&self, scope: &str, key: &str, answer: &StoredResponse) -> Result<()> {
                    sqlx::query(
                        "UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4 \
                         WHERE scope = $1 AND key = $2",
                    )
                    .bind(scope)
                    .bind(key)
                    .bind(i32::from(answer.status))
                    .bind(&answer.body)
                    .execute(&self.write)
                    .await?;
                    Ok(())
                }

                async fn release_key(&self, scope: &str, key: &str) -> Result<()> {
                    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_progress'")
                        .bind(scope)
                        .bind(key)
                        .execute(&self.write)
                        .await?;
                    Ok(())
                }

                async fn record_failure(&self, key: &IdempotentRequest, answer: &StoredResponse, cause: &str) -> Result<()> {
                    let mut tx = begin_write(&self.write).await?;
                    let bound: Option<String> = sqlx::query_scalar(
                        "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, state, response_status, \
                           response_body, created_at, locked_until) VALUES ($1, $2, $3, $4, 'done', $5, $6, $7, $7) \
                         ON CONFLICT (scope, key) DO UPDATE SET state = 'done', \
                           response_status = excluded.response_status, response_body = excluded.response_body \
                         WHERE idempotency_keys.state = 'in_progress' AND idempotency_keys.request_hash = excluded.request_hash \
                         RETURNING resource_id",
                    )
                    .bind(&key.scope)
                    .bind(&key.key)
                    .bind(&key.request_hash)
                    .bind(&key.resource_id)
                    .bind(i32::from(answer.status))
                    .bind(&answer.body)
                    .bind(key.now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(order_id) = bound
                        && let Some(order) = existing_order(&mut tx, &order_id).await?
                        && order.status == OrderStatus::Accepted
                    {
                        let change = StatusChange::new(order.id, OrderStatus::Rejected, cause, key.now);
                        Self::transition_in_tx(&mut tx, &change).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
            }
        };
    };
}
