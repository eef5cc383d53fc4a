//! A fresh store per test on either backend, and small queue helpers.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_store::scratch::{PgBouncerSettings, ScratchPgBouncer};
use holdfast_store::{ClaimedJob, ConnectOptions, JobQueue, NewJob, PgBouncer, PoolOptions, Pools, SharedStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through a stock PgBouncer in transaction pooling mode,
    /// with `PgBouncer::Transaction`.
    PgBouncer,
}

/// Runs a test body once per backend: SQLite, PostgreSQL, and PostgreSQL
/// through PgBouncer: `both_backends!(name, |backend| async move { … })`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let test = $body;
                test($crate::helpers::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if $crate::helpers::postgres_admin_url().await.is_none() {
                    return;
                }
                let test = $body;
                test($crate::helpers::Backend::Postgres).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn pgbouncer() {
                if $crate::helpers::pgbouncer().await.is_none() {
                    return;
                }
                let test = $body;
                test($crate::helpers::Backend::PgBouncer).await;
            }
        }
    };
}

/// The test binary's PgBouncer (transaction pooling) in front of the test
/// PostgreSQL server, started by the first test that needs it. Skipped with a
/// message when PostgreSQL or the `pgbouncer` binary is missing, except
/// under `CI=true`, where that is a failure.
pub async fn pgbouncer() -> Option<&'static ScratchPgBouncer> {
    static BOUNCER: std::sync::OnceLock<Result<ScratchPgBouncer, String>> = std::sync::OnceLock::new();
    let server = postgres_admin_url().await?;
    if !ScratchPgBouncer::installed() {
        return skip_or_fail("pgbouncer is not installed (Debian: apt-get install pgbouncer)");
    }
    match BOUNCER.get_or_init(|| ScratchPgBouncer::start(&server, &PgBouncerSettings::default())) {
        Ok(bouncer) => Some(bouncer),
        Err(error) => panic!("pgbouncer is installed but did not start: {error}"),
    }
}

/// The PostgreSQL server tests use: `HOLDFAST_TEST_PG_URL`, else the local
/// default. When it cannot be reached the test is skipped with a message,
/// except under `CI=true`, where that is a failure.
pub async fn postgres_admin_url() -> Option<String> {
    let url =
        std::env::var("HOLDFAST_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let reachable = tokio::time::timeout(Duration::from_secs(5), async {
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
        Err(_) => skip_or_fail(&format!("PostgreSQL at {url} did not answer within 5 s")),
    }
}

fn skip_or_fail<T>(why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: a test that cannot reach its service fails)");
    }
    eprintln!("skipping: {why} (set HOLDFAST_TEST_PG_URL)");
    None
}

/// A migrated store on a database of its own: a temporary SQLite file, or a
/// scratch PostgreSQL database dropped by [`TestStore::drop_database`].
/// `database_url` is the database itself (for tests that lock it from
/// outside), also when the store goes through PgBouncer.
pub struct TestStore {
    pub store: SharedStore,
    pub database_url: String,
    admin_url: Option<String>,
    dir: Option<PathBuf>,
}

pub async fn open(backend: Backend) -> TestStore {
    let (database_url, admin_url, dir) = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("holdfast-store-it-{}", uuid::Uuid::now_v7().simple()));
            (format!("sqlite://{}/holdfast.db", dir.display()), None, Some(dir))
        }
        Backend::Postgres | Backend::PgBouncer => {
            let admin = postgres_admin_url().await.expect("postgres reachable");
            let url = holdfast_store::scratch::create_database(&admin, "queue")
                .await
                .expect("scratch database");
            (url, Some(admin), None)
        }
    };
    let (url, pgbouncer) = match backend {
        Backend::PgBouncer => {
            let bouncer = pgbouncer().await.expect("pgbouncer started");
            let url = bouncer.url_for(&database_url).expect("url through pgbouncer");
            (url, PgBouncer::Transaction)
        }
        _ => (database_url.clone(), PgBouncer::Off),
    };
    let pool = |max_connections| PoolOptions {
        max_connections,
        acquire_timeout: Duration::from_secs(30),
    };
    let options = ConnectOptions {
        url,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        lock_timeout: Duration::from_secs(10),
        pgbouncer,
        pools: Pools {
            read: pool(4),
            write: pool(4),
            worker: pool(10),
        },
    };
    let store = holdfast_store::connect(&options).await.expect("store connects");
    store.migrate().await.expect("migrations apply");
    TestStore {
        store,
        database_url,
        admin_url,
        dir,
    }
}

impl TestStore {
    pub fn queue(&self) -> &dyn JobQueue {
        self.store.queue()
    }

    pub async fn drop_database(self) {
        let TestStore {
            store,
            database_url,
            admin_url,
            dir,
        } = self;
        drop(store);
        if let Some(admin) = admin_url {
            holdfast_store::scratch::drop_database(&admin, &database_url)
                .await
                .expect("drop scratch database");
        }
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Now, to the millisecond (SQLite keeps milliseconds), so times read back
/// compare equal to the ones computed here.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("representable time")
}

pub fn secs(n: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(n)
}

pub fn job(queue: &str, group: &str, n: u32, now: DateTime<Utc>) -> NewJob {
    NewJob::new(queue, group, serde_json::json!({ "group": group, "n": n }), now)
}

/// The `n` a job built by [`job`] carries.
pub fn n_of(claimed: &ClaimedJob) -> u64 {
    claimed.job.payload["n"].as_u64().expect("payload n")
}

/// Claims with a limit of one and expects at most one job.
pub async fn claim_one(queue: &dyn JobQueue, name: &str, worker: &str, now: DateTime<Utc>) -> Option<ClaimedJob> {
    let mut claimed = queue.claim_batch(name, worker, 1, now).await.expect("claim");
    assert!(claimed.len() <= 1, "asked for one job, got {}", claimed.len());
    claimed.pop()
}
