//! Idempotency keys, as Stripe has them: replay, conflict, required.

use crate::both_backends;
use crate::helpers::{order, spawn_app};

both_backends!(same_key_same_body_replays_the_first_response, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("LAMP", 4_000, 3).await;
    let body = order(&[("LAMP", 1)], "pm_card_visa");
    let first = app.shop.checkout(&body, "retry-me").await;
    assert_eq!(first.status, 201);
    let again = app.shop.checkout(&body, "retry-me").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "identical stored response");
    assert_eq!(
        again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(app.inventory("LAMP").await, (3, 1, 2), "one order, not two");

    // Errors are stored too (validation failures excepted).
    let short = order(&[("LAMP", 5)], "pm_card_visa");
    let sold_out = app.shop.checkout(&short, "too-many").await;
    assert_eq!(sold_out.status, 409);
    app.admin
        .post(
            "/api/v1/inventory/sync",
            &serde_json::json!({"batch_id": "restock", "levels": [{"sku": "LAMP", "on_hand": 100}]}),
        )
        .await;
    let replayed = app.shop.checkout(&short, "too-many").await;
    assert_eq!(
        (replayed.status, replayed.body),
        (409, sold_out.body),
        "the stored 409 replays"
    );
    app.stop().await;
});

both_backends!(same_key_different_body_is_a_conflict, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("LAMP", 4_000, 3).await;
    let first = app
        .shop
        .checkout(&order(&[("LAMP", 1)], "pm_card_visa"), "reused")
        .await;
    assert_eq!(first.status, 201);
    let other = app
        .shop
        .checkout(&order(&[("LAMP", 2)], "pm_card_visa"), "reused")
        .await;
    assert_eq!(other.status, 409);
    assert_eq!(other.body["code"], "idempotency_conflict");
    assert_eq!(app.inventory("LAMP").await, (3, 1, 2));
    app.stop().await;
});

both_backends!(checkout_without_a_key_is_refused, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("LAMP", 4_000, 3).await;
    let answer = app
        .shop
        .post("/api/v1/orders", &order(&[("LAMP", 1)], "pm_card_visa"))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["code"], "idempotency_key_missing");
    assert_eq!(app.inventory("LAMP").await, (3, 0, 3));
    app.stop().await;
});
