//! The PostgreSQL backend's pools and transactions, written so the same
//! queries run directly against PostgreSQL and through PgBouncer.
//!
//! PgBouncer in transaction pooling mode hands a client a server connection
//! for one transaction at a time, so nothing may outlive a transaction:
//!
//! - **No named prepared statements.** sqlx names its statements
//!   (`sqlx_s_1`, …) per client connection, and it still does with
//!   `statement_cache_capacity(0)` (it only stops reusing and closing them):
//!   two clients sharing a server connection then collide with
//!   `prepared statement "sqlx_s_1" already exists`. [`Conn`] runs every
//!   query as an unnamed statement instead (`Execute::persistent` = false).
//! - **Every statement inside an explicit transaction.** sqlx sends an
//!   unnamed statement's Parse and its Bind/Execute in two round trips, each
//!   ending in a Sync; outside a transaction PgBouncer may give the second to
//!   another server connection, whose unnamed statement is someone else's.
//!   So a statement run on a [`Pool`] outside a transaction runs in one of its
//!   own (BEGIN … COMMIT), which pins one server connection for its duration.
//! - **Timeouts per transaction.** PgBouncer refuses the `options` startup
//!   parameter and a session `SET` would stay on a server connection other
//!   clients get next, so every transaction begins with
//!   `SET LOCAL statement_timeout` (the smaller of the configured timeout and
//!   what is left of the request's deadline) and `SET LOCAL lock_timeout`, in
//!   the same round trip as its `BEGIN`. This holds in every mode.
//! - **Advisory locks are transaction-scoped** (`pg_try_advisory_xact_lock`
//!   in the queue and the relay, `pg_advisory_xact_lock` in the migration
//!   runner of [`super::migrate`]); a session-level lock would be taken on
//!   one server connection and released on another.
//!
//! Directly (`PgBouncer::Off`) and in session mode, statements stay named and
//! cached (one round trip per statement once prepared) and a statement
//! outside a transaction runs on its own, with the session's timeouts.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Either, Execute, Executor, PgPool, Postgres};

use crate::connect::PgBouncer;
use crate::{Result, StoreError};

/// What every transaction of a pool begins with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) pgbouncer: PgBouncer,
    pub(crate) statement_timeout: Duration,
    pub(crate) lock_timeout: Duration,
}

impl Settings {
    /// Whether statements must be unnamed and wrapped in transactions.
    fn transaction_pooling(self) -> bool {
        self.pgbouncer == PgBouncer::Transaction
    }

    /// `BEGIN` and the transaction's own timeouts, in one simple query.
    fn begin_sql(self, left: Option<Duration>) -> String {
        let statement = left.map_or(self.statement_timeout, |left| left.min(self.statement_timeout));
        format!(
            "BEGIN; SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
            millis(statement),
            millis(self.lock_timeout)
        )
    }
}

/// Whole milliseconds, at least 1: PostgreSQL reads 0 as "no timeout".
fn millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}

/// One of the backend's pools (read, write, worker).
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    inner: PgPool,
    settings: Settings,
}

impl Pool {
    pub(crate) fn new(inner: PgPool, settings: Settings) -> Self {
        Self { inner, settings }
    }

    /// The sqlx pool underneath, for what only sizes it (metrics) and for
    /// sqlx's migrator when no PgBouncer transaction pooling is in the way.
    pub(crate) fn sqlx(&self) -> &PgPool {
        &self.inner
    }

    /// A transaction for the current request, if any: the connection is
    /// waited for no longer than the request's deadline, and every statement
    /// in it is cancelled by PostgreSQL once the deadline passes
    /// (`statement_timeout` bounds lock waits too), so a locked table costs at
    /// most what the request had left. Outside a request the configured
    /// timeouts apply.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        if crate::deadline::remaining().is_some_and(|left| left.is_zero()) {
            return Err(StoreError::Timeout("the request's deadline passed".into()));
        }
        crate::deadline::within(self.begin_tx()).await
    }

    async fn begin_tx(&self) -> std::result::Result<Tx, sqlx::Error> {
        let before = crate::deadline::remaining();
        let mut tx = self
            .inner
            .begin_with(sqlx::AssertSqlSafe(self.settings.begin_sql(before)))
            .await?;
        // Waiting for the connection spent some of the budget: give the
        // statements only what is left.
        if let (Some(before), Some(now)) = (before, crate::deadline::remaining())
            && now < self.settings.statement_timeout
            && before.saturating_sub(now) > Duration::from_millis(5)
        {
            let sql = format!("SET LOCAL statement_timeout = {}", millis(now));
            (&mut *tx).execute(sqlx::AssertSqlSafe(sql)).await?;
        }
        Ok(Tx {
            conn: Conn {
                tx,
                unnamed: self.settings.transaction_pooling(),
            },
        })
    }
}

/// An open transaction. Statements run on `&mut *tx` (a [`Conn`]); dropping
/// it without `commit` rolls it back.
#[derive(Debug)]
pub(crate) struct Tx {
    conn: Conn,
}

impl Tx {
    pub(crate) async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.conn.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> std::result::Result<(), sqlx::Error> {
        self.conn.tx.rollback().await
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// The connection of a [`Tx`]: an sqlx executor that keeps statements unnamed
/// behind PgBouncer's transaction pooling.
pub(crate) struct Conn {
    tx: sqlx::Transaction<'static, Postgres>,
    unnamed: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("unnamed", &self.unnamed)
            .finish_non_exhaustive()
    }
}

/// A query that sqlx must not keep as a named prepared statement.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(self) -> sqlx::SqlStr {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> std::result::Result<Option<sqlx::postgres::PgArguments>, sqlx::error::BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

type Results<'e> = BoxStream<'e, std::result::Result<Either<PgQueryResult, PgRow>, sqlx::Error>>;

impl<'c> Executor<'c> for &'c mut Conn {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> Results<'e>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.unnamed {
            (&mut *self.tx).fetch_many(Unnamed(query))
        } else {
            (&mut *self.tx).fetch_many(query)
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, std::result::Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.unnamed {
            (&mut *self.tx).fetch_optional(Unnamed(query))
        } else {
            (&mut *self.tx).fetch_optional(query)
        }
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, std::result::Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).prepare_with(sql, parameters)
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, std::result::Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).describe(sql)
    }
}

/// `prepare_with` and `describe` (which name statements) are the trait's and
/// not used by the store: its queries go through `fetch_many`/`fetch_optional`.
impl<'c> Executor<'c> for &'c Pool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> Results<'e>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.settings.transaction_pooling() {
            return (&self.inner).fetch_many(query);
        }
        // Collected inside the transaction, which commits before the first
        // row is handed out: the server connection goes back to PgBouncer at
        // once instead of waiting on the caller.
        futures::stream::once(async move {
            let mut tx = self.begin_tx().await?;
            let results: Vec<_> = (&mut *tx).fetch_many(query).try_collect().await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(futures::stream::iter(results.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, std::result::Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.settings.transaction_pooling() {
            return (&self.inner).fetch_optional(query);
        }
        Box::pin(async move {
            let mut tx = self.begin_tx().await?;
            let row = (&mut *tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, std::result::Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        (&self.inner).prepare_with(sql, parameters)
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, std::result::Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&self.inner).describe(sql)
    }
}
