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

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};

use self::pooling::Settings;
pub(crate) use self::pooling::{Conn, Pool, Tx};
use crate::Result;
use crate::connect::{Backend, ConnectOptions, PgBouncer, PoolOptions, describe_target};
use crate::error::StoreError;
use crate::model::*;

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
        // The workers' queries read tables that grow from empty while a node
        // runs (the queue, subscription periods). A generic plan that
        // PostgreSQL caches for a named statement while they were small
        // stays with the connection: the scheduler's anti-join then scanned
        // every queued job per due period (6,000 renewals ran at a third of
        // the speed). Worker statements are planned for their arguments
        // and the tables as they are; checkout's keep their cached plans.
        // (Through PgBouncer in transaction mode statements are unnamed,
        // so every one is planned afresh anyway.)
        let worker_options = connect_options
            .clone()
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = |pool: PoolOptions, worker: bool| {
            let mut builder = PgPoolOptions::new()
                .max_connections(pool.max_connections)
                .acquire_timeout(pool.acquire_timeout)
                // No ping before every use: it is a round trip on every
                // transaction. sqlx already pings a connection when it comes
                // back to the pool (off the request's path) and closes it if
                // that fails, and a connection that died while idle fails its
                // first statement with an I/O error, which is `Unavailable`:
                // a retryable 503, and the connection is dropped, not reused.
                .test_before_acquire(false);
            if options.pgbouncer == PgBouncer::Session {
                // The server connection is this client's until it
                // disconnects, and PgBouncer's server_reset_query clears
                // the settings before anyone else gets it.
                let mut sql = session_timeouts(settings);
                if worker {
                    sql.push_str("; SET plan_cache_mode = force_custom_plan");
                }
                builder = builder.after_connect(move |conn, _| {
                    let sql = sql.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                        Ok(())
                    })
                });
            }
            let connect = if worker && options.pgbouncer == PgBouncer::Off {
                worker_options.clone()
            } else {
                connect_options.clone()
            };
            Pool::new(builder.connect_lazy_with(connect), settings)
        };
        Ok(Self {
            read: pool(options.pools.read, false),
            write: pool(options.pools.write, false),
            worker: pool(options.pools.worker, true),
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
impl_outbox!(
    PgStore,
    worker_reads: worker,
    relay_lock: outbox::relay_lock,
    relay_pass: outbox::relay_pass,
    relay_publish: outbox::relay_publish,
);
impl_webhooks!(
    PgStore,
    tx: Tx,
    worker_reads: worker,
    record_deliveries: webhooks::record_deliveries,
    delivery_works: webhooks::delivery_works,
);
impl_holds!(
    PgStore,
    tx: Tx,
    worker_reads: worker,
    for_update: " FOR UPDATE",
    take_lines: holds::take_lines,
    return_units: holds::return_units,
);
impl_subscriptions!(PgStore, crate::postgres::Conn, " FOR UPDATE");

impl_checkouts!(PgStore, tx: Tx, for_update: " FOR UPDATE");

impl_store! {
    PgStore,
    tx: Tx,
    // An order read to be changed is locked against other writers.
    lock_for_update: " FOR UPDATE",
    migrations_table: "SELECT to_regclass('_sqlx_migrations')::text",
    // Background reads use the workers' pool, beside neither checkouts nor `GET`s.
    worker_reads: worker,
    per_backend: {
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
            let (ids, outcomes): (Vec<&str>, Vec<&str>) =
                events.iter().map(|(id, o)| (id.as_str(), o.as_str())).unzip();
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
}
