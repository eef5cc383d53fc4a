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

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

use crate::Result;
use crate::connect::{Backend, ConnectOptions, describe_target};
use crate::error::StoreError;
use crate::model::*;

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
impl_outbox!(
    SqliteStore,
    worker_reads: read,
    relay_lock: outbox::relay_lock,
    relay_pass: outbox::relay_pass,
    relay_publish: outbox::relay_publish,
);
impl_webhooks!(
    SqliteStore,
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    worker_reads: read,
    record_deliveries: webhooks::record_deliveries,
);
impl_holds!(
    SqliteStore,
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    worker_reads: read,
    for_update: "",
    take_lines: holds::take_lines,
    return_units: holds::return_units,
);
impl_subscriptions!(SqliteStore, sqlx::SqliteConnection, "");

impl_checkouts!(SqliteStore, tx: sqlx::Transaction<'static, sqlx::Sqlite>, for_update: "");

impl_store! {
    SqliteStore,
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    // The write transaction already excludes every other writer.
    lock_for_update: "",
    migrations_table: "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    // Background reads run beside the one writer, not queued behind it.
    worker_reads: read,
    per_backend: {
        fn backend(&self) -> Backend {
            Backend::Sqlite
        }

        async fn migrate(&self) -> Result<()> {
            MIGRATOR
                .run(&self.write)
                .await
                .map_err(|e| StoreError::Migration(e.to_string()))
        }

        // The time is bound, written as sqlx writes every time on SQLite
        // (RFC 3339 text), so that comparing the text compares the times.
        async fn mark_inbox_processed(&self, event_id: &str, outcome: &str) -> Result<()> {
            sqlx::query("UPDATE payment_inbox SET processed_at = $3, outcome = $2 WHERE event_id = $1")
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
                sqlx::query("UPDATE payment_inbox SET processed_at = $3, outcome = $2 WHERE event_id = $1")
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
}
