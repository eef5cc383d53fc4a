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
