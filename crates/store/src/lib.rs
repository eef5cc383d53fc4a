//! Holdfast's storage: one trait surface ([`Store`]) with a PostgreSQL and a
//! SQLite implementation, and the migrations of each backend.
//!
//! Callers see domain types and [`StoreError`]; nothing above this crate
//! writes SQL. Each implementation owns three pools (reads, checkout writes,
//! background workers) so that a stuck write path never starves reads.
//!
//! # One SQL text for both backends
//!
//! SQL that is the same on both backends is written once, in the resource's
//! module (`journal.rs`, `outbox.rs`, …), inside an `impl_<trait>!` macro
//! that each backend expands for its own store type (`impl_journal!(PgStore)`
//! in `postgres/mod.rs`). Placeholders are `$N` on both: sqlx binds them by
//! position on SQLite too. The macro's body is type-checked once per backend,
//! so each expansion uses that backend's pools, transaction type and row
//! decoding with no generic bounds to spell out. Names the body does not
//! qualify with `$crate::` resolve where it is expanded; each backend's
//! `mod.rs` provides the same few:
//!
//! - the pools `self.read`, `self.write` and `self.worker`;
//! - `begin_write(&pool)`: a write transaction (`BEGIN IMMEDIATE` on SQLite,
//!   timeouts from the request's deadline on PostgreSQL);
//! - anything truly per backend, passed to the macro as an argument (a SQL
//!   fragment, a helper function) or kept in the backend's own file.
//!
//! What stays per backend, and why: connecting and pool settings,
//! migrations and their status, stock (buckets claimed `SKIP LOCKED` on
//! PostgreSQL, `take_stock` against SQLite's one writer), the queue's claim
//! query, the relay's lock and sequence gaps (PostgreSQL commits out of
//! sequence order; SQLite cannot), array binds (`= ANY($1)` vs `json_each`).

#[macro_use]
mod rows;
#[macro_use]
mod outbox;
#[macro_use]
mod webhooks;
#[macro_use]
mod holds;
#[macro_use]
mod journal;
#[macro_use]
mod store_impl;
#[macro_use]
mod subscriptions;
#[macro_use]
mod checkout;
mod connect;
pub mod deadline;
mod error;
pub mod model;
mod postgres;
mod queue;
pub mod scratch;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, Sku};

pub use checkout::{Answer, CheckoutBegin, CheckoutFinish, CheckoutStart, Checkouts, Stock};
pub use connect::{Backend, ConnectOptions, PgBouncer, PoolOptions, Pools, connect, describe_target};
pub use error::{PlaceOrderError, StoreError};
pub use holds::{Hold, HoldAction, HoldStatus, NewHold, StockHolds};
pub use journal::{Journal, JournalEntry, JournalQuery, NewJournalEntry};
pub use model::*;
pub use outbox::{Outbox, OutboxEvent, OutboxLag, RelayOptions, RelayOutcome};
pub use queue::*;
pub use subscriptions::{
    AttemptFailed, Charge, ChargeFailure, ChargeRecorded, ChargeStart, ChargeStatus, Creator, DueCharge, FailedAttempt,
    FailedPeriod, LedgerEntry, NewCreator, NewPlan, NewSubscription, PeriodStatus, Plan, PlanPrice, SettlementBatch,
    Subscription, SubscriptionChange, SubscriptionEventRecord, SubscriptionFilter, SubscriptionPeriod, Subscriptions,
    TestClock, payment_job_key,
};
pub use webhooks::{
    AttemptOutcome, DeliveryStatus, DeliveryWork, NewWebhookEndpoint, Replay, WebhookAttempt, WebhookDelivery,
    WebhookEndpoint, WebhookStore,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything Holdfast keeps. Implemented by `PgStore` and `SqliteStore`; the
/// integration suite runs every behaviour against both.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Applies pending migrations (PostgreSQL serialises concurrent callers
    /// with an advisory lock).
    async fn migrate(&self) -> Result<()>;
    async fn migration_status(&self) -> Result<MigrationStatus>;
    /// One round trip on the read pool.
    async fn ping(&self) -> Result<()>;
    /// In use and maximum connections of each pool, for metrics and shedding.
    fn pool_usage(&self) -> Vec<PoolUsage>;
    /// Checkout's two write transactions and its idempotency keys (see
    /// `Checkouts`).
    fn checkouts(&self) -> &dyn Checkouts;
    /// The durable job queue, in the same database (see `JobQueue`).
    fn queue(&self) -> &dyn JobQueue;
    /// The transactional outbox's relay side (see `Outbox`).
    fn outbox(&self) -> &dyn Outbox;
    /// The operational event journal (breaker transitions, …).
    fn journal(&self) -> &dyn Journal;
    /// Partner webhook endpoints and their delivery log.
    fn webhooks(&self) -> &dyn WebhookStore;
    /// The inventory node's stock holds (see `StockHolds`).
    fn holds(&self) -> &dyn StockHolds;
    /// Creator subscriptions, their renewals and settlement (see `Subscriptions`).
    fn subscriptions(&self) -> &dyn Subscriptions;

    async fn count_api_keys(&self) -> Result<i64>;
    async fn insert_api_key(&self, key: &NewApiKey) -> Result<()>;
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;

    /// Creates a product and its initial stock; `Conflict` if the SKU exists.
    async fn create_product(&self, product: &NewProduct) -> Result<Product>;
    async fn get_products(&self, skus: &[Sku]) -> Result<Vec<Product>>;
    async fn get_inventory(&self, sku: &Sku) -> Result<Option<InventoryLevel>>;
    /// Sets on-hand levels; a batch id seen before replays its first outcome.
    async fn sync_inventory(&self, batch: &InventoryBatch) -> Result<SyncOutcome>;

    /// Reserves stock for every line (all or nothing) and writes the order,
    /// its first timeline entry and its outbox event in one transaction.
    async fn place_order(&self, order: &NewOrder) -> Result<Order, PlaceOrderError>;
    /// Writes an order without touching any stock table: its timeline and
    /// outbox rows and `jobs` in one transaction. For an order taken for
    /// asynchronous processing while its stock cannot be reserved now
    /// (status `accepted`, with the job that reserves later), so a locked
    /// reservations table does not stop it; and for an order whose stock a
    /// remote inventory node holds (status `pending_payment`, no jobs).
    async fn accept_order(&self, order: &NewOrder, jobs: &[NewJob]) -> Result<Order, PlaceOrderError>;
    /// Reserves the stock of an `accepted` order, all or nothing, and moves it
    /// to `pending_payment` with its reservation expiring at `expires_at`, in
    /// one transaction. An order no longer `accepted` comes back unchanged.
    async fn reserve_accepted(
        &self,
        order_id: &OrderId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Order, PlaceOrderError>;
    async fn attach_payment_intent(&self, order_id: &OrderId, intent: &PaymentIntentRef) -> Result<()>;
    /// Moves an order through `OrderStatus::transition`, applying the stock
    /// effect of the new state and writing the timeline and outbox rows.
    async fn transition_order(&self, change: &StatusChange) -> Result<TransitionOutcome>;
    /// Several `transition_order`s, each with its own outcome. A backend may
    /// write them in one transaction (SQLite does: one wait for its one
    /// writer); a change that cannot apply is refused without touching the
    /// others, and a database error fails the call.
    async fn transition_orders(&self, changes: &[StatusChange]) -> Result<Vec<Result<TransitionOutcome>>> {
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            match self.transition_order(change).await {
                Err(error @ (StoreError::NotFound(_) | StoreError::InvalidTransition(_))) => outcomes.push(Err(error)),
                Err(other) => return Err(other),
                Ok(outcome) => outcomes.push(Ok(outcome)),
            }
        }
        Ok(outcomes)
    }
    async fn get_order(&self, id: &OrderId) -> Result<Option<Order>>;
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>>;
    async fn order_events(&self, id: &OrderId) -> Result<Vec<OrderEvent>>;
    /// Orders whose reservation expired before `now`: awaiting payment, or
    /// back in `accepted` after a failed checkout that no retry resumed.
    async fn expired_orders(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>>;
    /// Checkouts that stopped between their two transactions: orders
    /// awaiting payment with no payment intent recorded, placed before
    /// `placed_before`, oldest first.
    async fn stalled_checkouts(&self, placed_before: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>>;
    async fn search_customers(&self, query: &str, limit: i64) -> Result<Vec<Customer>>;
    /// How many orders are in each status (absent statuses are omitted).
    async fn order_counts(&self) -> Result<Vec<(holdfast_domain::OrderStatus, i64)>>;

    /// Records a provider event once; `false` if its id was seen before.
    async fn record_inbox_event(&self, event: &InboxEvent) -> Result<bool>;
    async fn pending_inbox_events(&self, limit: i64) -> Result<Vec<InboxEvent>>;
    async fn mark_inbox_processed(&self, event_id: &str, outcome: &str) -> Result<()>;
    /// `mark_inbox_processed` for several events (id, outcome) in one
    /// transaction.
    async fn mark_inbox_processed_batch(&self, events: &[(String, String)]) -> Result<()>;
}

pub type SharedStore = Arc<dyn Store>;
