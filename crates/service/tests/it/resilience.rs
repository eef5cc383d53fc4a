//! Never cascade at the payment provider: a failing provider gets
//! bounded retries, then its breaker opens and checkout fails fast with
//! `Retry-After`; it closes again once the provider recovers, with no second
//! intent for a retried order. The bulkhead sheds at once instead of queueing,
//! and thresholds change at runtime.

use std::time::{Duration, Instant};

use holdfast_resilience::{BreakerConfig, OnUnavailable};
use holdfast_sandbox::{PaymentsConfig, SandboxPayments};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Answer, TestApp, order, spawn_app_with};

/// A sandbox provider the test controls, on a loopback port.
pub async fn provider() -> (SandboxPayments, String) {
    let sandbox = SandboxPayments::new(PaymentsConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(sandbox.clone().serve(listener, std::future::pending()));
    (sandbox, url)
}

/// The app against `url`'s provider, with a payments breaker that opens
/// after `min_calls` failures in a row and tries again after one second,
/// fast retries, and `on_unavailable` as given.
pub async fn spawn_with_quick_breaker(
    backend: crate::helpers::Backend,
    url: &str,
    min_calls: u64,
    on_unavailable: OnUnavailable,
) -> TestApp {
    spawn_app_with(backend, |config| {
        config.payments.url = url.to_owned();
        let payments = &mut config.dependencies.payments;
        payments.breaker = BreakerConfig {
            failure_rate: 0.5,
            window_s: 30,
            min_calls,
            slow_call_ms: 5_000,
            open_s: 1,
            half_open_probes: 1,
        };
        payments.retry.base_ms = 1;
        payments.retry.max_ms = 5;
        payments.on_unavailable = on_unavailable;
    })
    .await
}

async fn breaker(app: &TestApp, name: &str) -> serde_json::Value {
    let listed = app.admin.get("/api/v1/ops/breakers").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.body["data"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no breaker {name}: {}", listed.body))
}

async fn put_breaker(app: &TestApp, name: &str, table: &serde_json::Value) -> Answer {
    let path = format!("/api/v1/ops/breakers/{name}");
    app.admin
        .send(app.admin.request(reqwest::Method::PUT, &path).json(table))
        .await
}

fn retry_after(answer: &Answer) -> u64 {
    answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After on {}: {}", answer.status, answer.body))
}

both_backends!(
    a_failing_provider_trips_the_breaker_and_recovery_closes_it,
    |backend| async move {
        let (sandbox, url) = provider().await;
        let app = spawn_with_quick_breaker(backend, &url, 4, OnUnavailable::Reject).await;
        app.create_product("OAR", 3_000, 100).await;
        sandbox.set_failure_rate(1.0);

        for n in 0..4 {
            let answer = app
                .shop
                .checkout(&order(&[("OAR", 1)], "pm_card_visa"), &format!("oar-{n}"))
                .await;
            assert_eq!(answer.status, 503, "{}", answer.body);
            assert_eq!(answer.body["code"], "dependency_unavailable", "{}", answer.body);
            retry_after(&answer);
        }
        let calls = sandbox.stats().api_calls;
        // Four calls, and retries within the budget: at most the floor of three
        // per window, since 20% of four calls is less than one.
        assert!((4..=7).contains(&calls), "{calls} provider calls for 4 checkouts");
        assert_eq!(breaker(&app, "payments").await["state"], "open");

        let started = Instant::now();
        let refused = app
            .shop
            .checkout(&order(&[("OAR", 1)], "pm_card_visa"), "oar-open")
            .await;
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "an open breaker fails fast"
        );
        assert_eq!(
            sandbox.stats().api_calls,
            calls,
            "an open breaker does not call the provider"
        );
        assert_eq!(
            app.inventory("OAR").await,
            (100, 0, 100),
            "failed checkouts hold no stock"
        );

        sandbox.set_failure_rate(0.0);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // The same idempotency key as a failed attempt: a 503 is not stored, so
        // this retry goes through, and the provider makes one intent for it.
        let placed = app.shop.checkout(&order(&[("OAR", 1)], "pm_card_visa"), "oar-0").await;
        assert_eq!(placed.status, 201, "{}", placed.body);
        assert_eq!(breaker(&app, "payments").await["state"], "closed");
        let again = app.shop.checkout(&order(&[("OAR", 1)], "pm_card_visa"), "oar-0").await;
        assert_eq!(again.body["order_id"], placed.body["order_id"], "replayed");
        assert_eq!(sandbox.stats().intents_created, 1, "no double intent");
        app.stop().await;
    }
);

both_backends!(
    a_payments_outage_takes_orders_and_a_worker_creates_their_intents,
    |backend| async move {
        let (sandbox, url) = provider().await;
        let app = spawn_with_quick_breaker(backend, &url, 2, OnUnavailable::Queue).await;
        app.create_product("KAYAK", 30_000, 10).await;
        sandbox.set_failure_rate(1.0);

        let mut taken = Vec::new();
        for n in 0..3 {
            let started = Instant::now();
            let answer = app
                .shop
                .checkout(&order(&[("KAYAK", 1)], "pm_card_visa"), &format!("kayak-{n}"))
                .await;
            assert_eq!(answer.status, 202, "{}", answer.body);
            // The stock is held; only the intent is left for later.
            assert_eq!(answer.body["status"], "pending_payment", "{}", answer.body);
            assert!(answer.body["expires_at"].is_string(), "{}", answer.body);
            assert!(answer.body["client_secret"].is_null(), "{}", answer.body);
            if n == 2 {
                assert!(
                    started.elapsed() < Duration::from_millis(500),
                    "with the breaker open the order is taken at once"
                );
            }
            taken.push(answer.body["order_id"].as_str().expect("order id").to_owned());
        }
        assert_eq!(breaker(&app, "payments").await["state"], "open");
        assert_eq!(
            app.inventory("KAYAK").await,
            (10, 3, 7),
            "the taken orders hold their stock"
        );
        // A replay of the same key answers the same 202.
        let replay = app
            .shop
            .checkout(&order(&[("KAYAK", 1)], "pm_card_visa"), "kayak-0")
            .await;
        assert_eq!((replay.status, &replay.body["order_id"]), (202, &json!(taken[0])));

        sandbox.set_failure_rate(0.0);
        // This provider sends no webhooks: the intent existing is the end.
        for order_id in &taken {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let answer = app.shop.get(&format!("/api/v1/orders/{order_id}")).await;
                if answer.body["payment_intent_id"].is_string() {
                    assert_eq!(answer.body["status"], "pending_payment", "{}", answer.body);
                    break;
                }
                assert!(Instant::now() < until, "no intent for {order_id}: {}", answer.body);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let intent = app
            .admin
            .post("/api/v1/payments/intent", &json!({"order_id": taken[0]}))
            .await;
        assert_eq!(intent.status, 200, "the client fetches its intent: {}", intent.body);
        assert!(intent.body["client_secret"].is_string(), "{}", intent.body);
        assert_eq!(
            sandbox.stats().intents_created,
            3,
            "one intent per order, however often the worker tried"
        );
        assert_eq!(app.inventory("KAYAK").await, (10, 3, 7), "the orders keep their stock");
        app.stop().await;
    }
);

both_backends!(a_full_bulkhead_sheds_at_once, |backend| async move {
    let (sandbox, url) = provider().await;
    let app = spawn_app_with(backend, |config| {
        config.payments.url = url.clone();
        config.dependencies.payments.max_concurrency = 1;
        // Shedding is the point here; "queue" would take the order for later.
        config.dependencies.payments.on_unavailable = OnUnavailable::Reject;
    })
    .await;
    app.create_product("SAIL", 9_000, 10).await;
    sandbox.set_latency(Duration::from_millis(800));
    let first = {
        let shop = app.shop.clone();
        tokio::spawn(async move { shop.checkout(&order(&[("SAIL", 1)], "pm_card_visa"), "sail-1").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let shed = app
        .shop
        .checkout(&order(&[("SAIL", 1)], "pm_card_visa"), "sail-2")
        .await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.body["code"], "overloaded", "{}", shed.body);
    assert!(retry_after(&shed) >= 1);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed at once, not after waiting for the slow call"
    );
    assert_eq!(first.await.expect("first").status, 201);
    assert_eq!(breaker(&app, "payments").await["rejected_bulkhead"], 1);
    app.stop().await;
});

both_backends!(thresholds_change_at_runtime, |backend| async move {
    let app = spawn_app_with(backend, |_| {}).await;
    let before = breaker(&app, "warehouse").await;
    let mut table = before["config"].clone();
    table["breaker"]["min_calls"] = json!(77);
    table["max_concurrency"] = json!(5);
    let changed = put_breaker(&app, "warehouse", &table).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let after = breaker(&app, "warehouse").await;
    assert_eq!(after["config"]["breaker"]["min_calls"], 77);
    assert_eq!(after["config"]["max_concurrency"], 5);
    assert_eq!(after["state"], before["state"]);

    table["breaker"]["failure_rate"] = json!(2.0);
    let invalid = put_breaker(&app, "warehouse", &table).await;
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    assert_eq!(
        breaker(&app, "warehouse").await["config"]["breaker"]["failure_rate"],
        before["config"]["breaker"]["failure_rate"]
    );
    let unknown = put_breaker(&app, "teleporter", &table).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let forbidden = app.shop.get("/api/v1/ops/breakers").await;
    assert_eq!(forbidden.status, 403);
    let metrics = app.shop.anonymous().get("/metrics").await;
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(
        text.contains("holdfast_breaker_state"),
        "the breaker gauge the alert rule reads"
    );
    app.stop().await;
});

both_backends!(a_callers_remaining_budget_bounds_the_request, |backend| async move {
    // Another Holdfast node calling this one passes what is left of its own
    // request's budget; a slow provider then costs at most that.
    let (sandbox, url) = provider().await;
    let app = spawn_app_with(backend, |config| {
        config.payments.url = url.clone();
        config.dependencies.payments.on_unavailable = OnUnavailable::Reject;
    })
    .await;
    app.create_product("ROPE", 800, 5).await;
    sandbox.set_latency(Duration::from_millis(1_000));
    let started = Instant::now();
    let budgeted = app
        .shop
        .send(
            app.shop
                .request(reqwest::Method::POST, "/api/v1/orders")
                .header("Idempotency-Key", "rope-budgeted")
                .header("holdfast-deadline-ms", "200")
                .json(&order(&[("ROPE", 1)], "pm_card_visa")),
        )
        .await;
    assert_eq!(budgeted.status, 503, "{}", budgeted.body);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "the caller's 200 ms budget applied: {:?}",
        started.elapsed()
    );
    // The release runs in a task of its own, so it finishes even though the
    // response was cut off: it may land just after the 503.
    app.wait_for_inventory("ROPE", (5, 0, 5), "the failed checkout released its stock")
        .await;
    // A header that is not a number is ignored, not trusted: the configured
    // deadline applies and the slow provider is waited for.
    let garbled = app
        .shop
        .send(
            app.shop
                .request(reqwest::Method::POST, "/api/v1/orders")
                .header("Idempotency-Key", "rope-garbled")
                .header("holdfast-deadline-ms", "soon")
                .json(&order(&[("ROPE", 1)], "pm_card_visa")),
        )
        .await;
    assert_eq!(garbled.status, 201, "{}", garbled.body);
    app.stop().await;
});

both_backends!(
    a_queue_claims_nothing_while_its_dependency_is_open,
    |backend| async move {
        // The warehouse refuses every connection; its breaker opens after two
        // failed shipments and stays open. Retried fulfillment jobs must then
        // wait for it, not fail against it one receive after another.
        let app = spawn_app_with(backend, |config| {
            config.warehouse.url = "http://127.0.0.1:9".into();
            let warehouse = &mut config.dependencies.warehouse;
            warehouse.breaker.min_calls = 2;
            warehouse.breaker.window_s = 60;
            warehouse.breaker.open_s = 60;
            warehouse.retry.max_attempts = 1;
        })
        .await;
        app.create_product("HULL", 50_000, 10).await;
        for n in 0..3 {
            let placed = app
                .shop
                .checkout(&order(&[("HULL", 1)], "pm_card_visa"), &format!("hull-{n}"))
                .await;
            assert_eq!(placed.status, 201, "{}", placed.body);
            app.wait_for_status(placed.body["order_id"].as_str().expect("id"), "paid")
                .await;
        }
        let until = Instant::now() + Duration::from_secs(15);
        while breaker(&app, "warehouse").await["state"] != "open" {
            assert!(Instant::now() < until, "the warehouse breaker never opened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = breaker(&app, "warehouse").await["rejected_breaker_open"].clone();
        // The jobs' first retries fall due within about two seconds.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = breaker(&app, "warehouse").await;
        assert_eq!(after["state"], "open");
        assert_eq!(
            after["rejected_breaker_open"], refused,
            "no job was handed to the open breaker"
        );
        let queues = app.admin.get("/api/v1/ops/queues").await;
        assert_eq!(queues.status, 200, "{}", queues.body);
        let fulfillment = queues.body["queues"]
            .as_array()
            .and_then(|all| all.iter().find(|q| q["queue"] == "fulfillment"))
            .cloned()
            .unwrap_or_else(|| panic!("no fulfillment queue: {}", queues.body));
        assert_eq!(fulfillment["dead"], 0, "{fulfillment}");
        let waiting = ["ready", "in_flight", "delayed"]
            .iter()
            .map(|k| fulfillment[*k].as_i64().unwrap_or(0))
            .sum::<i64>();
        assert_eq!(waiting, 3, "every shipment still waits: {fulfillment}");
        app.stop().await;
    }
);
