//! Creator subscriptions: versioned prices, the life of a subscription
//! (created, charged, renewed, canceled, paused, resumed) with its timeline
//! and outbox rows, catch-up renewals on a test clock, a crashed charge
//! resumed with the same idempotency key, racing charges of one period of
//! which exactly one wins, and settlement.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use holdfast_domain::{
    ChargeId, CreatorId, Currency, DunningExhausted, Email, FeeBps, Money, PlanId, PlanInterval, SettlementSchedule,
    SubscriptionEvent, SubscriptionId, SubscriptionStatus, TestClockId,
};
use holdfast_store::{
    Charge, ChargeFailure, ChargeRecorded, ChargeStart, ChargeStatus, NewCreator, NewPlan, NewSubscription,
    PeriodStatus, Plan, SharedStore, StoreError, Subscription, SubscriptionChange, SubscriptionFilter, Subscriptions,
};

use crate::both_backends;
use crate::helpers::{Backend, TestStore, open, t0};

fn at(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw).expect("rfc 3339").with_timezone(&Utc)
}

fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::USD).expect("amount")
}

async fn creator(subs: &dyn Subscriptions, fee_bps: i64) -> CreatorId {
    let id = CreatorId::generate();
    subs.create_creator(&NewCreator {
        id: id.clone(),
        name: "Ada's Workshop".into(),
        fee_bps: FeeBps::parse(fee_bps).expect("fee"),
        settlement: SettlementSchedule::default(),
        created_at: t0(),
    })
    .await
    .expect("creator");
    id
}

async fn plan(
    subs: &dyn Subscriptions,
    creator: &CreatorId,
    amount: i64,
    interval: (&str, i64),
    trial_days: u32,
) -> Plan {
    subs.create_plan(&NewPlan {
        id: PlanId::generate(),
        creator_id: creator.clone(),
        name: "Supporter".into(),
        price: usd(amount),
        interval: PlanInterval::parse(interval.0, interval.1).expect("interval"),
        trial_days,
        on_dunning_exhausted: DunningExhausted::Canceled,
        created_at: t0(),
    })
    .await
    .expect("plan")
}

async fn subscribe(
    subs: &dyn Subscriptions,
    plan: &PlanId,
    clock: Option<&TestClockId>,
    now: DateTime<Utc>,
) -> Subscription {
    subs.create_subscription(&NewSubscription {
        id: SubscriptionId::generate(),
        plan_id: plan.clone(),
        email: Email::parse("grace@example.com").expect("email"),
        name: None,
        payment_method: "pm_card_visa".into(),
        test_clock: clock.cloned(),
        now,
    })
    .await
    .expect("subscription")
}

/// Begins a charge of the period and expects an attempt to make.
async fn attempt(subs: &dyn Subscriptions, id: &SubscriptionId, period: u32, now: DateTime<Utc>) -> (Charge, bool) {
    match subs.begin_charge(id, period, now).await.expect("begin charge") {
        ChargeStart::Charge { charge, resumed } => (*charge, resumed),
        other => panic!("expected an attempt to charge period {period}, got {other:?}"),
    }
}

/// Charges the period and records that the provider took the money.
async fn pay(subs: &dyn Subscriptions, id: &SubscriptionId, period: u32, now: DateTime<Utc>) -> Subscription {
    let (charge, _) = attempt(subs, id, period, now).await;
    match subs
        .record_charge_succeeded(&charge.id, &format!("pi_{}", charge.id), now)
        .await
        .expect("record")
    {
        ChargeRecorded::Recorded(subscription) => *subscription,
        other => panic!("expected the charge to be recorded, got {other:?}"),
    }
}

fn declined() -> ChargeFailure {
    ChargeFailure {
        intent_id: Some("pi_declined".into()),
        code: "card_declined".into(),
        decline_code: Some("insufficient_funds".into()),
        message: "Your card has insufficient funds.".into(),
    }
}

async fn clock(subs: &dyn Subscriptions, frozen_time: &str) -> TestClockId {
    let id = TestClockId::generate();
    subs.create_test_clock(&id, at(frozen_time), t0()).await.expect("clock");
    id
}

fn events(records: &[holdfast_store::SubscriptionEventRecord]) -> Vec<(u32, &'static str)> {
    records.iter().map(|r| (r.sequence, r.event.as_str())).collect()
}

fn change(id: &SubscriptionId, to: SubscriptionStatus, now: DateTime<Utc>) -> SubscriptionChange {
    SubscriptionChange {
        id: id.clone(),
        to,
        cause: format!("asked for {to}"),
        resumes_at: None,
        now,
    }
}

fn statuses(periods: &[holdfast_store::SubscriptionPeriod]) -> Vec<(u32, PeriodStatus)> {
    periods.iter().map(|p| (p.index, p.status)).collect()
}

fn plan_input(creator: &CreatorId) -> NewPlan {
    NewPlan {
        id: PlanId::generate(),
        creator_id: creator.clone(),
        name: "Patron".into(),
        price: usd(900),
        interval: PlanInterval::parse("year", 1).expect("interval"),
        trial_days: 0,
        on_dunning_exhausted: DunningExhausted::Unpaid,
        created_at: t0(),
    }
}

mod charges;
mod dunning;
mod lifecycle;
