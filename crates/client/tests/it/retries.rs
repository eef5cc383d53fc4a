//! Retry behaviour: which calls are retried, with which key, and how long they wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use holdfast_client::{Client, Error, InventoryLevel, Money, OrderStatus, ProductIn, RetryPolicy};
use serde_json::json;

use crate::calls::sample_order;
use crate::fake::{Answer, Fake, TestResult};

fn created() -> Answer {
    Answer::json(
        201,
        json!({"order_id": "ord_1", "status": "pending_payment", "client_secret": "pi_1_secret_x",
               "expires_at": "2030-01-01T00:15:00Z"}),
    )
}

#[tokio::test]
async fn create_order_retries_503_honouring_retry_after_with_one_key() -> TestResult {
    let unavailable = Answer::problem(503, "dependency_unavailable").retry_after(1);
    let fake = Fake::start(vec![unavailable.clone(), unavailable, created()]).await?;
    let started = Instant::now();
    let order = fake.client(4).create_order(&sample_order()).await?;
    let elapsed = started.elapsed();

    assert_eq!(order.order_id, "ord_1");
    assert_eq!(order.status, OrderStatus::PendingPayment);
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    // The backoff cap is 20 ms, so two seconds can only come from Retry-After.
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    let key = calls[0].idempotency_key.clone().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(&key).is_ok(), "{key}");
    assert!(calls.iter().all(|c| c.idempotency_key.as_deref() == Some(key.as_str())));
    assert!(calls.iter().all(|c| c.body == calls[0].body));
    Ok(())
}

#[tokio::test]
async fn each_order_gets_its_own_key_and_a_given_key_is_used_as_is() -> TestResult {
    let fake = Fake::start(vec![created()]).await?;
    let client = fake.client(3);
    client.create_order(&sample_order()).await?;
    client.create_order(&sample_order()).await?;
    client.create_order_with_key("my-key-1", &sample_order()).await?;
    let keys: Vec<_> = fake.calls().into_iter().map(|c| c.idempotency_key).collect();
    assert_ne!(keys[0], keys[1]);
    assert_eq!(keys[2].as_deref(), Some("my-key-1"));
    Ok(())
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_return_the_last_problem() -> TestResult {
    let fake = Fake::start(vec![Answer::problem(500, "internal")]).await?;
    let result = fake.client(3).create_order(&sample_order()).await;
    assert!(
        matches!(&result, Err(Error::Api { status: 500, problem }) if problem.code == "internal"),
        "{result:?}"
    );
    assert_eq!(fake.calls().len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_post_without_a_key_is_never_retried() -> TestResult {
    let fake = Fake::start(vec![
        Answer::problem(503, "dependency_unavailable").retry_after(0),
        Answer::json(
            201,
            json!({"sku": "MUG-1", "name": "Mug", "price": {"amount": 1200, "currency": "USD"}}),
        ),
    ])
    .await?;
    let product = ProductIn {
        sku: "MUG-1".to_owned(),
        name: "Mug".to_owned(),
        price: Money::usd(1200),
        on_hand: 5,
    };
    let result = fake.client(5).create_product(&product).await;
    assert!(matches!(result, Err(Error::Api { status: 503, .. })), "{result:?}");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].idempotency_key, None);
    Ok(())
}

#[tokio::test]
async fn client_errors_are_not_retried() -> TestResult {
    let fake = Fake::start(vec![Answer::problem(409, "idempotency_conflict"), created()]).await?;
    let result = fake.client(5).create_order(&sample_order()).await;
    assert_eq!(
        result.err().and_then(|e| e.code().map(str::to_owned)).as_deref(),
        Some("idempotency_conflict")
    );
    assert_eq!(fake.calls().len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_in_progress_duplicate_is_retried_with_the_same_key() -> TestResult {
    let fake = Fake::start(vec![Answer::problem(409, "idempotency_in_progress"), created()]).await?;
    let order = fake.client(3).create_order(&sample_order()).await?;
    assert_eq!(order.order_id, "ord_1");
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    Ok(())
}

#[tokio::test]
async fn reads_and_batch_syncs_are_retried() -> TestResult {
    let inventory = Answer::json(
        200,
        json!({"sku": "MUG-1", "on_hand": 5, "reserved": 2, "available": 3}),
    );
    let fake = Fake::start(vec![
        Answer::text(502, "bad gateway"),
        Answer::problem(429, "rate_limited"),
        inventory,
    ])
    .await?;
    let got = fake.client(3).get_inventory("MUG-1").await?;
    assert_eq!((got.on_hand, got.reserved, got.available), (5, 2, 3));
    assert_eq!(fake.calls().len(), 3);

    let synced = Answer::json(200, json!({"batch_id": "b-1", "applied": 1}));
    let fake = Fake::start(vec![Answer::problem(503, "busy"), synced]).await?;
    let levels = [InventoryLevel {
        sku: "MUG-1".to_owned(),
        on_hand: 9,
    }];
    let result = fake.client(3).sync_inventory("b-1", &levels).await?;
    assert_eq!(result.batch_id.as_deref(), Some("b-1"));
    assert_eq!(fake.calls().len(), 2);
    Ok(())
}

#[tokio::test]
async fn an_excessive_retry_after_is_returned_at_once() -> TestResult {
    let fake = Fake::start(vec![Answer::problem(503, "maintenance").retry_after(3600), created()]).await?;
    let started = Instant::now();
    let result = fake.client(3).create_order(&sample_order()).await;
    assert!(matches!(result, Err(Error::Api { status: 503, .. })));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.calls().len(), 1);
    Ok(())
}

/// Accepts connections and drops them at once, counting how many arrived.
async fn hang_up_server() -> Result<(String, Arc<AtomicUsize>), std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Ok((base_url, accepted))
}

fn fast_client(base_url: &str, max_attempts: u32) -> Client {
    Client::builder(base_url, "hf_k")
        .retries(RetryPolicy {
            max_attempts,
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        })
        .build()
}

#[tokio::test]
async fn dropped_connections_are_retried_for_idempotent_calls_only() -> TestResult {
    let (base_url, accepted) = hang_up_server().await?;
    let client = fast_client(&base_url, 3);
    let read = client.get_order("ord_1").await;
    assert!(matches!(read, Err(Error::Transport(_))), "{read:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    let keyed = client.create_order(&sample_order()).await;
    assert!(matches!(keyed, Err(Error::Transport(_))), "{keyed:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 6);

    let payment_intent = client.create_payment_intent("ord_1").await;
    assert!(matches!(payment_intent, Err(Error::Transport(_))), "{payment_intent:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 7);
    Ok(())
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error() -> TestResult {
    // Bind and release a port so nothing listens on it.
    let address = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let result = fast_client(&format!("http://{address}"), 2)
        .get_inventory("MUG-1")
        .await;
    assert!(
        matches!(&result, Err(Error::Transport(e)) if e.is_connect()),
        "{result:?}"
    );
    Ok(())
}
