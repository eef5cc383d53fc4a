//! Test clocks drive the real workers: thirteen months of renewals, with a
//! card that starts failing in the middle, settle in seconds of wall time,
//! and the clock says `advancing` until they have.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_service::Role;
use serde_json::{Value, json};

use super::{at, id};
use crate::both_backends;
use crate::helpers::{TestApp, spawn_app_as};

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let answer = app.admin.post(path, &body).await;
    assert!(answer.status == 200 || answer.status == 201, "{path}: {}", answer.body);
    answer.body
}

/// Advances the clock and waits until it is `ready`; returns how long that took.
async fn advance_and_settle(app: &TestApp, clock: &str, to: DateTime<Utc>) -> Duration {
    let started = Instant::now();
    post(
        app,
        &format!("/api/v1/test-clocks/{clock}/advance"),
        json!({"frozen_time": to}),
    )
    .await;
    // The workers pick the due work up on their next poll: give them one.
    tokio::time::sleep(Duration::from_millis(150)).await;
    loop {
        let state = app.admin.get(&format!("/api/v1/test-clocks/{clock}")).await;
        if state.body["status"] == "ready" {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "clock never ready: {}",
            state.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends!(
    thirteen_months_with_a_failing_card_settle_in_seconds,
    |backend| async move {
        let app = spawn_app_as(backend, Role::All, |config| {
            config.subscriptions.test_clocks = true;
            config.subscriptions.scheduler_interval_ms = 50;
            config.workers.poll_interval_ms = 20;
        })
        .await;
        let creator = id(&post(&app, "/api/v1/creators", json!({"name": "Lin's Lab", "fee_bps": 500})).await);
        let plan = id(&post(
            &app,
            "/api/v1/plans",
            json!({"creator_id": creator, "name": "Monthly", "price": {"amount": 1200, "currency": "EUR"},
                   "interval": "month", "interval_count": 1}),
        )
        .await);
        let clock = id(&post(
            &app,
            "/api/v1/test-clocks",
            json!({"frozen_time": "2024-01-31T08:00:00Z"}),
        )
        .await);
        let created = app
            .shop
            .send(
                app.shop
                    .request(reqwest::Method::POST, "/api/v1/subscriptions")
                    .header("Idempotency-Key", "clock-sub-1")
                    .json(&json!({"plan_id": plan, "customer": {"email": "lin@example.com"},
                                  "payment_method": "pm_card_visa", "test_clock": clock})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let sub = id(&created.body);
        let mut wall = advance_and_settle(&app, &clock, at("2024-06-30T08:00:00Z")).await;

        // The card starts failing: July's renewal goes through dunning and
        // ends past_due; a new card pays it.
        let changed = app
            .shop
            .put(
                &format!("/api/v1/subscriptions/{sub}/payment-method"),
                &json!({"payment_method": "pm_card_chargeCustomerFail"}),
            )
            .await;
        assert_eq!(changed.status, 200, "{}", changed.body);
        // Each retry is due its delay after the attempt before it, on the
        // clock: a day after July 31, then three days after August 1.
        wall += advance_and_settle(&app, &clock, at("2024-07-31T08:00:00Z")).await;
        wall += advance_and_settle(&app, &clock, at("2024-08-01T08:00:00Z")).await;
        wall += advance_and_settle(&app, &clock, at("2024-08-10T08:00:00Z")).await;
        let past_due = app.shop.get(&format!("/api/v1/subscriptions/{sub}")).await;
        assert_eq!(past_due.body["status"], "past_due", "{}", past_due.body);
        let changed = app
            .shop
            .put(
                &format!("/api/v1/subscriptions/{sub}/payment-method"),
                &json!({"payment_method": "pm_card_visa"}),
            )
            .await;
        assert_eq!(changed.body["redriven"], 1, "{}", changed.body);
        // The redriven charge is paid an hour later, well inside the grace
        // period; one jump straight to February would race it against the
        // dunning sweep, which ends the grace in that same jump.
        wall += advance_and_settle(&app, &clock, at("2024-08-10T09:00:00Z")).await;
        wall += advance_and_settle(&app, &clock, at("2025-02-28T08:00:00Z")).await;

        let subscription = app.shop.get(&format!("/api/v1/subscriptions/{sub}")).await;
        assert_eq!(subscription.body["status"], "active", "{}", subscription.body);
        assert_eq!(subscription.body["current_period_index"], 13);
        assert_eq!(subscription.body["current_period_start"], "2025-02-28T08:00:00Z");
        let charges = app.shop.get(&format!("/api/v1/subscriptions/{sub}/charges")).await;
        let charges = charges.body["data"].as_array().expect("charges").clone();
        let succeeded: Vec<u64> = charges
            .iter()
            .filter(|c| c["status"] == "succeeded")
            .map(|c| c["period_index"].as_u64().expect("period"))
            .collect();
        assert_eq!(succeeded, (0..=13).collect::<Vec<_>>(), "each period once: {charges:?}");
        let failed = charges.iter().filter(|c| c["status"] == "failed").count();
        assert_eq!(failed, 3, "July's three receives");
        println!("14 periods with dunning in between settled in {wall:?} of wall time");
        assert!(wall < Duration::from_secs(30), "{wall:?}");
        app.stop().await;
    }
);
