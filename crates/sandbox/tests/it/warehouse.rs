//! The sandbox warehouse: shipments, idempotency, auth and faults.

use std::time::Duration;

use holdfast_sandbox::WarehouseConfig;
use serde_json::{Value, json};

use crate::support::{Reply, TestResult, eventually, spawn_warehouse};

async fn create(base: &str, key: Option<&str>, token: Option<&str>, body: &Value) -> Result<Reply, reqwest::Error> {
    let mut request = reqwest::Client::new().post(format!("{base}/v1/shipments")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    Reply::read(request.send().await?).await
}

fn shipment(order_id: &str) -> Value {
    json!({
        "order_id": order_id,
        "items": [{"sku": "MUG-1", "qty": 2}],
        "address": {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
    })
}

#[tokio::test]
async fn creates_and_fetches_a_shipment_once_per_key() -> TestResult {
    let (warehouse, running) = spawn_warehouse(WarehouseConfig::default()).await?;
    let base = running.base_url.as_str();
    let first = create(base, Some("ship-ord_1"), Some("wh_token"), &shipment("ord_1")).await?;
    assert_eq!(first.status, 201, "{}", first.body);
    let body = first.json();
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("shp_"));
    assert!(body["tracking_id"].as_str().unwrap_or_default().starts_with("TRK"));
    assert_eq!(body["status"], "created");
    assert_eq!(body["order_id"], "ord_1");

    let replay = create(base, Some("ship-ord_1"), Some("wh_token"), &shipment("ord_1")).await?;
    assert_eq!((replay.status, replay.body.as_str()), (201, first.body.as_str()));
    assert_eq!(
        replay.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let conflict = create(base, Some("ship-ord_1"), Some("wh_token"), &shipment("ord_2")).await?;
    assert_eq!(conflict.status, 400);
    assert_eq!(conflict.json()["error"]["type"], "idempotency_error");
    assert_eq!(warehouse.stats().shipments_created, 1);

    let fetched = reqwest::Client::new()
        .get(format!("{base}/v1/shipments/{id}"))
        .bearer_auth("wh_token")
        .send()
        .await?;
    assert_eq!(fetched.status().as_u16(), 200);
    let fetched: Value = fetched.json().await?;
    assert_eq!(fetched, body);
    let missing = reqwest::Client::new()
        .get(format!("{base}/v1/shipments/shp_nope"))
        .bearer_auth("wh_token")
        .send()
        .await?;
    assert_eq!(missing.status().as_u16(), 404);
    Ok(())
}

#[tokio::test]
async fn rejects_bad_requests_and_missing_auth() -> TestResult {
    let (warehouse, running) = spawn_warehouse(WarehouseConfig::default()).await?;
    let base = running.base_url.as_str();
    let unauthenticated = create(base, None, None, &shipment("ord_1")).await?;
    assert_eq!(unauthenticated.status, 401);
    let bad_bodies = [
        json!({"order_id": "ord_1", "items": [], "address": {}}),
        json!({"order_id": "ord_1", "items": [{"sku": "A", "qty": 0}], "address": {}}),
        json!({"order_id": "", "items": [{"sku": "A", "qty": 1}], "address": {}}),
        json!({"items": [{"sku": "A", "qty": 1}]}),
        json!("not an object"),
    ];
    for body in &bad_bodies {
        let reply = create(base, Some("k"), Some("t"), body).await?;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error", "{body}");
    }
    assert_eq!(warehouse.stats().shipments_created, 0);
    Ok(())
}

#[tokio::test]
async fn injected_failures_create_nothing() -> TestResult {
    let config = WarehouseConfig {
        failure_rate: 1.0,
        ..WarehouseConfig::default()
    };
    let (warehouse, running) = spawn_warehouse(config).await?;
    let failed = create(&running.base_url, Some("k"), Some("t"), &shipment("ord_1")).await?;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.json()["error"]["type"], "api_error");
    warehouse.set_failure_rate(0.0);
    let retried = create(&running.base_url, Some("k"), Some("t"), &shipment("ord_1")).await?;
    assert_eq!(retried.status, 201);
    let stats = warehouse.stats();
    assert_eq!(
        (stats.api_calls, stats.injected_failures, stats.shipments_created),
        (2, 1, 1)
    );
    Ok(())
}

#[tokio::test]
async fn a_call_whose_client_hangs_up_still_creates_the_shipment() -> TestResult {
    let config = WarehouseConfig {
        latency: Duration::from_millis(300),
        ..WarehouseConfig::default()
    };
    let (warehouse, running) = spawn_warehouse(config).await?;
    let base = running.base_url.as_str();
    // The client gives up (and closes its connection) before the answer comes.
    let abandoned = reqwest::Client::new()
        .post(format!("{base}/v1/shipments"))
        .bearer_auth("t")
        .header("idempotency-key", "ship-ord_1")
        .json(&shipment("ord_1"))
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(abandoned.is_err_and(|error| error.is_timeout()));
    assert!(eventually(Duration::from_secs(5), || warehouse.stats().shipments_created == 1).await);

    // Retrying with the same key returns that shipment instead of a second one.
    warehouse.set_latency(Duration::ZERO);
    let retried = create(base, Some("ship-ord_1"), Some("t"), &shipment("ord_1")).await?;
    assert_eq!(retried.status, 201, "{}", retried.body);
    assert_eq!(
        retried.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let shipments = warehouse.shipments();
    assert_eq!(shipments.len(), 1);
    assert_eq!(retried.json()["id"], shipments[0].id.as_str());
    assert_eq!(warehouse.stats().shipments_created, 1);
    Ok(())
}
