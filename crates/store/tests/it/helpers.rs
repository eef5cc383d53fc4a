//! A fresh store per test on either backend, and small queue helpers.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_domain::{Currency, Money, Sku};
use holdfast_store::{
    ClaimedJob, ConnectOptions, JobQueue, NewJob, NewProduct, PgBouncer, PoolOptions, Pools, SharedStore,
};

pub use holdfast_testkit::{Backend, pgbouncer, postgres_admin_url};

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

/// Creates product `sku` at 10.00 USD with `on_hand` units.
pub async fn product(store: &SharedStore, sku: &str, on_hand: u32) {
    store
        .create_product(&NewProduct {
            sku: Sku::parse(sku).expect("sku"),
            name: sku.into(),
            price: Money::new(1_000, Currency::USD).expect("price"),
            on_hand,
            created_at: Utc::now(),
        })
        .await
        .expect("product");
}
