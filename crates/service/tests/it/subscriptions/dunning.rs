//! Dunning: a declined renewal is received three times, spaced by the
//! dunning delays on the subscription's clock, then dead-lettered with the
//! subscription `past_due`; a new payment method redrives it and charges the
//! period once; a hard decline is not retried; the grace period ends in the
//! plan's `on_dunning_exhausted`; a cancel or a pause stops every charge.

use chrono::Utc;
use serde_json::json;

use super::{Subs, at, days, drive, id, spawn};
use crate::both_backends;

/// A subscription on a clock at 2026-01-31 whose first period is paid with
/// `pm_card_visa`, then given `card` for its renewals; returns it and its clock.
async fn renewing_with(subs: &Subs, ctx: &holdfast_service::workers::WorkerContext, card: &str) -> (String, String) {
    let creator = subs.creator().await;
    let plan = subs.plan(&creator, 500).await;
    let clock = subs.clock("2026-01-31T12:00:00Z").await;
    let sub = id(&subs.subscribe(&plan, Some(&clock), "pm_card_visa").await);
    assert_eq!(drive(ctx, Utc::now()).await, 1, "the first period is charged at once");
    assert_eq!(subs.subscription(&sub).await["status"], "active");
    let changed = subs
        .app
        .shop
        .put(
            &format!("/api/v1/subscriptions/{sub}/payment-method"),
            &json!({"payment_method": card}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["redriven"], 0, "nothing is due yet");
    (sub, clock)
}

both_backends!(
    a_declined_renewal_is_received_three_times_then_past_due_and_a_new_card_charges_it_once,
    |backend| async move {
        let subs = spawn(backend, |_| {}).await;
        let ctx = subs.worker("dunning-1");
        let (sub, clock) = renewing_with(&subs, &ctx, "pm_card_chargeCustomerFail").await;

        // Jan 31 → Feb 28: the renewal is due and declined (no advice: retried).
        subs.advance(&clock, at("2026-02-28T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now()).await, 1);
        assert_eq!(subs.charges(&sub).await[1], (1, 1, "failed".to_owned()));
        assert_eq!(subs.subscription(&sub).await["status"], "active", "still in dunning");
        // The retry waits a day on the clock: nothing happens before.
        assert_eq!(drive(&ctx, Utc::now()).await, 0);
        let clock_state = subs.app.admin.get(&format!("/api/v1/test-clocks/{clock}")).await;
        assert_eq!(
            clock_state.body["status"], "ready",
            "the retry waits for the clock: {}",
            clock_state.body
        );

        subs.advance(&clock, at("2026-03-01T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now()).await, 1, "second receive after one day");
        subs.advance(&clock, at("2026-03-03T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now()).await, 0, "the third waits three days");
        subs.advance(&clock, at("2026-03-04T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now()).await, 1, "third receive after three more days");

        let charges = subs.charges(&sub).await;
        let failed: Vec<_> = charges.iter().filter(|c| c.0 == 1).collect();
        assert_eq!(failed.len(), 3, "three receives, three attempts: {charges:?}");
        assert!(failed.iter().all(|c| c.2 == "failed"));
        assert_eq!(subs.dead_letters().await, 1, "the job is dead-lettered");
        let past_due = subs.subscription(&sub).await;
        assert_eq!(past_due["status"], "past_due");
        let events = subs.event_types(&sub).await;
        assert_eq!(events.iter().filter(|e| *e == "charge.failed").count(), 3, "{events:?}");
        assert_eq!(
            events.last().map(String::as_str),
            Some("subscription.past_due"),
            "{events:?}"
        );
        assert_eq!(
            drive(&ctx, Utc::now() + days(30)).await,
            0,
            "a past_due subscription is not charged again by itself"
        );

        // A new card redrives the job at once and pays the period, once.
        let changed = subs
            .app
            .shop
            .put(
                &format!("/api/v1/subscriptions/{sub}/payment-method"),
                &json!({"payment_method": "pm_card_visa"}),
            )
            .await;
        assert_eq!(changed.status, 200, "{}", changed.body);
        assert_eq!(changed.body["redriven"], 1);
        assert_eq!(subs.dead_letters().await, 0);
        assert_eq!(drive(&ctx, Utc::now()).await, 1);
        assert_eq!(drive(&ctx, Utc::now()).await, 0);
        let paid = subs.subscription(&sub).await;
        assert_eq!(paid["status"], "active");
        assert_eq!(paid["current_period_index"], 1);
        let charges = subs.charges(&sub).await;
        let succeeded: Vec<_> = charges.iter().filter(|c| c.2 == "succeeded").map(|c| c.0).collect();
        assert_eq!(succeeded, [0, 1], "one succeeded charge per period: {charges:?}");
        assert_eq!(charges.last(), Some(&(1, 4, "succeeded".to_owned())));
        assert_eq!(subs.sandbox.stats().intents_created, 5, "one intent per attempt");

        // Settlement on the clock's time (March 4): the January charge has
        // waited out the creator's two days; the renewal, paid on March 4,
        // has not. Settling again adds nothing.
        let batches = ctx.settle_once(Utc::now()).await.expect("settle");
        assert!(batches >= 1, "{batches}");
        assert_eq!(ctx.settle_once(Utc::now()).await.expect("settle"), 0);
        let creator = subs.subscription(&sub).await["creator_id"]
            .as_str()
            .expect("creator")
            .to_owned();
        let settled = subs
            .app
            .admin
            .get(&format!("/api/v1/creators/{creator}/settlements"))
            .await;
        assert_eq!(settled.status, 200, "{}", settled.body);
        let gross: i64 = settled.body["data"]
            .as_array()
            .expect("batches")
            .iter()
            .map(|b| b["gross"]["amount"].as_i64().expect("gross"))
            .sum();
        assert_eq!(gross, 500, "the January charge only: {}", settled.body);
        subs.app.stop().await;
    }
);

both_backends!(
    a_hard_decline_is_not_retried_and_the_grace_period_ends_unpaid,
    |backend| async move {
        let subs = spawn(backend, |_| {}).await;
        let ctx = subs.worker("dunning-2");
        let (sub, clock) = renewing_with(&subs, &ctx, "pm_card_declined").await;
        subs.advance(&clock, at("2026-02-28T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now()).await, 1);
        // do_not_try_again: dead-lettered on its first receive.
        assert_eq!(subs.dead_letters().await, 1);
        assert_eq!(subs.subscription(&sub).await["status"], "past_due");
        subs.advance(&clock, at("2026-03-10T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now() + days(10)).await, 0, "no retry");
        assert_eq!(subs.charges(&sub).await.len(), 2);
        // The grace period (14 days on the clock) runs out: the plan says unpaid.
        assert_eq!(
            ctx.sweep_dunning_once(Utc::now()).await.expect("sweep"),
            0,
            "still in grace"
        );
        subs.advance(&clock, at("2026-03-15T12:00:00Z")).await;
        assert_eq!(ctx.sweep_dunning_once(Utc::now()).await.expect("sweep"), 1);
        assert_eq!(subs.subscription(&sub).await["status"], "unpaid");
        let events = subs.event_types(&sub).await;
        assert_eq!(
            events.last().map(String::as_str),
            Some("subscription.unpaid"),
            "{events:?}"
        );
        subs.app.stop().await;
    }
);

both_backends!(
    a_cancel_while_a_retry_is_pending_stops_every_attempt,
    |backend| async move {
        let subs = spawn(backend, |_| {}).await;
        let ctx = subs.worker("dunning-3");
        let (sub, clock) = renewing_with(&subs, &ctx, "pm_card_chargeCustomerFail").await;
        subs.advance(&clock, at("2026-02-28T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now()).await, 1);
        let canceled = subs
            .app
            .shop
            .post(
                &format!("/api/v1/subscriptions/{sub}/cancel"),
                &json!({"at_period_end": false}),
            )
            .await;
        assert_eq!(canceled.status, 200, "{}", canceled.body);
        assert_eq!(canceled.body["status"], "canceled");
        // The retry comes due (on the clock, and on the wall clock for its
        // job): it is received, refused under the lock, and removed.
        subs.advance(&clock, at("2026-03-10T12:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now() + days(2)).await, 1);
        assert_eq!(drive(&ctx, Utc::now() + days(10)).await, 0);
        let charges = subs.charges(&sub).await;
        assert_eq!(charges.len(), 2, "no attempt after the cancel: {charges:?}");
        assert_eq!(subs.dead_letters().await, 0);
        assert_eq!(subs.sandbox.stats().intents_created, 2);
        let again = subs
            .app
            .shop
            .post(&format!("/api/v1/subscriptions/{sub}/cancel"), &json!({}))
            .await;
        assert_eq!(
            (again.status, again.body["code"].clone()),
            (409, json!("invalid_transition"))
        );
        subs.app.stop().await;
    }
);

both_backends!(a_paused_subscription_is_not_charged, |backend| async move {
    let subs = spawn(backend, |_| {}).await;
    let ctx = subs.worker("dunning-4");
    let (sub, clock) = renewing_with(&subs, &ctx, "pm_card_visa").await;
    let paused = subs
        .app
        .shop
        .post(&format!("/api/v1/subscriptions/{sub}/pause"), &json!({}))
        .await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.body["status"], "paused");
    subs.advance(&clock, at("2026-05-15T12:00:00Z")).await;
    assert_eq!(
        drive(&ctx, Utc::now() + days(40)).await,
        0,
        "nothing is due while paused"
    );
    assert_eq!(subs.charges(&sub).await.len(), 1);
    let resumed = subs
        .app
        .shop
        .post(&format!("/api/v1/subscriptions/{sub}/resume"), &json!({}))
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(resumed.body["status"], "active");
    assert_eq!(
        drive(&ctx, Utc::now()).await,
        0,
        "the periods paused through are not charged"
    );
    // The next period (May 31) is charged at its start.
    subs.advance(&clock, at("2026-05-31T12:00:00Z")).await;
    assert_eq!(drive(&ctx, Utc::now()).await, 1);
    let charges = subs.charges(&sub).await;
    assert_eq!(charges.len(), 2, "{charges:?}");
    assert_eq!(charges[1].2, "succeeded");
    subs.app.stop().await;
});
