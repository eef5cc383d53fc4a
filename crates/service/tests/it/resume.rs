//! Once checkout's first transaction commits, its idempotency key stays
//! bound to its order: a retry with the key after a crash between the two
//! transactions, or after a failure worth retrying, resumes that order, and
//! the provider makes one intent for it.

use std::time::Duration;

use holdfast_resilience::OnUnavailable;
use holdfast_sandbox::SandboxPayments;
use holdfast_service::pipeline::queues;
use holdfast_service::workers::expiry;
use holdfast_service::{Role, local};
use holdfast_store::{Order, OrderFilter};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, order, spawn_app_with};
use crate::resilience::provider;

async fn all_orders(app: &TestApp) -> Vec<Order> {
    app.store
        .list_orders(&OrderFilter {
            limit: 100,
            ..OrderFilter::default()
        })
        .await
        .expect("orders")
}

fn crash_body() -> serde_json::Value {
    order(&[("CRATE", 1)], "pm_card_visa")
}

/// A node that dies inside the provider call, between checkout's two
/// transactions, with the key `crash-1`: returns the app (another node on
/// the same database), the provider and the order the first transaction
/// wrote.
async fn crash_between_the_transactions(backend: Backend) -> (TestApp, SandboxPayments, Order) {
    let (sandbox, url) = provider().await;
    let app = spawn_app_with(backend, |config| {
        config.payments.url = url.clone();
        // A retry may take the key over one second after the crash.
        config.checkout.idempotency_lease_s = 1;
    })
    .await;
    app.create_product("CRATE", 2_000, 10).await;
    // The provider hangs, so the first node is inside the provider call,
    // between its two transactions, when it dies.
    sandbox.set_latency(Duration::from_secs(30));

    // A second node on the same database, on a runtime of its own that
    // the test kills: every task it runs stops where it is, as in a
    // crash. It runs the API only, so no worker of its own is cut off.
    let config = app.config.clone();
    let (runtime, doomed) = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let doomed = runtime
            .block_on(local::start(config, Role::Api))
            .expect("second node starts");
        (runtime, doomed)
    })
    .await
    .expect("second node");
    let body = crash_body();
    let request = app
        .shop
        .at(&doomed.base_url)
        .request(reqwest::Method::POST, "/api/v1/orders")
        .header("Idempotency-Key", "crash-1")
        .json(&body);
    let cut_off = tokio::spawn(request.send());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let written = loop {
        let orders = all_orders(&app).await;
        if let Some(written) = orders.first() {
            break written.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first transaction never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(written.status.as_str(), "pending_payment");
    assert!(
        written.payment_intent_id.is_none(),
        "the crash comes before the second transaction"
    );
    runtime.shutdown_background();
    // A crashed process frees nothing: its handles are not dropped either.
    std::mem::forget(doomed);
    assert!(
        cut_off.await.expect("client task").is_err(),
        "the crashed node never answered"
    );
    assert_eq!(
        app.inventory("CRATE").await,
        (10, 1, 9),
        "the crashed order holds its stock"
    );
    (app, sandbox, written)
}

both_backends!(
    a_crash_between_the_two_transactions_resumes_the_same_order,
    |backend| async move {
        let (app, sandbox, written) = crash_between_the_transactions(backend).await;
        let body = crash_body();

        sandbox.set_latency(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let retried = app.shop.checkout(&body, "crash-1").await;
        assert_eq!(retried.status, 201, "{}", retried.body);
        assert_eq!(retried.body["order_id"], written.id.as_str(), "the same order, resumed");
        let orders = all_orders(&app).await;
        assert_eq!(orders.len(), 1, "one order: {orders:?}");
        assert!(orders[0].payment_intent_id.is_some(), "{:?}", orders[0]);
        assert_eq!(app.inventory("CRATE").await, (10, 1, 9), "its stock reserved once");
        assert_eq!(sandbox.stats().intents_created, 1, "one intent");
        let replayed = app.shop.checkout(&body, "crash-1").await;
        assert_eq!((replayed.status, &replayed.body), (201, &retried.body));
        app.stop().await;
    }
);

both_backends!(
    a_checkout_stopped_between_its_transactions_is_completed_without_a_retry,
    |backend| async move {
        let (app, sandbox, written) = crash_between_the_transactions(backend).await;
        sandbox.set_latency(Duration::ZERO);
        let checkout = app.config.queues.checkout.template(queues::CHECKOUT);
        let now = chrono::Utc::now();

        // Within the grace the order's own request may still be running.
        let grace = Duration::from_secs(3_600);
        let found = expiry::resume_stalled_once(&app.store, &checkout, grace, now)
            .await
            .expect("sweep");
        assert_eq!(found, 0, "too recent to be stalled");

        // Past it, the sweep hands the order to the checkout worker, which
        // records its intent; no client retry is needed.
        let found = expiry::resume_stalled_once(&app.store, &checkout, Duration::ZERO, now)
            .await
            .expect("sweep");
        assert_eq!(found, 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let completed = loop {
            let order = app.store.get_order(&written.id).await.expect("read").expect("order");
            if order.payment_intent_id.is_some() {
                break order;
            }
            assert!(tokio::time::Instant::now() < deadline, "never completed: {order:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(completed.id, written.id);
        let found = expiry::resume_stalled_once(&app.store, &checkout, Duration::ZERO, chrono::Utc::now())
            .await
            .expect("sweep");
        assert_eq!(found, 0, "a completed checkout is not stalled");
        assert_eq!(app.inventory("CRATE").await, (10, 1, 9), "its stock reserved once");

        // The client's late retry gets the same order and the same intent.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let retried = app.shop.checkout(&crash_body(), "crash-1").await;
        assert_eq!(retried.status, 201, "{}", retried.body);
        assert_eq!(retried.body["order_id"], written.id.as_str(), "the same order");
        assert_eq!(all_orders(&app).await.len(), 1);
        assert_eq!(sandbox.stats().intents_created, 1, "one intent");
        app.stop().await;
    }
);

both_backends!(
    a_provider_failure_after_the_order_keeps_the_key_on_that_order,
    |backend| async move {
        let (sandbox, url) = provider().await;
        let app = spawn_app_with(backend, |config| {
            config.payments.url = url.clone();
            let payments = &mut config.dependencies.payments;
            payments.on_unavailable = OnUnavailable::Reject;
            payments.deadline_ms = 300;
            payments.retry.base_ms = 1;
            payments.retry.max_ms = 5;
            // The breaker stays closed: each attempt reaches the provider.
            payments.breaker.min_calls = 1_000;
        })
        .await;
        app.create_product("FLAKY", 1_500, 10).await;
        let body = order(&[("FLAKY", 1)], "pm_card_visa");

        // The provider answers 5xx, then it times out; each time after the
        // order was written.
        for (n, failure) in ["5xx", "timeout"].into_iter().enumerate() {
            let key = format!("flaky-{failure}");
            match failure {
                "5xx" => sandbox.set_failure_rate(1.0),
                _ => sandbox.set_latency(Duration::from_secs(2)),
            }
            let failed = app.shop.checkout(&body, &key).await;
            assert_eq!(failed.status, 503, "{failure}: {}", failed.body);
            assert_eq!(
                failed.body["code"], "dependency_unavailable",
                "{failure}: {}",
                failed.body
            );
            if failure == "timeout" {
                // The provider's delayed answers to the attempts that timed
                // out come and go before the retry.
                tokio::time::sleep(Duration::from_millis(2_500)).await;
            }
            let orders = all_orders(&app).await;
            assert_eq!(orders.len(), n + 1, "{failure}: the order was written: {orders:?}");
            let written = orders[0].clone();
            // Its stock is back at once; the order waits for the retry.
            let sold = i64::try_from(n).expect("n");
            app.wait_for_inventory("FLAKY", (10, sold, 10 - sold), "the failed checkout released its stock")
                .await;

            sandbox.set_failure_rate(0.0);
            sandbox.set_latency(Duration::ZERO);
            let retried = app.shop.checkout(&body, &key).await;
            assert_eq!(retried.status, 201, "{failure}: {}", retried.body);
            assert_eq!(
                retried.body["order_id"],
                written.id.as_str(),
                "{failure}: the retry resumes the written order"
            );
            assert_eq!(all_orders(&app).await.len(), n + 1, "{failure}: no second order");
            assert_eq!(
                app.inventory("FLAKY").await,
                (10, sold + 1, 9 - sold),
                "{failure}: reserved again, once"
            );
            assert_eq!(
                sandbox.stats().intents_created,
                u64::try_from(n + 1).expect("n"),
                "{failure}: one intent per order"
            );
            let events = app.shop.get(&format!("/api/v1/orders/{}/events", written.id)).await;
            let statuses: Vec<&str> = events.body["data"]
                .as_array()
                .map(|all| all.iter().filter_map(|e| e["to"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(
                statuses,
                ["pending_payment", "accepted", "pending_payment"],
                "{failure}: {}",
                events.body
            );
        }
        app.stop().await;
    }
);
