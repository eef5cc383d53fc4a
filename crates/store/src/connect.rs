//! Opening a store from a URL: `postgres://…` selects PostgreSQL, `sqlite:…`
//! the embedded backend.

use std::sync::Arc;
use std::time::Duration;

use crate::{SharedStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(StoreError::Migration(format!(
                "unsupported database URL {}: expected postgres://… or sqlite:…",
                describe_target(url)
            )))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// How PostgreSQL is reached (`database.pgbouncer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PgBouncer {
    /// Directly: the timeouts are startup options of each connection and
    /// statements are named and cached.
    #[default]
    Off,
    /// Through PgBouncer with `pool_mode = session`: a server connection per
    /// client connection, so session settings and named statements are safe,
    /// but PgBouncer refuses the `options` and `extra_float_digits` startup
    /// parameters; the timeouts are set with `SET` once connected.
    Session,
    /// Through PgBouncer with `pool_mode = transaction`: only the
    /// transaction is ours, so nothing is sent at startup or set per
    /// session, statements are unnamed and each runs inside a transaction
    /// that sets its own timeouts.
    Transaction,
}

impl PgBouncer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Session => "session",
            Self::Transaction => "transaction",
        }
    }

    /// PgBouncer's own name for a `pool_mode`; `statement` pooling forbids
    /// transactions, which Holdfast needs, so it has no mode here.
    pub fn from_pool_mode(pool_mode: &str) -> Option<Self> {
        match pool_mode.trim() {
            "session" => Some(Self::Session),
            "transaction" => Some(Self::Transaction),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// The longest a caller waits for a connection before the store answers
    /// `Timeout`: waiting is bounded so a saturated pool sheds load.
    pub acquire_timeout: Duration,
}

/// The three bulkheads: reads, checkout writes, background workers.
#[derive(Debug, Clone, Copy)]
pub struct Pools {
    pub read: PoolOptions,
    pub write: PoolOptions,
    pub worker: PoolOptions,
}

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    pub connect_timeout: Duration,
    /// Upper bound for any one statement (PostgreSQL `statement_timeout`).
    pub statement_timeout: Duration,
    /// Upper bound for waiting on a row or table lock (`lock_timeout`; on
    /// SQLite, `busy_timeout`).
    pub lock_timeout: Duration,
    /// Whether the database is reached through PgBouncer, and in which
    /// pooling mode: it decides the startup parameters, where the timeouts are
    /// set and whether statements may be named (`postgres/pooling.rs`).
    pub pgbouncer: PgBouncer,
    pub pools: Pools,
}

/// Connects once, directly, so a bad URL fails now with the driver's own
/// error, then builds the pools (which reconnect by themselves later, e.g.
/// after a database restart).
pub async fn connect(options: &ConnectOptions) -> Result<SharedStore, StoreError> {
    match Backend::from_url(&options.url)? {
        Backend::Postgres => Ok(Arc::new(crate::postgres::PgStore::connect(options).await?)),
        Backend::Sqlite => Ok(Arc::new(crate::sqlite::SqliteStore::connect(options).await?)),
    }
}

/// The URL with any password replaced, for error messages and logs.
pub fn describe_target(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.scheme().starts_with("postgres") => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("REDACTED"));
            }
            let user = parsed.username();
            let user = if user.is_empty() { "<default user>" } else { user };
            let host = parsed.host_str().unwrap_or("<no host>");
            let port = parsed.port().unwrap_or(5432);
            let database = parsed.path().trim_start_matches('/');
            let database = if database.is_empty() {
                "<default database>"
            } else {
                database
            };
            format!("PostgreSQL host {host} port {port} database {database} as user {user}")
        }
        Ok(parsed) if parsed.scheme() == "sqlite" => {
            format!(
                "SQLite database {}",
                raw.trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:")
                    .split('?')
                    .next()
                    .unwrap_or(parsed.path())
            )
        }
        // Not a URL we can take apart: show only the scheme, since the rest
        // may hold a password.
        _ => format!("{}:…", raw.split(':').next().unwrap_or("?")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_show_passwords() {
        let described = describe_target("postgres://app:hunter2@db.internal:6432/shop");
        assert_eq!(
            described,
            "PostgreSQL host db.internal port 6432 database shop as user app"
        );
        assert!(!describe_target("postgres//app:hunter2@db").contains("hunter2"));
        assert_eq!(
            describe_target("sqlite://data/x.db?mode=rwc"),
            "SQLite database data/x.db"
        );
    }
}
