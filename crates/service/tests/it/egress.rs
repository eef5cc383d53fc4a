//! Partner webhooks reach public addresses only, by default: an endpoint
//! with a literal loopback, private, link-local, multicast or unspecified
//! address is refused when it is registered, and a name that resolves to
//! such an address fails its delivery, with the reason in the delivery log.

use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::helpers::{order, spawn_app_with, spawn_receiver};

const BLOCKED: [(&str, &str); 10] = [
    ("http://127.0.0.1:5432/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("https://192.168.0.10/hook", "private"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://[::1]:8080/", "loopback"),
    ("http://[fd00::5]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
];

both_backends!(blocked_addresses_are_refused_when_registered, |backend| async move {
    let app = spawn_app_with(backend, |config| config.webhooks.allow_private_networks = false).await;
    for (url, kind) in BLOCKED {
        let created = app
            .admin
            .post("/api/v1/webhook-endpoints", &json!({"url": url, "event_types": ["*"]}))
            .await;
        assert_eq!(created.status, 422, "{url}: {}", created.body);
        assert_eq!(created.body["code"], "url_not_allowed", "{url}: {}", created.body);
        assert!(
            created.body.to_string().contains(kind),
            "{url}: the reason names {kind}: {}",
            created.body
        );
    }
    let listed = app.admin.get("/api/v1/webhook-endpoints").await;
    assert_eq!(listed.body["data"], json!([]), "nothing refused was stored");

    // A public address and a name pass the check at registration.
    for url in ["https://93.184.215.14/hook", "https://partner.example.com/hook"] {
        let created = app
            .admin
            .post("/api/v1/webhook-endpoints", &json!({"url": url, "event_types": ["*"]}))
            .await;
        assert_eq!(created.status, 201, "{url}: {}", created.body);
    }
    app.stop().await;
});

both_backends!(a_name_resolving_to_loopback_fails_its_delivery, |backend| async move {
    let app = spawn_app_with(backend, |config| {
        config.webhooks.allow_private_networks = false;
        config.webhooks.retry_schedule_ms = vec![0, 60_000];
        config.workers.poll_interval_ms = 50;
    })
    .await;
    let (receiver, base) = spawn_receiver().await;
    // `localhost` is a name, so registration accepts it; it resolves to
    // 127.0.0.1 when the delivery connects.
    let url = format!("{}/hooks/sneaky", base.replace("127.0.0.1", "localhost"));
    let created = app
        .admin
        .post("/api/v1/webhook-endpoints", &json!({"url": url, "event_types": ["*"]}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let endpoint = created.body["id"].as_str().expect("endpoint id").to_owned();

    app.create_product("LAMP", 4_000, 5).await;
    let placed = app
        .shop
        .checkout(&order(&[("LAMP", 1)], "pm_card_visa"), "egress-1")
        .await;
    assert_eq!(placed.status, 201, "{}", placed.body);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let error = loop {
        let log = app
            .admin
            .get(&format!("/api/v1/webhook-endpoints/{endpoint}/deliveries"))
            .await;
        // Newest first; whichever was tried is the one to read.
        let tried = log.body["data"]
            .as_array()
            .and_then(|data| data.iter().find(|d| d["attempts"].as_u64().unwrap_or(0) >= 1).cloned());
        if let Some(delivery) = tried {
            let id = delivery["id"].as_str().expect("delivery id");
            let detail = app
                .admin
                .get(&format!("/api/v1/webhook-endpoints/{endpoint}/deliveries/{id}"))
                .await;
            break detail.body["attempts"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt recorded: {}",
            log.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("url_not_allowed"), "{error}");
    assert!(error.contains("loopback"), "{error}");
    assert!(
        receiver.deliveries("sneaky").is_empty(),
        "no request reached the receiver"
    );
    app.stop().await;
});
