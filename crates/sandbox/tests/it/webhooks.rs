//! Webhook delivery when the receiver is failing or not yet listening.

use std::sync::atomic::Ordering;
use std::time::Duration;

use holdfast_signing::stripe::{DEFAULT_TOLERANCE, unix_now, verify_stripe_signature};
use tokio::net::TcpListener;

use crate::support::{
    Receiver, SECRET, TestResult, config_with_webhook, eventually, free_address, post_form, spawn_payments,
};

const VISA: &str = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";

#[tokio::test]
async fn a_receiver_answering_503_gets_the_event_on_a_later_attempt() -> TestResult {
    let receiver = Receiver::refusing_first(2);
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let (payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;
    let created = post_form(&sandbox.base_url, "/v1/payment_intents", None, VISA).await?;
    assert_eq!(created.status, 200);

    let events = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 3);
    assert!(eventually(Duration::from_secs(2), || payments.stats().webhooks_sent == 1).await);
    let stats = payments.stats();
    assert_eq!(
        (stats.webhooks_sent, stats.webhooks_failed, stats.webhooks_abandoned),
        (1, 2, 0)
    );
    Ok(())
}

#[tokio::test]
async fn a_receiver_that_is_down_at_first_still_gets_the_event() -> TestResult {
    let address = free_address().await?;
    let webhook_url = format!("http://{address}/webhook");
    let (payments, sandbox) = spawn_payments(config_with_webhook(Some(webhook_url))).await?;
    payments.set_webhook_backoff(vec![Duration::from_millis(100); 20]);
    let created = post_form(&sandbox.base_url, "/v1/payment_intents", None, VISA).await?;
    assert_eq!(created.status, 200);

    // Let a few attempts hit a closed port, then start the receiver there.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(payments.stats().webhooks_failed >= 2, "{:?}", payments.stats());
    let receiver = Receiver::default();
    let _running = receiver.serve_on(TcpListener::bind(address).await?, format!("http://{address}"));

    let events = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["type"], "payment_intent.succeeded");
    // The signature is made per attempt, so it is fresh however late the delivery.
    let verified = verify_stripe_signature(
        SECRET,
        events[0].signature.as_deref(),
        &events[0].body,
        unix_now(),
        DEFAULT_TOLERANCE,
    );
    assert_eq!(verified, Ok(()));
    assert!(eventually(Duration::from_secs(2), || payments.stats().webhooks_sent == 1).await);
    Ok(())
}

#[tokio::test]
async fn delivery_is_abandoned_after_the_last_attempt() -> TestResult {
    let address = free_address().await?;
    let (payments, sandbox) = spawn_payments(config_with_webhook(Some(format!("http://{address}/webhook")))).await?;
    payments.set_webhook_backoff(vec![Duration::from_millis(10); 2]);
    let created = post_form(&sandbox.base_url, "/v1/payment_intents", None, VISA).await?;
    assert_eq!(created.status, 200);

    assert!(eventually(Duration::from_secs(5), || payments.stats().webhooks_abandoned == 1).await);
    let stats = payments.stats();
    assert_eq!(
        (stats.webhooks_sent, stats.webhooks_failed, stats.webhooks_abandoned),
        (0, 3, 1)
    );
    Ok(())
}

#[tokio::test]
async fn the_api_answers_before_the_webhook_is_delivered() -> TestResult {
    // A receiver that refuses many times must not slow the API response down.
    let receiver = Receiver::refusing_first(100);
    let (webhook_url, _receiver) = receiver.spawn().await?;
    let config = holdfast_sandbox::PaymentsConfig {
        webhook_delay: Duration::ZERO,
        ..config_with_webhook(Some(webhook_url))
    };
    let (payments, sandbox) = spawn_payments(config).await?;
    payments.set_webhook_backoff(vec![Duration::from_millis(500); 5]);
    let started = std::time::Instant::now();
    let created = post_form(&sandbox.base_url, "/v1/payment_intents", None, VISA).await?;
    assert_eq!(created.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}
