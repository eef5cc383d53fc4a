//! Partner webhooks delivered in runs (an endpoint's next deliveries under
//! one lease): order per endpoint holds while workers race for the heads and
//! one endpoint fails for a while, and a worker that dies between a delivery
//! and its record loses nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use holdfast_sandbox::{Delivery, Respond, WebhookReceiver};
use holdfast_service::Role;
use holdfast_service::workers::{relay, webhooks};
use holdfast_signing::WebhookSecret;
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::both_backends;
use crate::helpers::{TestApp, order, spawn_app_as, spawn_receiver};
use crate::steps::worker_context;

const WAIT: Duration = Duration::from_secs(60);

async fn endpoint(app: &TestApp, receiver: &WebhookReceiver, base: &str, name: &str) {
    let created = app
        .admin
        .post(
            "/api/v1/webhook-endpoints",
            &json!({"url": format!("{base}/hooks/{name}"), "event_types": ["*"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = created.body["secret"].as_str().expect("secret");
    receiver.set_secret(name, WebhookSecret::parse(secret).expect("whsec secret"));
}

/// Places `n` orders; returns their ids in the order their events were written.
async fn place_orders(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let placed = app
            .shop
            .checkout(&order(&[("LAMP", 1)], "pm_card_visa"), &format!("runs-{i}"))
            .await;
        assert_eq!(placed.status, 201, "{}", placed.body);
        ids.push(placed.body["order_id"].as_str().expect("order id").to_owned());
    }
    ids
}

/// The order id of each accepted delivery, first acceptance of each event
/// only, in arrival order.
fn accepted_orders(deliveries: &[Delivery]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    deliveries
        .iter()
        .filter(|d| d.is_accepted() && seen.insert(d.webhook_id.clone()))
        .map(|d| {
            d.json()
                .and_then(|j| j["data"]["id"].as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect()
}

both_backends!(
    four_workers_keep_each_endpoints_order_while_one_endpoint_fails,
    |backend| async move {
        // Only the API runs: the test starts the webhook workers itself.
        let app = spawn_app_as(backend, Role::Api, |config| {
            config.webhooks.retry_schedule_ms = vec![0, 50, 100];
            config.workers.poll_interval_ms = 20;
            config.queues.webhooks.concurrency = 2;
            config.queues.webhooks.run_length = 4;
        })
        .await;
        app.create_product("LAMP", 1_000, 1_000).await;
        let (receiver, base) = spawn_receiver().await;
        for name in ["a", "b", "c"] {
            endpoint(&app, &receiver, &base, name).await;
        }
        // b fails its first eight attempts, in the middle of runs.
        receiver.script("b", std::iter::repeat_n(Respond::status(503), 8));
        let placed = place_orders(&app, 40).await;
        let relayer = worker_context(&app, "relay", None);
        while relay::relay_once(&relayer, Utc::now()).await.expect("relay") > 0 {}

        let (stop, shutdown) = watch::channel(false);
        let mut pools = Vec::new();
        for i in 0..4 {
            let ctx = Arc::new(worker_context(&app, &format!("worker-{i}"), None));
            pools.push(tokio::spawn(ctx.run_queue(
                webhooks::QUEUE,
                Arc::new(Notify::new()),
                shutdown.clone(),
            )));
        }
        for name in ["a", "b", "c"] {
            receiver
                .wait_for_accepted(name, placed.len(), WAIT)
                .await
                .unwrap_or_else(|timeout| panic!("{name}: {timeout}"));
            let got = accepted_orders(&receiver.deliveries(name));
            assert_eq!(got, placed, "endpoint {name} got its events in order, each once");
        }
        let attempts_b = receiver.deliveries("b").len();
        assert!(
            attempts_b >= placed.len() + 8,
            "b's failures were retried: {attempts_b}"
        );
        let _ = stop.send(true);
        for pool in pools {
            pool.await.expect("pool task").expect("pool");
        }
        let stats = app.store.queue().stats(Utc::now()).await.expect("stats");
        assert!(
            stats.iter().all(|q| q.queue != webhooks::QUEUE),
            "every job completed: {stats:?}"
        );
        app.stop().await;
    }
);

both_backends!(
    a_worker_killed_between_a_delivery_and_its_record_delivers_it_again,
    |backend| async move {
        let app = spawn_app_as(backend, Role::Api, |config| {
            config.queues.webhooks.run_length = 10;
        })
        .await;
        app.create_product("LAMP", 1_000, 10).await;
        let (receiver, base) = spawn_receiver().await;
        endpoint(&app, &receiver, &base, "k").await;
        // The first delivery is recorded by the partner, which then takes
        // its time to answer: long enough to kill the worker meanwhile.
        receiver.script("k", [Respond::ok().latency(Duration::from_secs(30))]);
        let placed = place_orders(&app, 3).await;
        let ctx = worker_context(&app, "doomed", None);
        while relay::relay_once(&ctx, Utc::now()).await.expect("relay") > 0 {}

        let now = Utc::now();
        let doomed = tokio::spawn({
            let ctx = worker_context(&app, "doomed", None);
            async move { ctx.run_queue_once(webhooks::QUEUE, now).await }
        });
        receiver
            .wait_for_count("k", 1, WAIT)
            .await
            .unwrap_or_else(|timeout| panic!("{timeout}"));
        // Killed: the task is dropped mid-call, before any attempt is
        // recorded or any job completed.
        doomed.abort();
        let _ = doomed.await;

        // Nothing is claimable while the dead worker's lease lasts ...
        let survivor = worker_context(&app, "survivor", None);
        assert_eq!(survivor.run_queue_once(webhooks::QUEUE, now).await.expect("run"), 0);
        // ... then the whole run comes back and goes out again, in order.
        let later = now
            + TimeDelta::seconds(i64::try_from(app.config.queues.webhooks.visibility_timeout_s).expect("timeout") + 1);
        assert_eq!(survivor.run_queue_once(webhooks::QUEUE, later).await.expect("run"), 3);
        let all = receiver.deliveries("k");
        assert_eq!(all.len(), 4, "the first delivery twice, then the other two");
        assert_eq!(
            all[1].webhook_id, all[0].webhook_id,
            "repeated with the same webhook-id"
        );
        assert_eq!(accepted_orders(&all), placed);
        let stats = app.store.queue().stats(later).await.expect("stats");
        assert!(
            stats.iter().all(|q| q.queue != webhooks::QUEUE),
            "every job completed: {stats:?}"
        );
        app.stop().await;
    }
);
