//! The operational event journal: a payments outage opens the breaker, the
//! recovery closes it, and the journal shows the whole sequence in order at
//! `GET /api/v1/ops/journal`, written in the background by every role.

use std::time::Duration;

use holdfast_resilience::OnUnavailable;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{TestApp, order, spawn_app};
use crate::resilience::{provider, spawn_with_quick_breaker};

/// `(from, to)` of each `payments` breaker entry, oldest first.
fn payments_changes(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e["subject"] == "payments")
        .map(|e| {
            let state = |key: &str| e["detail"][key].as_str().unwrap_or_default().to_owned();
            (state("from"), state("to"))
        })
        .collect()
}

fn changes(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect()
}

/// Polls the journal's `breaker` entries until the payments breaker's
/// changes are `expected`; the writer runs in the background.
async fn wait_for_journal(app: &TestApp, expected: &[(&str, &str)]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listed = app.admin.get("/api/v1/ops/journal?kind=breaker").await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        let entries = listed.body["entries"].as_array().cloned().unwrap_or_default();
        if payments_changes(&entries) == changes(expected) {
            return entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal never showed {expected:?}: {}",
            listed.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends!(
    a_breaker_opening_and_closing_is_journaled_in_order,
    |backend| async move {
        let (sandbox, url) = provider().await;
        let app = spawn_with_quick_breaker(backend, &url, 4, OnUnavailable::Reject).await;
        app.create_product("KEEL", 2_000, 100).await;
        sandbox.set_failure_rate(1.0);
        for n in 0..4 {
            let answer = app
                .shop
                .checkout(&order(&[("KEEL", 1)], "pm_card_visa"), &format!("keel-{n}"))
                .await;
            assert_eq!(answer.status, 503, "{}", answer.body);
        }
        let opened = wait_for_journal(&app, &[("closed", "open")]).await;
        let open = opened
            .iter()
            .find(|e| e["subject"] == "payments")
            .expect("the open entry");
        assert_eq!(open["kind"], "breaker");
        let summary = open["summary"].as_str().expect("summary");
        assert!(
            summary.starts_with("payments breaker closed → open: failure rate 1.00 over "),
            "{summary}"
        );
        assert!(open["seq"].is_i64(), "{open}");
        assert!(!open["node"].as_str().unwrap_or_default().is_empty(), "{open}");

        sandbox.set_failure_rate(0.0);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let placed = app
            .shop
            .checkout(&order(&[("KEEL", 1)], "pm_card_visa"), "keel-ok")
            .await;
        assert_eq!(placed.status, 201, "{}", placed.body);
        let all = wait_for_journal(
            &app,
            &[("closed", "open"), ("open", "half_open"), ("half_open", "closed")],
        )
        .await;
        let times: Vec<&str> = all
            .iter()
            .filter(|e| e["subject"] == "payments")
            .map(|e| e["at"].as_str().expect("at"))
            .collect();
        let parsed: Vec<chrono::DateTime<chrono::FixedOffset>> = times
            .iter()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339"))
            .collect();
        assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");

        // The time filters cut at the open entry: `since` includes it,
        // `until` excludes it.
        let at = open["at"].as_str().expect("at");
        let since = app
            .admin
            .send(
                app.admin
                    .request(reqwest::Method::GET, "/api/v1/ops/journal")
                    .query(&[("since", at), ("kind", "breaker")]),
            )
            .await;
        assert_eq!(since.status, 200, "{}", since.body);
        let from_open = since.body["entries"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            payments_changes(&from_open),
            changes(&[("closed", "open"), ("open", "half_open"), ("half_open", "closed")])
        );
        let until = app
            .admin
            .send(
                app.admin
                    .request(reqwest::Method::GET, "/api/v1/ops/journal")
                    .query(&[("until", at), ("limit", "1000")]),
            )
            .await;
        assert_eq!(until.status, 200, "{}", until.body);
        assert!(payments_changes(until.body["entries"].as_array().expect("entries")).is_empty());
        app.stop().await;
    }
);

both_backends!(bad_journal_parameters_are_named, |backend| async move {
    let app = spawn_app(backend).await;
    let bad_since = app.admin.get("/api/v1/ops/journal?since=yesterday").await;
    assert_eq!(bad_since.status, 422, "{}", bad_since.body);
    assert_eq!(
        bad_since.headers["content-type"], "application/problem+json",
        "{}",
        bad_since.body
    );
    assert_eq!(bad_since.body["code"], "invalid_query", "{}", bad_since.body);
    assert_eq!(bad_since.body["errors"][0]["field"], "since", "{}", bad_since.body);

    let bad_limit = app.admin.get("/api/v1/ops/journal?limit=1001").await;
    assert_eq!(bad_limit.status, 422, "{}", bad_limit.body);
    assert_eq!(bad_limit.body["errors"][0]["field"], "limit", "{}", bad_limit.body);
    let backwards = app
        .admin
        .get("/api/v1/ops/journal?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z")
        .await;
    assert_eq!(backwards.status, 422, "{}", backwards.body);
    assert_eq!(backwards.body["errors"][0]["field"], "until", "{}", backwards.body);

    let empty = app.admin.get("/api/v1/ops/journal").await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert_eq!(empty.body["entries"], serde_json::json!([]));
    let forbidden = app.shop.get("/api/v1/ops/journal").await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    app.stop().await;
});
