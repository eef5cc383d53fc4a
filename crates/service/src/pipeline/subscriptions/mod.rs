//! Creator subscriptions' steps. This module holds what the API asks for
//! (cancel, pause, resume, a new payment method, advancing a test clock),
//! each with what it means for the payment queue; `renewals` holds the
//! workers' steps (the catch-up scheduler, one charge attempt, dunning,
//! settlement); `audit` is Finance's check that nothing was under- or
//! double-charged.
//!
//! Times of a subscription's life are on its clock: a test clock's frozen
//! time when it has one, else the wall clock.

pub mod audit;
pub mod renewals;

use chrono::{DateTime, Utc};
use holdfast_domain::{SubscriptionId, SubscriptionStatus, TestClockId};
use holdfast_store::{FailedPeriod, PeriodStatus, Subscription, SubscriptionChange, TestClock, payment_job_key};

use super::deps::Deps;
use super::error::Error;
use super::queues;

/// A test clock as the API shows it: `advancing` while work its time made
/// due is still settling, then `ready` (Stripe's names).
#[derive(Debug, Clone, PartialEq)]
pub struct ClockState {
    pub clock: TestClock,
    pub advancing: bool,
}

/// How a subscription is to be canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Now: the open period and its pending retries are void.
    Now,
    /// When the current period ends: the next one is never charged.
    AtPeriodEnd,
}

/// Reads a subscription, `NotFound` if it does not exist.
pub async fn find(deps: &Deps, id: &SubscriptionId) -> Result<Subscription, Error> {
    deps.store
        .subscriptions()
        .subscription(id)
        .await?
        .ok_or(Error::NotFound("subscription"))
}

/// Cancels now or at the period's end. A retry still queued for the open
/// period finds the subscription canceled when it is received, in the
/// transaction that would record its attempt, and charges nothing.
#[tracing::instrument(skip(deps))]
pub async fn cancel(deps: &Deps, id: &SubscriptionId, how: Cancel, now: DateTime<Utc>) -> Result<Subscription, Error> {
    let subscriptions = deps.store.subscriptions();
    match how {
        Cancel::AtPeriodEnd => Ok(subscriptions.set_cancel_at_period_end(id, true, now).await?),
        Cancel::Now => Ok(subscriptions
            .transition_subscription(&SubscriptionChange {
                id: id.clone(),
                to: SubscriptionStatus::Canceled,
                cause: "canceled through the API".into(),
                resumes_at: None,
                now,
            })
            .await?),
    }
}

/// Pauses: nothing is charged until resumed (by the API, or at
/// `resumes_at` on the subscription's clock by the dunning worker).
#[tracing::instrument(skip(deps))]
pub async fn pause(
    deps: &Deps,
    id: &SubscriptionId,
    resumes_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Subscription, Error> {
    if let Some(at) = resumes_at {
        let subscription = find(deps, id).await?;
        if at <= clock_time(deps, subscription.test_clock.as_ref(), now).await? {
            return Err(Error::field("invalid_request", "resumes_at", "must be in the future"));
        }
    }
    Ok(deps
        .store
        .subscriptions()
        .transition_subscription(&SubscriptionChange {
            id: id.clone(),
            to: SubscriptionStatus::Paused,
            cause: "paused through the API".into(),
            resumes_at,
            now,
        })
        .await?)
}

/// Resumes a paused subscription: the periods that started while it was
/// paused are not charged; the one it resumes into is, at its start.
#[tracing::instrument(skip(deps))]
pub async fn resume(deps: &Deps, id: &SubscriptionId, now: DateTime<Utc>) -> Result<Subscription, Error> {
    Ok(deps
        .store
        .subscriptions()
        .transition_subscription(&SubscriptionChange {
            id: id.clone(),
            to: SubscriptionStatus::Active,
            cause: "resumed through the API".into(),
            resumes_at: None,
            now,
        })
        .await?)
}

/// Sets the payment method later attempts charge, and brings the payment
/// job of every open period that is due forward at once: a dead-lettered
/// job (a `past_due` or `unpaid` subscription) is redriven, a retry waiting
/// for its dunning delay is made visible now. The period is still charged
/// once: its attempt is decided under the subscription's lock.
#[tracing::instrument(skip(deps, payment_method))]
pub async fn change_payment_method(
    deps: &Deps,
    id: &SubscriptionId,
    payment_method: &str,
    now: DateTime<Utc>,
) -> Result<(Subscription, u32), Error> {
    let subscriptions = deps.store.subscriptions();
    let subscription = subscriptions.update_payment_method(id, payment_method, now).await?;
    let at = clock_time(deps, subscription.test_clock.as_ref(), now).await?;
    let mut redriven = 0;
    for period in subscriptions.periods(id).await? {
        if period.status != PeriodStatus::Open || period.start > at {
            continue;
        }
        let key = payment_job_key(id, period.index);
        if deps
            .store
            .queue()
            .expedite(queues::SUBSCRIPTION_PAYMENTS, &key, now)
            .await?
        {
            redriven += 1;
        }
    }
    Ok((subscription, redriven))
}

/// The time on a subscription's clock: the test clock's, or `now`.
pub async fn clock_time(deps: &Deps, clock: Option<&TestClockId>, now: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    let Some(clock) = clock else {
        return Ok(now);
    };
    let clock = deps
        .store
        .subscriptions()
        .test_clock(clock)
        .await?
        .ok_or(Error::NotFound("test clock"))?;
    Ok(clock.frozen_time)
}

/// Reads a test clock with its status.
pub async fn clock_state(deps: &Deps, id: &TestClockId) -> Result<ClockState, Error> {
    let subscriptions = deps.store.subscriptions();
    let clock = subscriptions
        .test_clock(id)
        .await?
        .ok_or(Error::NotFound("test clock"))?;
    let waiting = subscriptions
        .failed_periods(id)
        .await?
        .iter()
        .filter(|period| retry_due_at(deps, period) > clock.frozen_time)
        .count();
    // Periods whose next retry is later on the clock are settled as far as
    // this time goes: they wait for the clock, not for the workers.
    let advancing = clock.due_periods > i64::try_from(waiting).unwrap_or(i64::MAX);
    Ok(ClockState { clock, advancing })
}

/// Moves a test clock forward, then brings forward the retries its new time
/// made due (the renewals it made due are the scheduler's to find).
#[tracing::instrument(skip(deps))]
pub async fn advance_clock(
    deps: &Deps,
    id: &TestClockId,
    frozen_time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<ClockState, Error> {
    let subscriptions = deps.store.subscriptions();
    let clock = subscriptions.advance_test_clock(id, frozen_time, now).await?;
    let max_receives = deps.config.queues.subscription_payments.max_receives;
    for period in subscriptions.failed_periods(id).await? {
        if period.attempts >= max_receives || retry_due_at(deps, &period) > clock.frozen_time {
            continue;
        }
        let key = payment_job_key(&period.subscription_id, period.period_index);
        deps.store
            .queue()
            .expedite(queues::SUBSCRIPTION_PAYMENTS, &key, now)
            .await?;
    }
    clock_state(deps, id).await
}

/// When the retry after a failed period's last attempt is due, on its clock.
fn retry_due_at(deps: &Deps, period: &FailedPeriod) -> DateTime<Utc> {
    let delay = deps.config.subscriptions.dunning_delay(period.attempts);
    chrono::TimeDelta::from_std(delay)
        .ok()
        .and_then(|delay| period.failed_at.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
