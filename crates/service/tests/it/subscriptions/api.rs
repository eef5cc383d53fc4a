//! The subscription routes at the boundary: bad input is a problem with a
//! stable code, creating a subscription needs an `Idempotency-Key` and
//! replays its first answer, and test clocks exist only when turned on.

use serde_json::json;

use super::{id, spawn};
use crate::both_backends;
use crate::helpers::{Backend, spawn_app_as};

both_backends!(bad_input_gets_problems_with_stable_codes, |backend| async move {
    let subs = spawn(backend, |_| {}).await;
    let admin = &subs.app.admin;
    let bad = admin
        .post(
            "/api/v1/creators",
            &json!({"name": " ", "fee_bps": 20000, "settlement": {"interval": "hourly", "delay_days": 1}}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["code"].clone()),
        (422, json!("invalid_creator")),
        "{}",
        bad.body
    );
    let fields: Vec<_> = bad.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, [json!("name"), json!("fee_bps"), json!("settlement.interval")]);
    let creator = subs.creator().await;
    let bad = admin
        .post(
            "/api/v1/plans",
            &json!({"creator_id": creator, "name": "P", "price": {"amount": -1, "currency": "usd"},
                    "interval": "fortnight", "interval_count": 1, "on_dunning_exhausted": "past_due"}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["code"].clone()),
        (422, json!("invalid_plan")),
        "{}",
        bad.body
    );
    let unknown_creator = admin
        .post(
            "/api/v1/plans",
            &json!({"creator_id": "cr_0193e3a3b7c47000a000000000000000", "name": "P",
                    "price": {"amount": 100, "currency": "USD"}, "interval": "month", "interval_count": 1}),
        )
        .await;
    assert_eq!(unknown_creator.status, 404, "{}", unknown_creator.body);
    let forbidden = subs.app.shop.post("/api/v1/creators", &json!({"name": "Shop"})).await;
    assert_eq!(
        (forbidden.status, forbidden.body["code"].clone()),
        (403, json!("forbidden"))
    );

    let plan = subs.plan(&creator, 300).await;
    let body = json!({"plan_id": plan, "customer": {"email": "grace@example.com"}, "payment_method": "pm_card_visa"});
    let missing = subs.app.shop.post("/api/v1/subscriptions", &body).await;
    assert_eq!(
        (missing.status, missing.body["code"].clone()),
        (400, json!("idempotency_key_missing"))
    );
    let send = |key: &'static str, body: serde_json::Value| {
        let shop = subs.app.shop.clone();
        async move {
            shop.send(
                shop.request(reqwest::Method::POST, "/api/v1/subscriptions")
                    .header("Idempotency-Key", key)
                    .json(&body),
            )
            .await
        }
    };
    let first = send("sub-key-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = send("sub-key-1", body.clone()).await;
    assert_eq!(
        (again.status, id(&again.body)),
        (201, id(&first.body)),
        "the first answer, replayed"
    );
    assert_eq!(
        again.headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let other = send(
        "sub-key-1",
        json!({"plan_id": plan, "customer": {"email": "x@example.com"}, "payment_method": "pm_card_visa"}),
    )
    .await;
    assert_eq!(
        (other.status, other.body["code"].clone()),
        (409, json!("idempotency_conflict"))
    );
    let bad = send(
        "sub-key-2",
        json!({"plan_id": "plan_x", "customer": {"email": "nope"}, "payment_method": "card"}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.body["code"].clone()),
        (422, json!("invalid_subscription")),
        "{}",
        bad.body
    );
    let listed = subs
        .app
        .shop
        .get(&format!(
            "/api/v1/subscriptions?creator_id={creator}&status=incomplete&limit=1"
        ))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
    let bad_list = subs.app.shop.get("/api/v1/subscriptions?status=cancelled").await;
    assert_eq!(
        (bad_list.status, bad_list.body["code"].clone()),
        (422, json!("invalid_query"))
    );
    let missing = subs.app.shop.get("/api/v1/subscriptions/sub_nope").await;
    assert_eq!(
        (missing.status, missing.body["code"].clone()),
        (404, json!("not_found"))
    );
    let clock = subs.clock("2026-01-01T00:00:00Z").await;
    let back = admin
        .post(
            &format!("/api/v1/test-clocks/{clock}/advance"),
            &json!({"frozen_time": "2025-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (back.status, back.body["code"].clone()),
        (409, json!("conflict")),
        "a clock never goes back"
    );
    let spec = admin.get("/api/v1/openapi.json").await;
    for path in [
        "/api/v1/subscriptions/{id}/payment-method",
        "/api/v1/test-clocks/{id}/advance",
        "/api/v1/creators/{id}/settlements",
    ] {
        assert!(spec.body["paths"].get(path).is_some(), "{path} is in the spec");
    }
    subs.app.stop().await;
});

#[tokio::test]
async fn test_clocks_are_off_by_default() {
    let app = spawn_app_as(Backend::Sqlite, holdfast_service::Role::Api, |_| {}).await;
    let refused = app
        .admin
        .post("/api/v1/test-clocks", &json!({"frozen_time": "2026-01-01T00:00:00Z"}))
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (404, json!("test_clocks_disabled"))
    );
    app.stop().await;
}
