//! Seed 000's migration, replayed: a session holds a lock on the
//! reservations table (PostgreSQL: `CREATE INDEX` without `CONCURRENTLY`
//! inside an open transaction; SQLite: another writer's open transaction).
//! Checkout answers 503 with `Retry-After` within its deadline instead of
//! hanging, reads keep working, and checkout works again once the lock goes.

use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, order, spawn_app_with};

/// A connection holding the lock; dropping it closes the connection, which
/// rolls the transaction back and releases the lock.
#[allow(dead_code)]
enum Lock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

async fn lock_reservations(app: &TestApp, backend: Backend) -> Lock {
    match backend {
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(app.database_url()).await.expect("connect");
            sqlx::query("BEGIN").execute(&mut connection).await.expect("begin");
            sqlx::query("CREATE INDEX stock_reservations_seed_000_idx ON stock_reservations (order_id, sku)")
                .execute(&mut connection)
                .await
                .expect("the migration takes its SHARE lock");
            Lock::Postgres(connection)
        }
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(app.database_url())
                .await
                .expect("connect");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut connection)
                .await
                .expect("write lock");
            Lock::Sqlite(connection)
        }
    }
}

both_backends!(
    a_locked_table_fails_checkout_fast_and_leaves_reads_alone,
    |backend| async move {
        let app = spawn_app_with(backend, |config| {
            config.server.request_deadline_ms = 3_000;
            config.database.statement_timeout_ms = 2_000;
            config.database.lock_timeout_ms = 1_000;
            // Nothing ships while the test looks at stock.
            config.warehouse.url = "http://127.0.0.1:9".into();
        })
        .await;
        app.create_product("TARP", 1_000, 10).await;
        let placed = app
            .shop
            .checkout(&order(&[("TARP", 1)], "pm_card_visa"), "tarp-1")
            .await;
        assert_eq!(placed.status, 201, "{}", placed.body);
        let order_id = placed.body["order_id"].as_str().expect("order id").to_owned();

        let lock = lock_reservations(&app, backend).await;
        let started = Instant::now();
        let blocked = app
            .shop
            .checkout(&order(&[("TARP", 1)], "pm_card_visa"), "tarp-2")
            .await;
        let waited = started.elapsed();
        assert_eq!(blocked.status, 503, "{}", blocked.body);
        assert!(blocked.headers.contains_key("retry-after"), "{:?}", blocked.headers);
        assert!(
            waited < Duration::from_millis(3_500),
            "checkout waited {waited:?}, past its deadline"
        );

        // Reads have their own pool and touch no locked table.
        let started = Instant::now();
        let read = app.shop.get(&format!("/api/v1/orders/{order_id}")).await;
        assert_eq!(read.status, 200, "{}", read.body);
        let product = app.shop.get("/api/v1/products/TARP").await;
        assert_eq!(product.status, 200, "{}", product.body);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "reads waited {:?} behind the lock",
            started.elapsed()
        );

        drop(lock);
        let after = app
            .shop
            .checkout(&order(&[("TARP", 1)], "pm_card_visa"), "tarp-2")
            .await;
        assert_eq!(
            after.status, 201,
            "the same key goes through once the lock is gone: {}",
            after.body
        );
        let (on_hand, reserved, available) = app.inventory("TARP").await;
        assert_eq!(
            (on_hand, reserved + available),
            (10, 10),
            "the failed attempt held nothing"
        );
        assert_eq!(reserved, 2, "two orders hold stock");
        app.stop().await;
    }
);
