//! The inventory node's hold API (what order nodes with
//! `inventory.mode = "remote"` call): all or nothing, idempotent by order
//! id, settled by commit / consume / release, and every refusal a clear 4xx.

use holdfast_domain::OrderId;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::spawn_app;

fn hold(id: &str, items: &[(&str, i64)]) -> Value {
    json!({
        "id": id,
        "items": items.iter().map(|(sku, qty)| json!({"sku": sku, "qty": qty})).collect::<Vec<_>>(),
        "expires_at": (chrono::Utc::now() + chrono::Duration::minutes(20)).to_rfc3339(),
    })
}

/// A one-line hold of CLEAT expiring `from_now`.
fn expiring(id: &str, from_now: chrono::Duration) -> Value {
    let mut body = hold(id, &[("CLEAT", 1)]);
    body["expires_at"] = json!((chrono::Utc::now() + from_now).to_rfc3339());
    body
}

both_backends!(holds_are_all_or_nothing_and_idempotent, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("ANCHOR", 5_000, 5).await;
    app.create_product("BUOY", 1_000, 1).await;
    let id = OrderId::generate().to_string();

    // The second line is short: nothing is held, and the problem names it.
    let short = app
        .admin
        .post("/api/v1/inventory/holds", &hold(&id, &[("ANCHOR", 2), ("BUOY", 2)]))
        .await;
    assert_eq!(short.status, 409, "{}", short.body);
    assert_eq!(short.body["code"], "out_of_stock");
    assert_eq!(
        short.body["stock"],
        json!({"sku": "BUOY", "requested": 2, "available": 1})
    );
    assert_eq!(app.inventory("ANCHOR").await, (5, 0, 5));

    let held = app
        .admin
        .post("/api/v1/inventory/holds", &hold(&id, &[("ANCHOR", 2), ("BUOY", 1)]))
        .await;
    assert_eq!(held.status, 201, "{}", held.body);
    assert_eq!(held.body["status"], "held");
    let again = app
        .admin
        .post("/api/v1/inventory/holds", &hold(&id, &[("ANCHOR", 2), ("BUOY", 1)]))
        .await;
    assert_eq!(
        again.status, 200,
        "a repeated hold answers the one it has: {}",
        again.body
    );
    assert_eq!(again.body["created_at"], held.body["created_at"]);
    assert_eq!(app.inventory("ANCHOR").await, (5, 2, 3), "held once");
    let other = app
        .admin
        .post("/api/v1/inventory/holds", &hold(&id, &[("ANCHOR", 1)]))
        .await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.body["code"], "hold_conflict");

    let path = |action: &str| format!("/api/v1/inventory/holds/{id}/{action}");
    let committed = app.admin.post(&path("commit"), &json!({})).await;
    assert_eq!(
        (committed.status, &committed.body["status"]),
        (200, &json!("committed"))
    );
    let consumed = app.admin.post(&path("consume"), &json!({})).await;
    assert_eq!((consumed.status, &consumed.body["status"]), (200, &json!("consumed")));
    assert_eq!(
        app.inventory("ANCHOR").await,
        (3, 0, 3),
        "shipped units leave the shelf"
    );
    let late = app.admin.post(&path("release"), &json!({})).await;
    assert_eq!(late.status, 409, "a shipped hold cannot be released: {}", late.body);
    assert_eq!(late.body["code"], "hold_conflict");
    let fetched = app.admin.get(&format!("/api/v1/inventory/holds/{id}")).await;
    assert_eq!((fetched.status, &fetched.body["status"]), (200, &json!("consumed")));

    // Release gives the units back, once.
    let second = OrderId::generate().to_string();
    let placed = app
        .admin
        .post("/api/v1/inventory/holds", &hold(&second, &[("ANCHOR", 3)]))
        .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(app.inventory("ANCHOR").await, (3, 3, 0));
    for _ in 0..2 {
        let released = app
            .admin
            .post(&format!("/api/v1/inventory/holds/{second}/release"), &json!({}))
            .await;
        assert_eq!((released.status, &released.body["status"]), (200, &json!("released")));
    }
    assert_eq!(app.inventory("ANCHOR").await, (3, 0, 3));
    app.stop().await;
});

both_backends!(bad_holds_are_clear_4xx, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("CLEAT", 500, 5).await;
    let id = OrderId::generate().to_string();
    let cases = [
        (hold("ord_nope", &[("CLEAT", 1)]), 422, "invalid_hold"),
        (hold(&id, &[]), 422, "invalid_hold"),
        (hold(&id, &[("CLEAT", 0)]), 422, "invalid_hold"),
        (hold(&id, &[("CLEAT", 1), ("CLEAT", 1)]), 422, "invalid_hold"),
        (hold(&id, &[("NOSUCH", 1)]), 422, "unknown_sku"),
        (expiring(&id, chrono::Duration::minutes(-1)), 422, "invalid_hold"),
        (expiring(&id, chrono::Duration::days(30)), 422, "invalid_hold"),
    ];
    for (body, status, code) in cases {
        let answer = app.admin.post("/api/v1/inventory/holds", &body).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(answer.body["code"], code, "{}", answer.body);
    }
    let missing = app
        .admin
        .post(&format!("/api/v1/inventory/holds/{id}/commit"), &json!({}))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let verb = app
        .admin
        .post(&format!("/api/v1/inventory/holds/{id}/steal"), &json!({}))
        .await;
    assert_eq!(verb.status, 404, "{}", verb.body);
    // Holds move stock: a storefront key may not place them.
    let shop = app
        .shop
        .post("/api/v1/inventory/holds", &hold(&id, &[("CLEAT", 1)]))
        .await;
    assert_eq!(shop.status, 403, "{}", shop.body);
    assert_eq!(app.inventory("CLEAT").await, (5, 0, 5), "nothing held");
    app.stop().await;
});
