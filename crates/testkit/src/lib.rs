//! What every test suite needs to reach the outside services, once:
//!
//! - [`both_backends!`] runs a test body on SQLite, on PostgreSQL, and on
//!   PostgreSQL behind a PgBouncer in transaction pooling mode;
//! - [`postgres_admin_url`], [`nats_url`] and [`pgbouncer`] find the test
//!   services (`HOLDFAST_TEST_PG_URL`, `HOLDFAST_TEST_NATS_URL`, the
//!   `pgbouncer` binary), each with a connect timeout;
//! - [`skip_or_fail`] is the rule for a service that is not there: skip with a
//!   message on a developer's machine, fail under `CI=true`.
//!
//! A dev-only crate: no production code depends on it.

use std::sync::OnceLock;
use std::time::Duration;

use holdfast_store::scratch::{PgBouncerSettings, ScratchPgBouncer};

/// The test PostgreSQL server when `HOLDFAST_TEST_PG_URL` is not set.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The test NATS server when `HOLDFAST_TEST_NATS_URL` is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// How long a service may take to answer before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The backend one run of a test body uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through a stock PgBouncer in transaction pooling mode.
    PgBouncer,
}

/// Runs a test body once per backend: SQLite, PostgreSQL, and PostgreSQL
/// through PgBouncer: `both_backends!(name, |backend| async move { … })`.
/// The PostgreSQL runs skip (or, under `CI=true`, fail) when their service
/// is missing.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::both_backends!(@run sqlite, Sqlite, $body);
            $crate::both_backends!(@run postgres, Postgres, $body);
            $crate::both_backends!(@run pgbouncer, PgBouncer, $body);
        }
    };
    (@run $test:ident, $backend:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $test() {
            if !$crate::available($crate::Backend::$backend).await {
                return;
            }
            let test = $body;
            test($crate::Backend::$backend).await;
        }
    };
}

/// Whether `backend`'s services are there; when they are not, the test is
/// skipped with a message, or fails under `CI=true` (see [`skip_or_fail`]).
pub async fn available(backend: Backend) -> bool {
    match backend {
        Backend::Sqlite => true,
        Backend::Postgres => postgres_admin_url().await.is_some(),
        Backend::PgBouncer => pgbouncer().await.is_some(),
    }
}

/// A test that cannot reach a service it needs: `None` with a message, or a
/// panic under `CI=true`, where a test that cannot reach its service fails.
pub fn skip_or_fail<T>(why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: a test that cannot reach its service fails)");
    }
    eprintln!("skipping: {why} (set HOLDFAST_TEST_PG_URL / HOLDFAST_TEST_NATS_URL, or run .ci/run)");
    None
}

/// The PostgreSQL server tests use: `HOLDFAST_TEST_PG_URL`, else
/// [`DEFAULT_PG_URL`], if it accepts a connection within [`CONNECT_TIMEOUT`].
pub async fn postgres_admin_url() -> Option<String> {
    let url = std::env::var("HOLDFAST_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.into());
    let reachable = tokio::time::timeout(CONNECT_TIMEOUT, async {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&url).await
    })
    .await;
    match reachable {
        Ok(Ok(connection)) => {
            let _ = sqlx::Connection::close(connection).await;
            Some(url)
        }
        Ok(Err(error)) => skip_or_fail(&format!("PostgreSQL at {url} is unreachable: {error}")),
        Err(_) => skip_or_fail(&format!(
            "PostgreSQL at {url} did not answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// The NATS server tests publish to: `HOLDFAST_TEST_NATS_URL`, else
/// [`DEFAULT_NATS_URL`], if it accepts a connection within [`CONNECT_TIMEOUT`].
pub async fn nats_url() -> Option<String> {
    let url = std::env::var("HOLDFAST_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.into());
    let options = async_nats::ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT);
    match options.connect(url.as_str()).await {
        Ok(_) => Some(url),
        Err(error) => skip_or_fail(&format!("NATS at {url} is unreachable: {error}")),
    }
}

/// The test binary's PgBouncer (transaction pooling) in front of the test
/// PostgreSQL server, started by the first test that needs it; `None` (or a
/// failure under `CI=true`) when PostgreSQL or the `pgbouncer` binary is
/// missing.
pub async fn pgbouncer() -> Option<&'static ScratchPgBouncer> {
    static BOUNCER: OnceLock<Result<ScratchPgBouncer, String>> = OnceLock::new();
    let server = postgres_admin_url().await?;
    if !ScratchPgBouncer::installed() {
        return skip_or_fail("pgbouncer is not installed (Debian: apt-get install pgbouncer)");
    }
    match BOUNCER.get_or_init(|| ScratchPgBouncer::start(&server, &PgBouncerSettings::default())) {
        Ok(bouncer) => Some(bouncer),
        Err(error) => panic!("pgbouncer is installed but did not start: {error}"),
    }
}
