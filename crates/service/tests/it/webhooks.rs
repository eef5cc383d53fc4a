//! The provider's webhook: signature on the raw body, timestamp tolerance,
//! and a duplicate event id is a no-op.

use chrono::Utc;
use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, spawn_app_with};

async fn deliver(app: &TestApp, body: &str, signature: Option<String>) -> crate::helpers::Answer {
    let mut request = app
        .shop
        .anonymous()
        .request(Method::POST, "/api/v1/payments/webhook")
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    app.shop.send(request).await
}

both_backends!(webhooks_are_verified_and_deduplicated, |backend| async move {
    // No provider callbacks: this test sends the events itself.
    let app = spawn_app_with(backend, |config| {
        config.payments.url = "http://127.0.0.1:9".into();
        // Nor a warehouse: the paid order stays paid while the test looks.
        config.warehouse.url = "http://127.0.0.1:9".into();
    })
    .await;
    app.create_product("KITE", 5_000, 2).await;
    let placed = app
        .store
        .place_order(&crate::expiry::pending_order("KITE", 1))
        .await
        .expect("placed");
    let secret = app.config.payments.webhook_secret.expose().to_owned();
    let event = json!({
        "id": "evt_test_1", "object": "event", "type": "payment_intent.succeeded", "created": Utc::now().timestamp(),
        "data": {"object": {"id": "pi_test_1", "metadata": {"order_id": placed.id.to_string()}}}
    })
    .to_string();
    let now = Utc::now().timestamp();

    let unsigned = deliver(&app, &event, None).await;
    assert_eq!(
        (unsigned.status, unsigned.body["code"].clone()),
        (400, json!("invalid_signature"))
    );
    let wrong_secret = deliver(
        &app,
        &event,
        Some(holdfast_signing::stripe_signature_header("whsec_other", now, &event)),
    )
    .await;
    assert_eq!(wrong_secret.status, 400);
    let stale = deliver(
        &app,
        &event,
        Some(holdfast_signing::stripe_signature_header(&secret, now - 3600, &event)),
    )
    .await;
    assert_eq!(stale.status, 400, "a replay from an hour ago is refused");
    let tampered = event.replace("payment_intent.succeeded", "payment_intent.payment_failed");
    let forged = deliver(
        &app,
        &tampered,
        Some(holdfast_signing::stripe_signature_header(&secret, now, &event)),
    )
    .await;
    assert_eq!(forged.status, 400, "the signature covers the raw body");

    let signature = holdfast_signing::stripe_signature_header(&secret, now, &event);
    let first = deliver(&app, &event, Some(signature.clone())).await;
    assert_eq!((first.status, first.body["duplicate"].clone()), (200, json!(false)));
    let second = deliver(&app, &event, Some(signature)).await;
    assert_eq!((second.status, second.body["duplicate"].clone()), (200, json!(true)));
    app.wait_for_status(&placed.id.to_string(), "paid").await;
    let timeline = app.shop.get(&format!("/api/v1/orders/{}/events", placed.id)).await;
    assert_eq!(
        timeline.body["data"].as_array().map(Vec::len),
        Some(2),
        "paid once: {}",
        timeline.body
    );
    app.stop().await;
});
