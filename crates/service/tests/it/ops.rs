//! Operations surface: Prometheus metrics and per-key rate limits.

use crate::both_backends;
use crate::helpers::{spawn_app, spawn_app_with};

both_backends!(metrics_expose_requests_and_pools, |backend| async move {
    let app = spawn_app(backend).await;
    app.create_product("HAT", 1_000, 1).await;
    assert_eq!(app.shop.get("/api/v1/inventory/HAT").await.status, 200);
    let metrics = app.shop.anonymous().get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("text exposition").to_owned();
    for needle in [
        "holdfast_http_requests_total{route=\"/api/v1/inventory/{sku}\",method=\"GET\",status=\"200\"}",
        "holdfast_http_request_duration_seconds_bucket{route=\"/api/v1/inventory/{sku}\"",
        "holdfast_db_pool_connections_max{pool=\"read\"}",
        "holdfast_db_pool_connections_in_use{pool=\"write\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    app.stop().await;
});

both_backends!(a_key_over_its_rate_gets_429_with_retry_after, |backend| async move {
    let app = spawn_app_with(backend, |config| {
        config.server.rate_limit_per_key_per_s = 1;
        config.server.rate_limit_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.shop.get("/api/v1/orders").await);
    }
    let limited = statuses
        .iter()
        .find(|a| a.status == 429)
        .expect("a 429 within six quick requests");
    assert_eq!(limited.body["code"], "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(statuses[0].status, 200);
    app.stop().await;
});

both_backends!(a_worker_node_serves_operators_not_shoppers, |backend| async move {
    let app = crate::helpers::spawn_app_as(backend, holdfast_service::Role::Workers, |_| {}).await;
    let ready = app.shop.anonymous().get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["shedding"], serde_json::json!([]), "{}", ready.body);
    let queues = app.admin.get("/api/v1/ops/queues").await;
    assert_eq!(queues.status, 200, "{}", queues.body);
    let breakers = app.admin.get("/api/v1/ops/breakers").await;
    assert_eq!(breakers.status, 200, "{}", breakers.body);
    // Not "product not found": the routes themselves are absent here.
    for path in ["/api/v1/orders", "/api/v1/products/ANY", "/api/v1/inventory/ANY"] {
        let answer = app.shop.get(path).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert_eq!(answer.body["detail"], "route not found", "{path}: {}", answer.body);
    }
    app.stop().await;
});
