//! The cold path end to end: checkout → payment webhook → fulfillment →
//! `shipped`, with every step delivered to partner endpoints, signed per the
//! Standard Webhooks spec, in order, through failures, 410s and replays.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use hmac::{Hmac, Mac};
use holdfast_sandbox::{Delivery, Respond, WebhookReceiver};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::both_backends;
use crate::helpers::{TestApp, order, spawn_app, spawn_app_with, spawn_receiver};

const WAIT: Duration = Duration::from_secs(30);
const TIMELINE: [&str; 4] = [
    "order.pending_payment",
    "order.paid",
    "order.fulfilling",
    "order.shipped",
];

/// The receiver's side of the Standard Webhooks spec, written here from the
/// spec rather than shared with the signer: the key is the base64 after
/// `whsec_`; the signed content is `{id}.{timestamp}.{body}`; the header
/// lists `v1,<base64 HMAC-SHA256>` signatures separated by spaces; the
/// timestamp must be within five minutes of now.
fn verify(secret: &str, delivery: &Delivery) -> Result<(), String> {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").ok_or("secret without whsec_")?)
        .map_err(|e| e.to_string())?;
    let id = delivery.webhook_id.as_deref().ok_or("no webhook-id")?;
    let timestamp = delivery.timestamp.ok_or("no webhook-timestamp")?;
    if (Utc::now().timestamp() - timestamp).abs() > 300 {
        return Err(format!("timestamp {timestamp} is outside the tolerance"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&delivery.body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    let header = delivery.signature.as_deref().ok_or("no webhook-signature")?;
    if header.split(' ').any(|signature| signature == expected) {
        Ok(())
    } else {
        Err(format!("no signature in {header:?} matches"))
    }
}

async fn register(app: &TestApp, url: &str, types: Value) -> (String, String) {
    let created = app
        .admin
        .post("/api/v1/webhook-endpoints", &json!({"url": url, "event_types": types}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let field = |name: &str| created.body[name].as_str().expect(name).to_owned();
    (field("id"), field("secret"))
}

async fn listen(app: &TestApp, receiver: &WebhookReceiver, base: &str, name: &str, types: Value) -> (String, String) {
    let (id, secret) = register(app, &format!("{base}/hooks/{name}"), types).await;
    receiver.set_secret(
        name,
        holdfast_signing::WebhookSecret::parse(&secret).expect("whsec secret"),
    );
    (id, secret)
}

async fn buy(app: &TestApp, sku: &str, key: &str) -> String {
    let placed = app.shop.checkout(&order(&[(sku, 1)], "pm_card_visa"), key).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    placed.body["order_id"].as_str().expect("order id").to_owned()
}

/// Waits until `name` has answered 2xx `count` times; returns those deliveries.
async fn accepted(receiver: &WebhookReceiver, name: &str, count: usize) -> Vec<Delivery> {
    receiver
        .wait_for_accepted(name, count, WAIT)
        .await
        .unwrap_or_else(|timeout| panic!("{name}: fewer than {count} deliveries accepted: {timeout}"));
    receiver.accepted(name)
}

fn kinds(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| {
            d.json()
                .and_then(|j| j["type"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".to_owned())
        })
        .collect()
}

fn order_of(delivery: &Delivery) -> String {
    let data = delivery.json().map(|j| j["data"]["id"].clone());
    data.and_then(|id| id.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Every delivery of `order_id`, in arrival order.
fn for_order(deliveries: &[Delivery], order_id: &str) -> Vec<Delivery> {
    deliveries.iter().filter(|d| order_of(d) == order_id).cloned().collect()
}

both_backends!(paid_orders_ship_and_partners_hear_every_step, |backend| async move {
    let app = spawn_app_with(backend, |config| config.workers.metrics_interval_ms = 100).await;
    let (receiver, base) = spawn_receiver().await;
    let (all_id, all_secret) = listen(&app, &receiver, &base, "all", json!(["*"])).await;
    let (_, shipped_secret) = listen(&app, &receiver, &base, "shipped", json!(["order.shipped"])).await;
    app.create_product("LAMP", 4_000, 5).await;

    let order_id = buy(&app, "LAMP", "pipeline-1").await;
    let shipped = app.wait_for_status(&order_id, "shipped").await;
    let tracking = shipped["tracking_number"].as_str().expect("tracking number").to_owned();
    assert_eq!(app.inventory("LAMP").await, (4, 0, 4), "one unit shipped, none held");

    let all = accepted(&receiver, "all", 4).await;
    assert_eq!(kinds(&all), TIMELINE, "every step, in order");
    for delivery in &all {
        verify(&all_secret, delivery).expect("signature verifies under the spec");
        assert!(delivery.webhook_id.as_deref().is_some_and(|id| id.starts_with("evt_")));
        assert_eq!(order_of(delivery), order_id);
    }
    let last = all[3].json().expect("json");
    assert_eq!(last["data"]["tracking_number"], json!(tracking));
    assert_eq!(last["data"]["status"], json!("shipped"));
    assert!(chrono::DateTime::parse_from_rfc3339(last["timestamp"].as_str().expect("timestamp")).is_ok());

    let only_shipped = accepted(&receiver, "shipped", 1).await;
    assert_eq!(kinds(&only_shipped), ["order.shipped"]);
    verify(&shipped_secret, &only_shipped[0]).expect("signature verifies");
    assert_eq!(
        only_shipped[0].webhook_id, all[3].webhook_id,
        "webhook-id is the event id"
    );

    let timeline = app.shop.get(&format!("/api/v1/orders/{order_id}/events")).await;
    assert_eq!(
        timeline.body["data"].as_array().map(Vec::len),
        Some(4),
        "{}",
        timeline.body
    );
    // The receiver answers before the worker records the attempt.
    let log = wait_for(|| async {
        let log = app
            .admin
            .get(&format!("/api/v1/webhook-endpoints/{all_id}/deliveries"))
            .await;
        let data = log.body["data"].as_array().cloned().unwrap_or_default();
        (data.len() == 4 && data.iter().all(|d| d["status"] != "pending")).then_some(data)
    })
    .await;
    assert!(
        log.iter().all(|d| d["status"] == "succeeded" && d["attempts"] == 1),
        "{log:?}"
    );

    // The names the shipped alert rules read.
    let metrics = wait_for(|| async {
        let text = app
            .shop
            .anonymous()
            .get("/metrics")
            .await
            .body
            .as_str()
            .unwrap_or_default()
            .to_owned();
        text.contains("holdfast_webhook_endpoint_failing").then_some(text)
    })
    .await;
    for name in [
        "holdfast_queue_dead_letter_jobs",
        "holdfast_queue_oldest_job_age_seconds",
        "holdfast_outbox_lag_seconds",
        "holdfast_webhook_deliveries_total",
        "holdfast_jobs_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    app.stop().await;
});

both_backends!(
    a_failing_partner_gets_every_event_in_order_after_it_recovers,
    |backend| async move {
        let app = spawn_app_with(backend, |config| {
            config.webhooks.retry_schedule_ms = vec![0, 100, 200];
            config.workers.poll_interval_ms = 50;
        })
        .await;
        let (receiver, base) = spawn_receiver().await;
        receiver.script(
            "flaky",
            [Respond::status(503).times(3), Respond::status(429).retry_after(1)],
        );
        let (endpoint, secret) = listen(&app, &receiver, &base, "flaky", json!(["*"])).await;
        app.create_product("KITE", 2_500, 5).await;

        let first = buy(&app, "KITE", "flaky-1").await;
        let second = buy(&app, "KITE", "flaky-2").await;
        app.wait_for_status(&first, "shipped").await;
        app.wait_for_status(&second, "shipped").await;

        let delivered = accepted(&receiver, "flaky", 8).await;
        for order_id in [&first, &second] {
            assert_eq!(kinds(&for_order(&delivered, order_id)), TIMELINE, "order {order_id}");
        }
        assert!(delivered.iter().all(|d| verify(&secret, d).is_ok()));
        let mut ids: Vec<_> = delivered.iter().map(|d| d.webhook_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8, "no event delivered twice");

        let all = receiver.deliveries("flaky");
        let statuses: Vec<u16> = all.iter().map(|d| d.status).take(5).collect();
        assert_eq!(
            statuses,
            [503, 503, 503, 429, 200],
            "the head of the line is retried until it succeeds"
        );
        assert_eq!(all.len(), 12, "four failed attempts, then each event once");
        assert!(
            all[1..5].iter().all(|d| d.webhook_id == all[0].webhook_id),
            "retries keep the webhook-id"
        );
        let waited = all[4].received_at - all[3].received_at;
        assert!(
            waited >= chrono::TimeDelta::milliseconds(950),
            "Retry-After: 1 honoured, waited {waited}"
        );

        let log = wait_for(|| async {
            let log = app
                .admin
                .get(&format!("/api/v1/webhook-endpoints/{endpoint}/deliveries?limit=100"))
                .await;
            let data = log.body["data"].as_array().cloned().unwrap_or_default();
            (data.len() == 8 && data.iter().all(|d| d["status"] == "succeeded")).then_some(data)
        })
        .await;
        let oldest = log.last().expect("a delivery");
        assert_eq!(oldest["attempts"], 5, "{oldest}");
        let detail = app
            .admin
            .get(&format!(
                "/api/v1/webhook-endpoints/{endpoint}/deliveries/{}",
                oldest["id"].as_str().expect("id")
            ))
            .await;
        let codes: Vec<Value> = detail.body["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| a["status_code"].clone())
            .collect();
        assert_eq!(codes, [json!(503), json!(503), json!(503), json!(429), json!(200)]);
        app.stop().await;
    }
);

both_backends!(
    gone_disables_the_endpoint_and_replay_sends_again,
    |backend| async move {
        let app = spawn_app_with(backend, |config| config.workers.poll_interval_ms = 50).await;
        let (receiver, base) = spawn_receiver().await;
        receiver.script("gone", [Respond::status(410)]);
        let (endpoint, _) = listen(&app, &receiver, &base, "gone", json!(["*"])).await;
        app.create_product("DRUM", 9_000, 3).await;
        let started = Utc::now() - chrono::TimeDelta::minutes(1);
        let order_id = buy(&app, "DRUM", "gone-1").await;
        app.wait_for_status(&order_id, "shipped").await;

        // The 410 disables the endpoint; what was already queued for it is
        // recorded as failed, and nothing more is fanned out to it.
        let settled = wait_for(|| async {
            let endpoint_now = app.admin.get(&format!("/api/v1/webhook-endpoints/{endpoint}")).await;
            let log = app
                .admin
                .get(&format!("/api/v1/webhook-endpoints/{endpoint}/deliveries"))
                .await;
            let data = log.body["data"].as_array().cloned().unwrap_or_default();
            let done = endpoint_now.body["status"] == "disabled" && data.iter().all(|d| d["status"] == "failed");
            done.then_some((endpoint_now.body, data))
        })
        .await;
        let (disabled, log) = settled;
        assert!(
            disabled["disabled_reason"].as_str().is_some_and(|r| r.contains("410")),
            "{disabled}"
        );
        assert!((1..=4).contains(&log.len()), "{log:?}");
        assert!(log.iter().all(|d| d["attempts"] == 1), "{log:?}");
        assert_eq!(receiver.deliveries("gone").len(), 1, "nothing is sent after the 410");

        let enabled = app
            .admin
            .post(&format!("/api/v1/webhook-endpoints/{endpoint}/enable"), &json!({}))
            .await;
        assert_eq!(enabled.body["status"], "enabled", "{}", enabled.body);
        let replayed = app
            .admin
            .post(
                &format!("/api/v1/webhook-endpoints/{endpoint}/replay"),
                &json!({"since": started}),
            )
            .await;
        assert_eq!(replayed.status, 202, "{}", replayed.body);
        assert_eq!(replayed.body["deliveries"].as_array().map(Vec::len), Some(4));
        let replayed = accepted(&receiver, "gone", 4).await;
        assert_eq!(kinds(&replayed), TIMELINE);

        let one = log.last().expect("oldest delivery")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let again = app
            .admin
            .post(
                &format!("/api/v1/webhook-endpoints/{endpoint}/deliveries/{one}/replay"),
                &json!({}),
            )
            .await;
        assert_eq!(again.status, 202, "{}", again.body);
        let again = accepted(&receiver, "gone", 5).await;
        assert_eq!(again[4].webhook_id, again[0].webhook_id, "a replay keeps the event id");
        app.stop().await;
    }
);

both_backends!(
    a_slow_partner_holds_back_only_its_own_deliveries,
    |backend| async move {
        let app = spawn_app_with(backend, |config| config.workers.poll_interval_ms = 50).await;
        let (receiver, base) = spawn_receiver().await;
        receiver.set_default("slow", Respond::ok().latency(Duration::from_secs(3)));
        listen(&app, &receiver, &base, "slow", json!(["*"])).await;
        listen(&app, &receiver, &base, "fast", json!(["*"])).await;
        app.create_product("ROPE", 1_200, 2).await;
        let order_id = buy(&app, "ROPE", "slow-1").await;
        app.wait_for_status(&order_id, "shipped").await;

        let fast = accepted(&receiver, "fast", 4).await;
        assert_eq!(kinds(&fast), TIMELINE);
        // The slow endpoint takes 3 s per delivery, one at a time: it cannot
        // have finished while the fast one got everything.
        assert!(
            receiver.accepted("slow").len() < 4,
            "the fast endpoint waited for the slow one"
        );
        let slow = receiver
            .wait_for_accepted("slow", 4, Duration::from_secs(60))
            .await
            .expect("the slow endpoint gets everything too");
        assert_eq!(
            kinds(&slow.into_iter().filter(|d| d.is_accepted()).collect::<Vec<_>>()),
            TIMELINE
        );
        app.stop().await;
    }
);

both_backends!(endpoint_input_is_checked, |backend| async move {
    let app = spawn_app(backend).await;
    let cases = [
        (json!({"url": "ftp://x.example", "event_types": ["*"]}), "url"),
        (json!({"url": "not a url", "event_types": ["*"]}), "url"),
        (json!({"url": "https://x.example/h", "event_types": []}), "event_types"),
        (
            json!({"url": "https://x.example/h", "event_types": ["order.teleported"]}),
            "event_types[0]",
        ),
        (
            json!({"url": "https://x.example/h", "event_types": ["*"], "secret": "hunter2"}),
            "secret",
        ),
        // 16 key bytes: below the 24 the Standard Webhooks spec asks for.
        (
            json!({"url": "https://x.example/h", "event_types": ["*"], "secret": "whsec_AAAAAAAAAAAAAAAAAAAAAA=="}),
            "secret",
        ),
        (
            json!({"url": "https://x.example/h", "event_types": ["*"], "colour": "red"}),
            "",
        ),
    ];
    for (body, field) in cases {
        let answer = app.admin.post("/api/v1/webhook-endpoints", &body).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert_eq!(answer.body["code"], "invalid_request", "{}", answer.body);
        if !field.is_empty() {
            assert_eq!(answer.body["errors"][0]["field"], field, "{}", answer.body);
        }
    }
    let forbidden = app.shop.get("/api/v1/webhook-endpoints").await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    let missing = app
        .admin
        .get("/api/v1/webhook-endpoints/we_00000000000000000000000000000000")
        .await;
    assert_eq!(missing.status, 404);
    let junk = app.admin.delete("/api/v1/webhook-endpoints/junk").await;
    assert_eq!(junk.status, 404);

    let (id, _) = register(
        &app,
        "https://partner.example/hooks",
        json!(["order.paid", "order.paid"]),
    )
    .await;
    let listed = app.admin.get("/api/v1/webhook-endpoints").await;
    assert_eq!(listed.body["data"][0]["event_types"], json!(["order.paid"]));
    assert!(
        listed.body["data"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    assert_eq!(
        app.admin
            .delete(&format!("/api/v1/webhook-endpoints/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(
        app.admin
            .delete(&format!("/api/v1/webhook-endpoints/{id}"))
            .await
            .status,
        404
    );

    let queues = app.admin.get("/api/v1/ops/queues").await;
    assert_eq!(queues.status, 200, "{}", queues.body);
    assert!(queues.body["outbox"]["unpublished"].is_number(), "{}", queues.body);
    assert_eq!(app.shop.get("/api/v1/ops/queues").await.status, 403);
    let bad_redrive = app
        .admin
        .post("/api/v1/ops/queues/fulfillment/redrive", &json!({"job_ids": ["nope"]}))
        .await;
    assert_eq!(bad_redrive.status, 422, "{}", bad_redrive.body);
    assert_eq!(bad_redrive.body["errors"][0]["field"], "job_ids[0]");
    app.stop().await;
});

/// Polls `probe` until it returns something, for up to `WAIT`.
async fn wait_for<T, F, Fut>(probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
