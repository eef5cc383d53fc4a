//! A migration's lock, replayed: a session holds a lock on the
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
        Backend::Postgres | Backend::PgBouncer => {
            let mut connection = sqlx::PgConnection::connect(app.database_url()).await.expect("connect");
            sqlx::query("BEGIN").execute(&mut connection).await.expect("begin");
            sqlx::query("CREATE INDEX stock_reservations_blocking_idx ON stock_reservations (order_id, sku)")
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
            config.dependencies.inventory.deadline_ms = 1_500;
            // Refuse rather than take orders for later (the next test).
            config.dependencies.inventory.on_unavailable = holdfast_resilience::OnUnavailable::Reject;
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

both_backends!(orders_taken_during_the_lock_complete_after_it, |backend| async move {
    let app = spawn_app_with(backend, |config| {
        config.server.request_deadline_ms = 3_000;
        config.database.statement_timeout_ms = 2_000;
        config.database.lock_timeout_ms = 1_500;
        config.dependencies.inventory.deadline_ms = 800;
        config.workers.poll_interval_ms = 50;
        config.warehouse.url = "http://127.0.0.1:9".into();
    })
    .await;
    app.create_product("POLE", 4_000, 5).await;
    app.create_product("TENT", 20_000, 1).await;

    let lock = lock_reservations(&app, backend).await;
    let started = Instant::now();
    let pole = app
        .shop
        .checkout(&order(&[("POLE", 1)], "pm_card_visa"), "pole-1")
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(3_500),
        "answered within the deadline"
    );
    if backend == Backend::Sqlite {
        // SQLite has one writer: while another holds it, nothing can be
        // written, not even an accepted order, so the answer is 503.
        assert_eq!(pole.status, 503, "{}", pole.body);
        drop(lock);
        app.stop().await;
        return;
    }
    assert_eq!(pole.status, 202, "{}", pole.body);
    assert_eq!(pole.body["status"], "accepted");
    let tent = app
        .shop
        .checkout(&order(&[("TENT", 1)], "pm_card_visa"), "tent-1")
        .await;
    assert_eq!(tent.status, 202, "{}", tent.body);
    // The last tent is sold elsewhere before the lock goes.
    let sold = serde_json::json!({"batch_id": "tents-gone", "levels": [{"sku": "TENT", "on_hand": 0}]});
    assert_eq!(app.admin.post("/api/v1/inventory/sync", &sold).await.status, 200);
    let replay = app
        .shop
        .checkout(&order(&[("POLE", 1)], "pm_card_visa"), "pole-1")
        .await;
    assert_eq!(
        (replay.status, replay.body["order_id"].clone()),
        (202, pole.body["order_id"].clone())
    );

    drop(lock);
    let pole_id = pole.body["order_id"].as_str().expect("id").to_owned();
    let tent_id = tent.body["order_id"].as_str().expect("id").to_owned();
    let paid = app.wait_for_status(&pole_id, "paid").await;
    assert!(
        paid["payment_intent_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("pi_")),
        "{paid}"
    );
    app.wait_for_status(&tent_id, "rejected").await;
    assert_eq!(app.inventory("POLE").await, (5, 1, 4));
    assert_eq!(app.inventory("TENT").await, (0, 0, 0), "nothing oversold, nothing held");
    let timeline = app.shop.get(&format!("/api/v1/orders/{pole_id}/events")).await;
    let steps: Vec<_> = timeline.body["data"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|step| step["to"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(steps, ["accepted", "pending_payment", "paid"]);
    app.stop().await;
});
