//! Renewal charges, made off-session: settled in the create call (a succeeded
//! intent, or a `402` card error carrying the declined intent and Stripe's advice
//! on retrying), announced by webhook, and idempotent like every other create.

use std::time::Duration;

use crate::support::{Receiver, TestResult, config_with_webhook, get, post_form, spawn_payments};

fn renewal(payment_method: &str) -> String {
    format!(
        "amount=1500&currency=usd&payment_method={payment_method}&confirm=true&off_session=true\
         &metadata%5Bsubscription_id%5D=sub_1"
    )
}

#[tokio::test]
async fn an_off_session_charge_succeeds_in_the_create_call() -> TestResult {
    let receiver = Receiver::default();
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let (_payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;

    let charged = post_form(
        &sandbox.base_url,
        "/v1/payment_intents",
        Some("sub_1-1"),
        &renewal("pm_card_visa"),
    )
    .await?;
    assert_eq!(charged.status, 200, "{}", charged.body);
    let intent = charged.json();
    assert_eq!(intent["status"], "succeeded", "no waiting for a webhook off-session");
    assert_eq!(intent["amount_received"], 1500);
    let events = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["type"], "payment_intent.succeeded");
    assert_eq!(events[0].json()["data"]["object"]["id"], intent["id"]);
    Ok(())
}

#[tokio::test]
async fn a_hard_decline_answers_402_with_advice_not_to_try_again() -> TestResult {
    let receiver = Receiver::default();
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let (payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;

    let body = renewal("pm_card_declined");
    let declined = post_form(&sandbox.base_url, "/v1/payment_intents", Some("sub_1-2"), &body).await?;
    assert_eq!(declined.status, 402, "{}", declined.body);
    let error = &declined.json()["error"];
    assert_eq!(error["type"], "card_error");
    assert_eq!(error["code"], "card_declined");
    assert_eq!(error["decline_code"], "generic_decline");
    assert_eq!(error["advice_code"], "do_not_try_again");
    assert_eq!(error["payment_method"]["id"], "pm_card_declined");
    let intent = &error["payment_intent"];
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(intent["last_payment_error"]["advice_code"], "do_not_try_again");
    assert_eq!(intent["amount_received"], 0);

    // The worker that sent it died before reading the answer; its retry, with the
    // same key, gets the same decline and makes no second intent.
    let again = post_form(&sandbox.base_url, "/v1/payment_intents", Some("sub_1-2"), &body).await?;
    assert_eq!((again.status, &again.body), (402, &declined.body));
    assert_eq!(
        again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(payments.stats().intents_created, 1);

    let id = intent["id"].as_str().unwrap_or_default();
    let fetched = get(&sandbox.base_url, &format!("/v1/payment_intents/{id}")).await?;
    assert_eq!(fetched.json()["last_payment_error"]["decline_code"], "generic_decline");
    let events = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["type"], "payment_intent.payment_failed");
    Ok(())
}

#[tokio::test]
async fn insufficient_funds_advise_trying_again_later() -> TestResult {
    let (_payments, sandbox) = spawn_payments(config_with_webhook(None)).await?;
    let poor = renewal("pm_card_chargeDeclinedInsufficientFunds");
    let declined = post_form(&sandbox.base_url, "/v1/payment_intents", None, &poor).await?;
    assert_eq!(declined.status, 402, "{}", declined.body);
    let error = &declined.json()["error"];
    assert_eq!(error["decline_code"], "insufficient_funds");
    assert_eq!(error["advice_code"], "try_again_later");
    Ok(())
}

#[tokio::test]
async fn the_customer_fail_card_is_saved_on_session_and_declined_off_session() -> TestResult {
    let receiver = Receiver::default();
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let (_payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;

    let first = "amount=1500&currency=usd&payment_method=pm_card_chargeCustomerFail&confirm=true\
                 &setup_future_usage=off_session";
    let saved = post_form(&sandbox.base_url, "/v1/payment_intents", None, first).await?;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.json()["status"], "processing");
    let events = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["type"], "payment_intent.succeeded");

    for attempt in 1..=3 {
        let key = format!("sub_1-period-1-attempt-{attempt}");
        let later = post_form(
            &sandbox.base_url,
            "/v1/payment_intents",
            Some(&key),
            &renewal("pm_card_chargeCustomerFail"),
        )
        .await?;
        assert_eq!(later.status, 402, "{}", later.body);
        let error = &later.json()["error"];
        assert_eq!(
            (&error["code"], &error["decline_code"]),
            (&"card_declined".into(), &"generic_decline".into())
        );
        assert!(
            error.get("advice_code").is_none(),
            "no advice: retried on the dunning schedule"
        );
    }
    Ok(())
}

#[tokio::test]
async fn off_session_without_confirm_is_refused() -> TestResult {
    let (_payments, sandbox) = spawn_payments(config_with_webhook(None)).await?;
    let body = "amount=1500&currency=usd&payment_method=pm_card_visa&off_session=true";
    let refused = post_form(&sandbox.base_url, "/v1/payment_intents", None, body).await?;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"]["param"], "confirm");
    Ok(())
}
