//! The happy path and its failure twin: checkout → signed payment webhook →
//! `paid`; a declined card → `payment_failed` with the stock given back.

use crate::both_backends;
use crate::helpers::{order, spawn_app, spawn_app_with};

both_backends!(
    checkout_then_signed_webhook_marks_the_order_paid,
    |backend| async move {
        // No warehouse answers, so the paid order waits for fulfillment
        // instead of moving on while the test looks at it.
        let app = spawn_app_with(backend, |config| config.warehouse.url = "http://127.0.0.1:9".into()).await;
        app.create_product("WH-1000XM5", 34_999, 10).await;
        let created = app
            .shop
            .checkout(&order(&[("WH-1000XM5", 2)], "pm_card_visa"), "key-1")
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.body["status"], "pending_payment");
        assert!(
            created.body["client_secret"]
                .as_str()
                .is_some_and(|s| s.contains("_secret_"))
        );
        assert!(created.body["expires_at"].is_string());
        let order_id = created.body["order_id"].as_str().expect("order id").to_owned();
        assert_eq!(app.inventory("WH-1000XM5").await, (10, 2, 8));

        // The sandbox provider sends a signed payment_intent.succeeded shortly after.
        let paid = app.wait_for_status(&order_id, "paid").await;
        assert_eq!(paid["total"]["amount"], 69_998, "prices come from the catalogue");
        assert_eq!(paid["total"]["currency"], "USD");
        assert_eq!(paid["items"][0]["unit_price"]["amount"], 34_999);
        assert!(
            paid["payment_intent_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("pi_"))
        );
        assert_eq!(
            app.inventory("WH-1000XM5").await,
            (10, 2, 8),
            "paid stock stays reserved until shipped"
        );

        let timeline = app.shop.get(&format!("/api/v1/orders/{order_id}/events")).await;
        assert_eq!(timeline.status, 200);
        let steps: Vec<_> = timeline.body["data"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["to"].clone())
            .collect();
        assert_eq!(steps, ["pending_payment", "paid"]);
        assert!(
            timeline.body["data"][1]["cause"]
                .as_str()
                .is_some_and(|c| c.contains("payment_intent.succeeded"))
        );

        let listed = app
            .shop
            .get("/api/v1/orders?customer=ada@example.com&status=paid")
            .await;
        assert_eq!(listed.status, 200);
        assert_eq!(listed.body["data"][0]["id"], order_id.as_str());
        let customers = app.admin.get("/api/v1/customers/search?q=LOVELACE").await;
        assert_eq!(customers.body["data"][0]["email"], "ada@example.com");
        app.stop().await;
    }
);

both_backends!(
    declined_card_fails_the_payment_and_releases_stock,
    |backend| async move {
        let app = spawn_app(backend).await;
        app.create_product("MUG", 1_500, 5).await;
        let created = app
            .shop
            .checkout(&order(&[("MUG", 3)], "pm_card_declined"), "key-declined")
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let order_id = created.body["order_id"].as_str().expect("order id").to_owned();
        app.wait_for_status(&order_id, "payment_failed").await;
        assert_eq!(app.inventory("MUG").await, (5, 0, 5));
        app.stop().await;
    }
);

both_backends!(
    a_three_item_order_with_one_item_short_reserves_nothing,
    |backend| async move {
        let app = spawn_app(backend).await;
        app.create_product("A-1", 1_000, 10).await;
        app.create_product("B-2", 1_000, 10).await;
        app.create_product("C-3", 1_000, 1).await;
        let answer = app
            .shop
            .checkout(
                &order(&[("A-1", 2), ("B-2", 3), ("C-3", 2)], "pm_card_visa"),
                "three-items",
            )
            .await;
        assert_eq!(answer.status, 409, "{}", answer.body);
        assert_eq!(answer.body["code"], "out_of_stock");
        assert_eq!(answer.body["errors"][0]["field"], "items[sku=C-3].qty");
        for sku in ["A-1", "B-2"] {
            assert_eq!(app.inventory(sku).await, (10, 0, 10), "{sku} must not stay reserved");
        }
        assert_eq!(app.inventory("C-3").await, (1, 0, 1));
        assert_eq!(
            app.shop.get("/api/v1/orders").await.body["data"]
                .as_array()
                .map(Vec::len),
            Some(0)
        );
        app.stop().await;
    }
);

both_backends!(
    lines_of_one_sku_are_summed_before_the_stock_check,
    |backend| async move {
        let app = spawn_app(backend).await;
        app.create_product("SOCKS", 900, 5).await;
        let answer = app
            .shop
            .checkout(&order(&[("SOCKS", 3), ("SOCKS", 3)], "pm_card_visa"), "summed")
            .await;
        assert_eq!(answer.status, 409, "3 + 3 > 5: {}", answer.body);
        let answer = app
            .shop
            .checkout(&order(&[("SOCKS", 2), ("SOCKS", 3)], "pm_card_visa"), "summed-ok")
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(app.inventory("SOCKS").await, (5, 5, 0));
        app.stop().await;
    }
);

both_backends!(inventory_sync_is_idempotent_per_batch, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("BOOT", 12_000, 10).await;
    let held = app.shop.checkout(&order(&[("BOOT", 4)], "pm_card_visa"), "boots").await;
    assert_eq!(held.status, 201);
    let batch = serde_json::json!({"batch_id": "wh-2026-11-23-1", "levels": [{"sku": "BOOT", "on_hand": 25}, {"sku": "NOPE", "on_hand": 3}]});
    let first = app.admin.post("/api/v1/inventory/sync", &batch).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["updated"], serde_json::json!(["BOOT"]));
    assert_eq!(first.body["unknown"], serde_json::json!(["NOPE"]));
    assert_eq!(app.inventory("BOOT").await, (25, 4, 21), "reserved units stay reserved");
    let other = serde_json::json!({"batch_id": "wh-2026-11-23-1", "levels": [{"sku": "BOOT", "on_hand": 1}]});
    let replay = app.admin.post("/api/v1/inventory/sync", &other).await;
    assert_eq!(replay.body["replayed"], true);
    assert_eq!(app.inventory("BOOT").await, (25, 4, 21), "a batch applies once");
    app.stop().await;
});
