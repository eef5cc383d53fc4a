//! The PaymentIntent API: outcomes by payment method, idempotency, faults, errors.

use std::time::{Duration, Instant};

use holdfast_signing::stripe::{DEFAULT_TOLERANCE, unix_now, verify_stripe_signature};

use crate::support::{Receiver, SECRET, TestResult, config_with_webhook, eventually, get, post_form, spawn_payments};

const VISA: &str = "amount=2599&currency=usd&payment_method=pm_card_visa&confirm=true&metadata%5Border_id%5D=ord_123";
const DECLINED: &str =
    "amount=2599&currency=usd&payment_method=pm_card_declined&confirm=true&metadata%5Border_id%5D=ord_9";

#[tokio::test]
async fn visa_is_processing_then_succeeds_with_a_signed_webhook() -> TestResult {
    let receiver = Receiver::default();
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let (payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;

    let created = post_form(&sandbox.base_url, "/v1/payment_intents", Some("key-visa"), VISA).await?;
    assert_eq!(created.status, 200, "{}", created.body);
    let intent = created.json();
    let id = intent["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("pi_"), "{id}");
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["status"], "processing");
    assert_eq!(intent["amount"], 2599);
    assert_eq!(intent["currency"], "usd");
    assert_eq!(intent["metadata"]["order_id"], "ord_123");
    let secret = intent["client_secret"].as_str().unwrap_or_default();
    assert!(secret.starts_with(&format!("{id}_secret_")), "{secret}");

    let events = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    let event = events[0].json();
    assert_eq!(event["type"], "payment_intent.succeeded");
    assert_eq!(event["object"], "event");
    assert!(event["id"].as_str().unwrap_or_default().starts_with("evt_"));
    assert_eq!(event["data"]["object"]["id"], id.as_str());
    assert_eq!(event["data"]["object"]["status"], "succeeded");
    assert_eq!(event["data"]["object"]["metadata"]["order_id"], "ord_123");
    let verified = verify_stripe_signature(
        SECRET,
        events[0].signature.as_deref(),
        &events[0].body,
        unix_now(),
        DEFAULT_TOLERANCE,
    );
    assert_eq!(verified, Ok(()));

    let fetched = get(&sandbox.base_url, &format!("/v1/payment_intents/{id}")).await?;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json()["status"], "succeeded");
    assert_eq!(fetched.json()["amount_received"], 2599);
    assert!(eventually(Duration::from_secs(2), || payments.stats().webhooks_sent == 1).await);
    Ok(())
}

#[tokio::test]
async fn declined_cards_send_payment_failed() -> TestResult {
    let receiver = Receiver::default();
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let (_payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;

    let declined = post_form(&sandbox.base_url, "/v1/payment_intents", None, DECLINED).await?;
    assert_eq!(declined.status, 200, "{}", declined.body);
    let poor = DECLINED.replace("pm_card_declined", "pm_card_chargeDeclinedInsufficientFunds");
    let poor = post_form(&sandbox.base_url, "/v1/payment_intents", None, &poor).await?;
    assert_eq!(poor.status, 200, "{}", poor.body);

    let events = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 2);
    let mut decline_codes = Vec::new();
    for event in &events {
        let event = event.json();
        assert_eq!(event["type"], "payment_intent.payment_failed");
        let intent = &event["data"]["object"];
        assert_eq!(intent["status"], "requires_payment_method");
        assert_eq!(intent["last_payment_error"]["code"], "card_declined");
        decline_codes.push(
            intent["last_payment_error"]["decline_code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    decline_codes.sort();
    assert_eq!(decline_codes, ["generic_decline", "insufficient_funds"]);

    let id = declined.json()["id"].as_str().unwrap_or_default().to_owned();
    let fetched = get(&sandbox.base_url, &format!("/v1/payment_intents/{id}")).await?;
    assert_eq!(fetched.json()["status"], "requires_payment_method");
    assert_eq!(fetched.json()["amount_received"], 0);
    Ok(())
}

#[tokio::test]
async fn a_replayed_key_returns_the_identical_response_and_creates_one_intent() -> TestResult {
    let receiver = Receiver::default();
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let (payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;

    let first = post_form(&sandbox.base_url, "/v1/payment_intents", Some("order-ord_123"), VISA).await?;
    // Same parameters in another order are the same request.
    let reordered = "metadata%5Border_id%5D=ord_123&confirm=true&payment_method=pm_card_visa&currency=usd&amount=2599";
    let second = post_form(
        &sandbox.base_url,
        "/v1/payment_intents",
        Some("order-ord_123"),
        reordered,
    )
    .await?;
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert_eq!(first.body, second.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(
        second.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(payments.stats().intents_created, 1);

    // One intent means one event, even after the replay.
    let _ = receiver.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_intent() -> TestResult {
    let (payments, sandbox) = spawn_payments(config_with_webhook(None)).await?;
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let base = sandbox.base_url.clone();
            tokio::spawn(async move { post_form(&base, "/v1/payment_intents", Some("race-key"), VISA).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for request in requests {
        let reply = request.await??;
        assert_eq!(reply.status, 200, "{}", reply.body);
        bodies.push(reply.body);
    }
    assert!(bodies.iter().all(|body| *body == bodies[0]));
    assert_eq!(payments.stats().intents_created, 1);
    Ok(())
}

#[tokio::test]
async fn a_reused_key_with_different_params_is_an_idempotency_error() -> TestResult {
    let (payments, sandbox) = spawn_payments(config_with_webhook(None)).await?;
    let first = post_form(&sandbox.base_url, "/v1/payment_intents", Some("k-1"), VISA).await?;
    assert_eq!(first.status, 200);
    let changed = VISA.replace("amount=2599", "amount=100");
    let second = post_form(&sandbox.base_url, "/v1/payment_intents", Some("k-1"), &changed).await?;
    assert_eq!(second.status, 400);
    assert_eq!(second.json()["error"]["type"], "idempotency_error");
    assert_eq!(payments.stats().intents_created, 1);
    Ok(())
}

#[tokio::test]
async fn injected_failures_answer_500_and_change_nothing() -> TestResult {
    let config = holdfast_sandbox::PaymentsConfig {
        failure_rate: 1.0,
        ..config_with_webhook(None)
    };
    let (payments, sandbox) = spawn_payments(config).await?;
    let failed = post_form(&sandbox.base_url, "/v1/payment_intents", Some("k-retry"), VISA).await?;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.json()["error"]["type"], "api_error");
    let stats = payments.stats();
    assert_eq!(
        (stats.intents_created, stats.injected_failures, stats.api_calls),
        (0, 1, 1)
    );

    // The failure stored nothing under the key, so the retry executes cleanly.
    payments.set_failure_rate(0.0);
    let retried = post_form(&sandbox.base_url, "/v1/payment_intents", Some("k-retry"), VISA).await?;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    assert_eq!(payments.stats().intents_created, 1);
    Ok(())
}

#[tokio::test]
async fn latency_is_added_to_every_call() -> TestResult {
    let (payments, sandbox) = spawn_payments(config_with_webhook(None)).await?;
    payments.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let reply = get(&sandbox.base_url, "/v1/payment_intents/pi_missing").await?;
    assert_eq!(reply.status, 404);
    assert!(started.elapsed() >= Duration::from_millis(300));
    Ok(())
}

#[tokio::test]
async fn requests_without_a_test_key_are_rejected() -> TestResult {
    let (payments, sandbox) = spawn_payments(config_with_webhook(None)).await?;
    let url = format!("{}/v1/payment_intents", sandbox.base_url);
    let client = reqwest::Client::new();
    let missing = client.post(&url).body(VISA).send().await?;
    assert_eq!(missing.status().as_u16(), 401);
    let body: serde_json::Value = missing.json().await?;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let live = client
        .post(&url)
        .header("authorization", "Bearer sk_live_123")
        .body(VISA)
        .send()
        .await?;
    assert_eq!(live.status().as_u16(), 401);
    assert_eq!(payments.stats().intents_created, 0);
    Ok(())
}

#[tokio::test]
async fn invalid_requests_get_stripe_shaped_errors() -> TestResult {
    let (_payments, sandbox) = spawn_payments(config_with_webhook(None)).await?;
    let cases = [
        (
            "amount=100&currency=usd&payment_method=card_visa&confirm=true",
            "payment_method",
        ),
        ("currency=usd&payment_method=pm_card_visa&confirm=true", "amount"),
        ("amount=-5&currency=usd", "amount"),
        ("amount=100&currency=usdollar", "currency"),
    ];
    for (form, param) in cases {
        let reply = post_form(&sandbox.base_url, "/v1/payment_intents", None, form).await?;
        assert_eq!(reply.status, 400, "{form}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error", "{form}");
        assert_eq!(reply.json()["error"]["param"], param, "{form}");
    }
    let missing = get(&sandbox.base_url, "/v1/payment_intents/pi_nope").await?;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "resource_missing");
    let unknown = get(&sandbox.base_url, "/v1/charges").await?;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["type"], "invalid_request_error");
    Ok(())
}

#[tokio::test]
async fn cancelling_a_processing_intent_stops_it_settling() -> TestResult {
    let receiver = Receiver::default();
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let config = holdfast_sandbox::PaymentsConfig {
        webhook_delay: Duration::from_millis(300),
        ..config_with_webhook(Some(webhook_url))
    };
    let (payments, sandbox) = spawn_payments(config).await?;
    let created = post_form(&sandbox.base_url, "/v1/payment_intents", None, VISA).await?;
    let id = created.json()["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/payment_intents/{id}/cancel");

    let cancelled = post_form(&sandbox.base_url, &path, None, "cancellation_reason=abandoned").await?;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "canceled");
    assert_eq!(cancelled.json()["cancellation_reason"], "abandoned");
    let again = post_form(&sandbox.base_url, &path, None, "").await?;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"]["code"], "payment_intent_unexpected_state");

    // Wait for the cancel event, then past the settle time to see no second event.
    let _ = receiver.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let events: Vec<_> = receiver.received().iter().map(|e| e.json()["type"].clone()).collect();
    assert_eq!(events, ["payment_intent.canceled"]);
    assert_eq!(payments.intent(&id).map(|i| i.status.as_str()), Some("canceled"));
    Ok(())
}
