//! The PostgreSQL backend: production, directly or through PgBouncer in
//! session or transaction mode. How connections start, how transactions
//! begin and why statements may be unnamed is in `pooling.rs`; everything
//! session-scoped is avoided, and the advisory locks are transaction-scoped.

mod catalogue;
mod holds;
mod migrate;
mod orders;
mod outbox;
mod pooling;
mod queue;
mod sequence;
mod webhooks;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, Sku};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};

use self::pooling::Settings;
pub(crate) use self::pooling::{Conn, Pool, Tx};
use crate::connect::{Backend, ConnectOptions, PgBouncer, PoolOptions, describe_target};
use crate::error::{PlaceOrderError, StoreError};
use crate::model::*;
use crate::rows::{IdempotencyRow, api_key_record, inbox_event};
use crate::{Result, Store};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

pub(crate) struct PgStore {
    read: Pool,
    write: Pool,
    worker: Pool,
    pgbouncer: PgBouncer,
}

impl PgStore {
    pub(crate) async fn connect(options: &ConnectOptions) -> Result<Self> {
        let target = describe_target(&options.url);
        let connect_error = |source| StoreError::Connect {
            target: target.clone(),
            source,
        };
        let connect_options = startup_options(options).map_err(connect_error)?;
        let probe = tokio::time::timeout(options.connect_timeout, PgConnection::connect_with(&connect_options))
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", options.connect_timeout.as_millis()),
                )))
            })?
            .map_err(connect_error)?;
        // The probe proved the URL works; close it politely, ignoring errors
        // since the pools will open their own connections.
        let _ = probe.close().await;
        let settings = Settings {
            pgbouncer: options.pgbouncer,
            statement_timeout: options.statement_timeout,
            lock_timeout: options.lock_timeout,
        };
        let pool = |pool: PoolOptions| {
            let mut builder = PgPoolOptions::new()
                .max_connections(pool.max_connections)
                .acquire_timeout(pool.acquire_timeout);
            if options.pgbouncer == PgBouncer::Session {
                // The server connection is this client's until it
                // disconnects, and PgBouncer's server_reset_query clears
                // the settings before anyone else gets it.
                let sql = session_timeouts(settings);
                builder = builder.after_connect(move |conn, _| {
                    let sql = sql.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                        Ok(())
                    })
                });
            }
            Pool::new(builder.connect_lazy_with(connect_options.clone()), settings)
        };
        Ok(Self {
            read: pool(options.pools.read),
            write: pool(options.pools.write),
            worker: pool(options.pools.worker),
            pgbouncer: options.pgbouncer,
        })
    }
}

/// What each connection sends at startup. PgBouncer accepts only the
/// parameters it tracks itself (application_name, client_encoding, DateStyle,
/// TimeZone, standard_conforming_strings) unless told to ignore others, so
/// behind it the timeouts (`options`) and `extra_float_digits` stay out; sqlx
/// reads floats in binary, which needs no extra digits.
fn startup_options(options: &ConnectOptions) -> std::result::Result<PgConnectOptions, sqlx::Error> {
    let base = PgConnectOptions::from_str(&options.url)?.application_name("holdfast");
    Ok(match options.pgbouncer {
        PgBouncer::Off => base.options([
            (
                "statement_timeout",
                format!("{}ms", options.statement_timeout.as_millis()),
            ),
            ("lock_timeout", format!("{}ms", options.lock_timeout.as_millis())),
        ]),
        PgBouncer::Session => base.extra_float_digits(None),
        // Statements are unnamed here (`pooling.rs`), so a cache would
        // only hold metadata sqlx never looks up.
        PgBouncer::Transaction => base.extra_float_digits(None).statement_cache_capacity(0),
    })
}

fn session_timeouts(settings: Settings) -> String {
    format!(
        "SET statement_timeout = {}; SET lock_timeout = {}",
        settings.statement_timeout.as_millis().max(1),
        settings.lock_timeout.as_millis().max(1)
    )
}

/// A transaction on `pool`, its timeouts set from the request's deadline
/// (`pooling.rs`). The shared SQL of both backends begins every write here.
pub(crate) async fn begin_write(pool: &Pool) -> Result<Tx> {
    pool.begin().await
}

fn usage(name: &'static str, pool: &Pool) -> PoolUsage {
    let pool = pool.sqlx();
    let max = pool.options().get_max_connections();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    PoolUsage {
        pool: name,
        in_use: pool.size().saturating_sub(idle),
        max,
    }
}

impl_journal!(PgStore);
impl_subscriptions!(PgStore, crate::postgres::Conn, " FOR UPDATE");

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        match self.pgbouncer {
            // sqlx's migrator holds a session-level advisory lock and names
            // its statements: behind transaction pooling, our own runner.
            PgBouncer::Transaction => migrate::run(&MIGRATOR, &self.worker).await,
            PgBouncer::Off | PgBouncer::Session => MIGRATOR
                .run(self.worker.sqlx())
                .await
                .map_err(|e| StoreError::Migration(e.to_string())),
        }
    }

    async fn migration_status(&self) -> Result<MigrationStatus> {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&self.read)
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
        sqlx::query("INSERT INTO api_keys (id, hash, scope, name, created_at) VALUES ($1, $2, $3, $4, $5)")
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
        sqlx::query("UPDATE orders SET payment_intent_id = $2, client_secret = $3 WHERE id = $1")
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
            "SELECT id FROM orders WHERE status = 'pending_payment' AND expires_at < $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.worker)
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
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, state, created_at, locked_until) \
             VALUES ($1, $2, $3, $6, 'in_progress', $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&request.scope)
        .bind(&request.key)
        .bind(&request.request_hash)
        .bind(request.now)
        .bind(request.now + request.lease)
        .bind(&request.resource_id)
        .execute(&self.write)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(IdempotencyBegin::New(request.resource_id.clone()));
        }
        let row: Option<IdempotencyRow> = sqlx::query_as(
            "SELECT request_hash, resource_id, state, response_status, response_body, locked_until \
             FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(&request.scope)
        .bind(&request.key)
        .fetch_optional(&self.write)
        .await?;
        let Some(row) = row else {
            // Released between our insert and read: the caller may retry.
            return Ok(IdempotencyBegin::InProgress);
        };
        let decision = row.decide(request);
        if !matches!(decision, IdempotencyBegin::New(_)) {
            return Ok(decision);
        }
        // A stale in-progress key (its first attempt crashed): take it over,
        // unless another retry just did.
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = $3 WHERE scope = $1 AND key = $2 \
             AND state = 'in_progress' AND locked_until = $4",
        )
        .bind(&request.scope)
        .bind(&request.key)
        .bind(request.now + request.lease)
        .bind(row.locked_until)
        .execute(&self.write)
        .await?;
        Ok(if taken.rows_affected() == 1 {
            decision
        } else {
            IdempotencyBegin::InProgress
        })
    }

    async fn complete_idempotent(&self, scope: &str, key: &str, response: &StoredResponse) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4 \
             WHERE scope = $1 AND key = $2",
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
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_progress'")
            .bind(scope)
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
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
        .fetch_all(&self.worker)
        .await?;
        Ok(rows.into_iter().map(inbox_event).collect())
    }

    async fn mark_inbox_processed(&self, event_id: &str, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE payment_inbox SET processed_at = now(), outcome = $2 WHERE event_id = $1")
            .bind(event_id)
            .bind(outcome)
            .execute(&self.worker)
            .await?;
        Ok(())
    }

    async fn mark_inbox_processed_batch(&self, events: &[(String, String)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let (ids, outcomes): (Vec<&str>, Vec<&str>) = events.iter().map(|(id, o)| (id.as_str(), o.as_str())).unzip();
        sqlx::query(
            "UPDATE payment_inbox p SET processed_at = now(), outcome = e.outcome \
             FROM unnest($1::text[], $2::text[]) AS e(event_id, outcome) WHERE p.event_id = e.event_id",
        )
        .bind(ids)
        .bind(outcomes)
        .execute(&self.worker)
        .await?;
        Ok(())
    }
}
