//! The SQLite backend: the embedded default, so `holdfast serve` and
//! `holdfast demo` need nothing installed.
//!
//! SQLite has one writer at a time. Writes therefore go through a pool of one
//! connection that opens `BEGIN IMMEDIATE` transactions (taking the write lock
//! up front, so a read-then-write transaction never fails to upgrade), reads
//! through read-only connections that WAL lets run beside the writer.

mod catalogue;
mod holds;
mod orders;
mod outbox;
mod queue;
mod webhooks;

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, Sku};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

use crate::connect::{Backend, ConnectOptions, describe_target};
use crate::error::{PlaceOrderError, StoreError};
use crate::model::*;
use crate::rows::{IdempotencyRow, api_key_record, inbox_event};
use crate::{Result, Store};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    worker: SqlitePool,
}

impl SqliteStore {
    pub(crate) async fn connect(options: &ConnectOptions) -> Result<Self> {
        let target = describe_target(&options.url);
        let connect_error = |source| StoreError::Connect {
            target: target.clone(),
            source,
        };
        let base = SqliteConnectOptions::from_str(&options.url)
            .map_err(connect_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode loses no committed transaction on a process
            // crash, only on power loss, and saves an fsync per commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.lock_timeout)
            .foreign_keys(true);
        if let Some(parent) = Path::new(base.get_filename()).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| connect_error(sqlx::Error::Io(e)))?;
        }
        let probe = tokio::time::timeout(options.connect_timeout, SqliteConnection::connect_with(&base))
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the database file stayed locked",
                )))
            })?
            .map_err(connect_error)?;
        let _ = probe.close().await;
        let pool = |max: u32, acquire: std::time::Duration, opts: SqliteConnectOptions| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(acquire)
                .connect_lazy_with(opts)
        };
        let writer = pool(1, options.pools.write.acquire_timeout, base.clone());
        Ok(Self {
            read: pool(
                options.pools.read.max_connections,
                options.pools.read.acquire_timeout,
                base.clone().read_only(true),
            ),
            // One writing connection, shared by requests and workers: SQLite
            // has one writer, and two connections taking turns at its lock
            // wait in its busy handler, which sleeps in growing steps (up to
            // 100 ms), while waiters on one pool are served in order at once.
            write: writer.clone(),
            worker: writer,
        })
    }
}

fn usage(name: &'static str, pool: &SqlitePool) -> PoolUsage {
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    PoolUsage {
        pool: name,
        in_use: pool.size().saturating_sub(idle),
        max: pool.options().get_max_connections(),
    }
}

/// A write transaction that holds SQLite's write lock from its first statement.
pub(crate) async fn begin_write(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    // Within a request, the wait for SQLite's one writer ends at its deadline.
    crate::deadline::within(pool.begin_with("BEGIN IMMEDIATE")).await
}

impl_journal!(SqliteStore);
impl_subscriptions!(SqliteStore, sqlx::SqliteConnection, "");

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.write)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn migration_status(&self) -> Result<MigrationStatus> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
                .fetch_optional(&self.read)
                .await?;
        let applied = match exists {
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

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    fn queue(&self) -> &dyn crate::JobQueue {
        self
    }

    fn outbox(&self) -> &dyn crate::Outbox {
        self
    }

    fn journal(&self) -> &dyn crate::Journal {
        self
    }

    fn webhooks(&self) -> &dyn crate::WebhookStore {
        self
    }

    fn holds(&self) -> &dyn crate::StockHolds {
        self
    }

    fn subscriptions(&self) -> &dyn crate::Subscriptions {
        self
    }

    fn pool_usage(&self) -> Vec<PoolUsage> {
        vec![
            usage("read", &self.read),
            usage("write", &self.write),
            usage("worker", &self.worker),
        ]
    }

    async fn count_api_keys(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
                .fetch_one(&self.read)
                .await?,
        )
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> Result<()> {
        sqlx::query("INSERT INTO api_keys (id, hash, scope, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
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
            sqlx::query_as("SELECT id, scope, name FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL")
                .bind(hash)
                .fetch_optional(&self.read)
                .await?;
        row.map(api_key_record).transpose()
    }

    async fn create_product(&self, product: &NewProduct) -> Result<Product> {
        catalogue::create_product(&self.write, product).await
    }

    async fn get_products(&self, skus: &[Sku]) -> Result<Vec<Product>> {
        catalogue::get_products(&self.read, skus).await
    }

    async fn get_inventory(&self, sku: &Sku) -> Result<Option<InventoryLevel>> {
        catalogue::get_inventory(&self.read, sku).await
    }

    async fn sync_inventory(&self, batch: &InventoryBatch) -> Result<SyncOutcome> {
        catalogue::sync_inventory(&self.write, batch).await
    }

    async fn place_order(&self, order: &NewOrder) -> Result<Order, PlaceOrderError> {
        orders::place_order(&self.write, order).await
    }

    async fn accept_order(&self, order: &NewOrder, jobs: &[crate::NewJob]) -> Result<Order, PlaceOrderError> {
        orders::accept_order(&self.write, order, jobs).await
    }

    async fn reserve_accepted(
        &self,
        order_id: &OrderId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Order, PlaceOrderError> {
        orders::reserve_accepted(&self.worker, order_id, expires_at, now).await
    }

    async fn attach_payment_intent(&self, order_id: &OrderId, intent: &PaymentIntentRef) -> Result<()> {
        sqlx::query("UPDATE orders SET payment_intent_id = ?2, client_secret = ?3 WHERE id = ?1")
            .bind(order_id.as_str())
            .bind(&intent.intent_id)
            .bind(&intent.client_secret)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn transition_order(&self, change: &StatusChange) -> Result<TransitionOutcome> {
        orders::transition_order(&self.worker, change).await
    }

    async fn transition_orders(&self, changes: &[StatusChange]) -> Result<Vec<Result<TransitionOutcome>>> {
        orders::transition_orders(&self.worker, changes).await
    }

    async fn get_order(&self, id: &OrderId) -> Result<Option<Order>> {
        orders::get_order(&self.read, id).await
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        orders::list_orders(&self.read, filter).await
    }

    async fn order_events(&self, id: &OrderId) -> Result<Vec<OrderEvent>> {
        orders::order_events(&self.read, id).await
    }

    async fn expired_orders(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM orders WHERE status = 'pending_payment' AND expires_at < ?1 ORDER BY expires_at LIMIT ?2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(ids.into_iter().map(OrderId::from_trusted).collect())
    }

    async fn search_customers(&self, query: &str, limit: i64) -> Result<Vec<Customer>> {
        orders::search_customers(&self.read, query, limit).await
    }

    async fn order_counts(&self) -> Result<Vec<(holdfast_domain::OrderStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status")
                .fetch_all(&self.read)
                .await?;
        rows.into_iter()
            .map(|(status, n)| Ok((crate::error::parse_status(&status)?, n)))
            .collect()
    }

    async fn begin_idempotent(&self, request: &IdempotentRequest) -> Result<IdempotencyBegin> {
        let mut tx = begin_write(&self.write).await?;
        let row: Option<IdempotencyRow> = sqlx::query_as(
            "SELECT request_hash, resource_id, state, response_status, response_body, locked_until \
             FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
        )
        .bind(&request.scope)
        .bind(&request.key)
        .fetch_optional(&mut *tx)
        .await?;
        // The write lock is held, so read-decide-write cannot interleave with
        // another request for the same key.
        let decision = row.as_ref().map_or_else(
            || IdempotencyBegin::New(request.resource_id.clone()),
            |row| row.decide(request),
        );
        if let IdempotencyBegin::New(resource_id) = &decision {
            sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, state, created_at, locked_until) \
                 VALUES (?1, ?2, ?3, ?6, 'in_progress', ?4, ?5) \
                 ON CONFLICT (scope, key) DO UPDATE SET locked_until = excluded.locked_until",
            )
            .bind(&request.scope)
            .bind(&request.key)
            .bind(&request.request_hash)
            .bind(request.now)
            .bind(request.now + request.lease)
            .bind(resource_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }

    async fn complete_idempotent(&self, scope: &str, key: &str, response: &StoredResponse) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', response_status = ?3, response_body = ?4 \
             WHERE scope = ?1 AND key = ?2",
        )
        .bind(scope)
        .bind(key)
        .bind(i32::from(response.status))
        .bind(&response.body)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn release_idempotent(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND state = 'in_progress'")
            .bind(scope)
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn record_inbox_event(&self, event: &InboxEvent) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO payment_inbox (event_id, event_type, payload, received_at) VALUES (?1, ?2, ?3, ?4) \
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
             WHERE processed_at IS NULL ORDER BY received_at LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(inbox_event).collect())
    }

    async fn mark_inbox_processed(&self, event_id: &str, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE payment_inbox SET processed_at = ?3, outcome = ?2 WHERE event_id = ?1")
            .bind(event_id)
            .bind(outcome)
            .bind(Utc::now())
            .execute(&self.worker)
            .await?;
        Ok(())
    }

    async fn mark_inbox_processed_batch(&self, events: &[(String, String)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut tx = begin_write(&self.worker).await?;
        for (event_id, outcome) in events {
            sqlx::query("UPDATE payment_inbox SET processed_at = ?3, outcome = ?2 WHERE event_id = ?1")
                .bind(event_id)
                .bind(outcome)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
