//! A request's deadline reaches the database: a write that would wait on a
//! lock for the configured 10 s gives up when the request's 300 ms are over.

use std::time::{Duration, Instant};

use holdfast_store::{PlaceOrderError, StoreError};
use sqlx::Connection;

use crate::both_backends;
use crate::helpers::{Backend, open, product};
use crate::outbox::new_order;

both_backends!(a_write_gives_up_at_the_request_deadline, |backend| async move {
    let db = open(backend).await;
    product(&db.store, "LOCKED", 5).await;
    // Another session holds what checkout needs, as a plain `CREATE INDEX` would.
    let holder: Box<dyn std::any::Any + Send> = match backend {
        Backend::Postgres | Backend::PgBouncer => {
            let mut connection = sqlx::PgConnection::connect(&db.database_url).await.expect("connect");
            sqlx::query("BEGIN").execute(&mut connection).await.expect("begin");
            sqlx::query("LOCK TABLE stock_reservations IN SHARE MODE")
                .execute(&mut connection)
                .await
                .expect("lock");
            Box::new(connection)
        }
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&db.database_url)
                .await
                .expect("connect");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut connection)
                .await
                .expect("lock");
            Box::new(connection)
        }
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let placed = holdfast_store::deadline::scope(deadline, db.store.place_order(&new_order("LOCKED", 1))).await;
    let waited = started.elapsed();
    assert!(
        matches!(placed, Err(PlaceOrderError::Store(StoreError::Timeout(_)))),
        "{placed:?}"
    );
    assert!(waited >= Duration::from_millis(250), "gave up early: {waited:?}");
    assert!(
        waited < Duration::from_secs(3),
        "waited {waited:?}, not the request's 300 ms"
    );
    drop(holder);
    // Without a request deadline, the same write waits for the lock and succeeds.
    db.store
        .place_order(&new_order("LOCKED", 1))
        .await
        .expect("placed once the lock is gone");
    db.drop_database().await;
});
