//! Bad input of every kind gets the right 4xx and code, never a 5xx, and
//! changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{order, spawn_app};

both_backends!(bad_checkouts_get_the_right_problem, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("TEE", 2_000, 10).await;
    let with_items = |items: serde_json::Value| {
        let mut body = order(&[], "pm_card_visa");
        body["items"] = items;
        body
    };
    let mut bad_country = order(&[("TEE", 1)], "pm_card_visa");
    bad_country["shipping_address"]["country"] = json!("USA");
    let mut extra_field = order(&[("TEE", 1)], "pm_card_visa");
    extra_field["total"] = json!({"amount": 1, "currency": "USD"});
    let cases: Vec<(&str, serde_json::Value, u16, &str, &str)> = vec![
        (
            "unknown SKU",
            order(&[("NOPE", 1)], "pm_card_visa"),
            422,
            "unknown_sku",
            "items[sku=NOPE].sku",
        ),
        (
            "qty 0",
            order(&[("TEE", 0)], "pm_card_visa"),
            422,
            "invalid_cart",
            "items[0].qty",
        ),
        (
            "negative qty",
            order(&[("TEE", -2)], "pm_card_visa"),
            422,
            "invalid_cart",
            "items[0].qty",
        ),
        (
            "huge qty",
            order(&[("TEE", 1_000_000_000)], "pm_card_visa"),
            422,
            "invalid_cart",
            "items[0].qty",
        ),
        (
            "qty beyond i64",
            with_items(json!([{"sku": "TEE", "qty": 1e30}])),
            422,
            "invalid_request",
            "items[0].qty",
        ),
        (
            "qty as string",
            with_items(json!([{"sku": "TEE", "qty": "2"}])),
            422,
            "invalid_request",
            "items[0].qty",
        ),
        ("no items", with_items(json!([])), 422, "invalid_cart", "items"),
        (
            "bad email",
            {
                let mut b = order(&[("TEE", 1)], "pm_card_visa");
                b["customer"]["email"] = json!("not-an-email");
                b
            },
            422,
            "invalid_cart",
            "customer.email",
        ),
        (
            "bad country",
            bad_country,
            422,
            "invalid_cart",
            "shipping_address.country",
        ),
        (
            "bad payment method",
            order(&[("TEE", 1)], "card_4242"),
            422,
            "invalid_cart",
            "payment_method",
        ),
        ("client-supplied total", extra_field, 422, "invalid_request", ""),
    ];
    for (i, (name, body, status, code, field)) in cases.into_iter().enumerate() {
        let answer = app.shop.checkout(&body, &format!("bad-{i}")).await;
        assert_eq!(answer.status, status, "{name}: {}", answer.body);
        assert_eq!(answer.body["code"], code, "{name}: {}", answer.body);
        assert_eq!(
            answer.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{name}"
        );
        if !field.is_empty() {
            let fields: Vec<_> = answer.body["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|e| e["field"].clone())
                .collect();
            assert!(fields.contains(&json!(field)), "{name}: expected {field} in {fields:?}");
        }
    }
    assert_eq!(app.inventory("TEE").await, (10, 0, 10), "bad input reserves nothing");
    app.stop().await;
});

both_backends!(malformed_oversized_and_unauthorised_requests, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("TEE", 2_000, 10).await;
    let raw = |body: String, key: &str| {
        app.shop
            .request(Method::POST, "/api/v1/orders")
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let malformed = app.shop.send(raw("{\"items\": [".into(), "m1")).await;
    assert_eq!(
        (malformed.status, malformed.body["code"].clone()),
        (400, json!("malformed_json"))
    );
    // Just over the 64 KiB limit: the server answers 413 without reading the
    // body and closes, so a much larger body could still be in the client's
    // write when the connection goes (a broken pipe instead of the answer).
    let oversized = app
        .shop
        .send(raw(format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000)), "m2"))
        .await;
    assert_eq!(
        (oversized.status, oversized.body["code"].clone()),
        (413, json!("payload_too_large"))
    );
    let not_json = app
        .shop
        .send(
            app.shop
                .request(Method::POST, "/api/v1/orders")
                .header("Idempotency-Key", "m3")
                .body("items=1"),
        )
        .await;
    assert_eq!(
        (not_json.status, not_json.body["code"].clone()),
        (415, json!("unsupported_media_type"))
    );

    let anonymous = app
        .shop
        .anonymous()
        .checkout(&order(&[("TEE", 1)], "pm_card_visa"), "m4")
        .await;
    assert_eq!(
        (anonymous.status, anonymous.body["code"].clone()),
        (401, json!("unauthorized"))
    );
    assert!(anonymous.headers.contains_key("www-authenticate"));
    let wrong_key = app
        .shop
        .with_key("hf_not_a_real_key_at_all_0000")
        .get("/api/v1/orders")
        .await;
    assert_eq!(wrong_key.status, 401);
    let wrong_scope = app
        .shop
        .post(
            "/api/v1/products",
            &json!({"sku": "X", "name": "x", "price": {"amount": 1, "currency": "USD"}, "on_hand": 1}),
        )
        .await;
    assert_eq!(
        (wrong_scope.status, wrong_scope.body["code"].clone()),
        (403, json!("forbidden"))
    );

    let bad_currency = app
        .admin
        .post(
            "/api/v1/products",
            &json!({"sku": "CAP", "name": "Cap", "price": {"amount": 100, "currency": "usd"}, "on_hand": 1}),
        )
        .await;
    assert_eq!(
        (bad_currency.status, bad_currency.body["code"].clone()),
        (422, json!("invalid_product"))
    );
    assert_eq!(bad_currency.body["errors"][0]["field"], "price.currency");
    let float_price = app
        .admin
        .post(
            "/api/v1/products",
            &json!({"sku": "CAP", "name": "Cap", "price": {"amount": 9.99, "currency": "USD"}, "on_hand": 1}),
        )
        .await;
    assert_eq!(
        (float_price.status, float_price.body["errors"][0]["field"].clone()),
        (422, json!("price.amount"))
    );
    let duplicate = app
        .admin
        .post(
            "/api/v1/products",
            &json!({"sku": "TEE", "name": "Tee", "price": {"amount": 100, "currency": "USD"}, "on_hand": 1}),
        )
        .await;
    assert_eq!(
        (duplicate.status, duplicate.body["code"].clone()),
        (409, json!("sku_exists"))
    );

    for (path, status) in [
        ("/api/v1/orders/ord_nope", 404),
        ("/api/v1/orders/ord_0000000000000000000000000000000f", 404),
        ("/api/v1/orders?limit=1000", 422),
        ("/api/v1/orders?status=lost", 422),
        ("/api/v1/orders?limit=abc", 400),
        ("/api/v1/inventory/has%20space", 422),
        ("/api/v1/no-such-route", 404),
    ] {
        let answer = app.shop.get(path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(
            answer.body["code"].is_string(),
            "{path}: problem+json expected, got {}",
            answer.body
        );
    }
    assert_eq!(app.inventory("TEE").await, (10, 0, 10));
    app.stop().await;
});

both_backends!(openapi_spec_and_health_are_served, |backend| async move {
    let app = spawn_app(backend).await;
    let spec = app.shop.anonymous().get("/api/v1/openapi.json").await;
    assert_eq!(spec.status, 200);
    for path in [
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/inventory/sync",
        "/api/v1/payments/webhook",
    ] {
        assert!(spec.body["paths"][path].is_object(), "{path} missing from the spec");
    }
    assert_eq!(app.shop.anonymous().get("/healthz").await.status, 200);
    let ready = app.shop.anonymous().get("/readyz").await;
    assert_eq!((ready.status, ready.body["ready"].clone()), (200, json!(true)));
    app.stop().await;
});
