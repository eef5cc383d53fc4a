//! Storage errors, classified so the HTTP layer can map each kind once.

use holdfast_domain::{OrderStatus, Sku};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// A unique constraint: the thing already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    InvalidTransition(#[from] holdfast_domain::TransitionError),
    #[error(transparent)]
    InvalidSubscriptionTransition(#[from] holdfast_domain::SubscriptionTransitionError),
    /// The database did not answer in time: a pool wait, a statement or a
    /// lock timeout. Retryable.
    #[error("database timed out: {0}")]
    Timeout(String),
    /// The database cannot be reached at all. Retryable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations: {0}")]
    Migration(String),
    /// Stored data that does not parse: a bug or a manual edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

/// What a [`StoreError::Timeout`] says when no pooled connection came in time.
const POOL_WAIT: &str = "waiting for a pooled connection";

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unavailable(_))
    }

    /// The store itself is out, whatever was asked of it: the database
    /// cannot be reached, or the pool gave no connection in time. A
    /// statement, lock or deadline timeout is about what was asked, and is
    /// not an outage.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Timeout(why) => why == POOL_WAIT,
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut => Self::Timeout(POOL_WAIT.into()),
            sqlx::Error::PoolClosed => Self::Unavailable("pool closed".into()),
            sqlx::Error::Io(io) => Self::Unavailable(io.to_string()),
            sqlx::Error::Tls(tls) => Self::Unavailable(tls.to_string()),
            sqlx::Error::RowNotFound => Self::NotFound("row".into()),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // PostgreSQL: statement timeout / query cancelled, lock timeout;
                // a deadlock or serialization failure, which aborted this
                // transaction so another could go on: retrying is the remedy.
                Some("57014") | Some("55P03") | Some("40P01") | Some("40001") => Self::Timeout(db.message().to_owned()),
                // PostgreSQL: server shutting down, cannot connect now.
                Some("57P01") | Some("57P02") | Some("57P03") => Self::Unavailable(db.message().to_owned()),
                // Connection exceptions, which is also how PgBouncer reports
                // its own refusals (08P01: no more connections allowed,
                // server login failing, pgbouncer shutting down).
                Some(code) if code.starts_with("08") => Self::Unavailable(db.message().to_owned()),
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED.
                Some("5") | Some("6") | Some("517") => Self::Timeout(db.message().to_owned()),
                _ if db.is_unique_violation() => Self::Conflict(db.message().to_owned()),
                _ => Self::Database(error),
            },
            _ => Self::Database(error),
        }
    }
}

/// Why an order could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error("{sku} is out of stock: {requested} requested, {available} available")]
    OutOfStock { sku: Sku, requested: u32, available: i64 },
    #[error("unknown SKU {0}")]
    UnknownSku(Sku),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PlaceOrderError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

pub(crate) fn parse_status(raw: &str) -> Result<OrderStatus, StoreError> {
    OrderStatus::parse(raw).map_err(|_| corrupt("order status", raw))
}
