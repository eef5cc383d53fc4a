//! Renewals, for the workers: the catch-up scheduler, one charge attempt per
//! receive of a payment job, dunning after the last retry, and settlement.
//!
//! No leader: every node runs the scheduler, which enqueues a job for each
//! due period that has none (the job's dedup key is the period, so racing
//! schedulers enqueue it once), and the payment worker decides each attempt
//! under the subscription's lock (`Subscriptions::begin_charge`), where one
//! succeeded charge per period is also a unique index. A renewal missed
//! while every node was down is simply still due at the next start.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use holdfast_domain::{SubscriptionId, SubscriptionStatus};
use holdfast_resilience::{CallError, CallOptions};
use holdfast_store::{
    Charge, ChargeFailure, ChargeRecorded, ChargeStart, ClaimedJob, FailOutcome, FailedAttempt, StoreError,
    SubscriptionChange, SubscriptionFilter,
};

use super::clock_time;
use crate::pipeline::deps::Deps;
use crate::pipeline::error::Error;
use crate::pipeline::queues;
use crate::providers::payments::{Decline, ProviderError, RenewalCharge, RenewalOutcome};

/// Due periods one scheduler pass enqueues at most.
const SCHEDULE_BATCH: i64 = 500;
/// Subscriptions the dunning pass reads per page.
const SWEEP_PAGE: i64 = 200;
/// Creators one settlement pass looks at.
const SETTLE_BATCH: i64 = 200;
/// Longest wait before an attempt whose outcome is unknown is resumed.
const MAX_RESUME_BACKOFF: Duration = Duration::from_secs(60);

/// What became of one receive of a payment job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// Nothing is left to do for the period (paid, void, refused, or to be
    /// scheduled again when due): remove the job.
    Done,
    /// The outcome is not known (the provider did not answer, or the result
    /// could not be recorded): receive the job again after `after`, which
    /// resumes the same attempt with the same idempotency key.
    Resume { after: Duration, error: String },
    /// Declined: the attempt and the job's fate (retry later, or dead
    /// letter and `past_due`) were recorded together; the job is settled.
    Declined { dead_lettered: bool },
}

/// The scheduler's pass: enqueues a payment job for every due period that
/// has none. Returns how many it enqueued.
#[tracing::instrument(skip(deps))]
pub async fn schedule_due(deps: &Deps, now: DateTime<Utc>) -> Result<usize, Error> {
    let template = deps
        .config
        .queues
        .subscription_payments
        .template(queues::SUBSCRIPTION_PAYMENTS);
    let enqueued = deps
        .store
        .subscriptions()
        .schedule_due_charges(&template, now, SCHEDULE_BATCH)
        .await?;
    Ok(enqueued.len())
}

/// The period a payment job is about.
pub fn job_period(job: &ClaimedJob) -> Option<(SubscriptionId, u32)> {
    let payload = &job.job.payload;
    let id = payload.get("subscription_id")?.as_str()?;
    let index = payload.get("period_index")?.as_u64()?;
    Some((SubscriptionId::parse(id).ok()?, u32::try_from(index).ok()?))
}

/// One receive of a payment job: one attempt to charge the period.
#[tracing::instrument(skip(deps, job), fields(job = %job.job.id, receive = job.job.receive_count))]
pub async fn attempt(deps: &Deps, job: &ClaimedJob, id: &SubscriptionId, period_index: u32) -> Attempted {
    let subscriptions = deps.store.subscriptions();
    let charge = match subscriptions.begin_charge(id, period_index, Utc::now()).await {
        Ok(ChargeStart::Charge { charge, resumed }) => {
            if resumed {
                tracing::info!(charge = %charge.id, "resuming an attempt whose outcome was not recorded");
            }
            charge
        }
        // Paid or void already, or refused (canceled, paused), or not due
        // yet on its clock (the scheduler enqueues it again when it is).
        Ok(other) => {
            tracing::debug!(?other, "nothing to charge");
            return Attempted::Done;
        }
        Err(StoreError::NotFound(what)) => {
            tracing::error!(%what, "payment job for an unknown period; dropped");
            return Attempted::Done;
        }
        Err(error) => return resume_later(job, error),
    };
    let request = RenewalCharge {
        charge_id: charge.id.to_string(),
        subscription_id: id.to_string(),
        amount: charge.amount,
        payment_method: charge.payment_method.clone(),
        idempotency_key: charge.idempotency_key.clone(),
    };
    let answer = deps
        .dependencies
        .payments
        .call(CallOptions::idempotent(), || deps.payments.charge_off_session(&request))
        .await;
    match answer {
        Ok(RenewalOutcome::Succeeded { intent_id }) => {
            match subscriptions
                .record_charge_succeeded(&charge.id, &intent_id, Utc::now())
                .await
            {
                Ok(ChargeRecorded::Duplicate) => {
                    tracing::error!(charge = %charge.id, %intent_id, "the period was already paid: this charge is to be refunded");
                    Attempted::Done
                }
                Ok(_) => Attempted::Done,
                Err(error) => resume_later(job, error),
            }
        }
        Ok(RenewalOutcome::Declined(decline)) => declined(deps, job, &charge, decline).await,
        // The provider refused the request itself: no retry with this
        // payment method can succeed.
        Err(CallError::Failed(ProviderError::Rejected { code, message })) => {
            let decline = Decline {
                intent_id: None,
                code,
                decline_code: None,
                advice_code: Some("do_not_try_again".into()),
                message,
            };
            declined(deps, job, &charge, decline).await
        }
        Err(unanswered) => {
            crate::telemetry::dependency_failed("payments", &unanswered);
            resume_later(job, unanswered)
        }
    }
}

/// An attempt whose outcome is unknown waits and is resumed with the same
/// key. On the job's last receive it is removed instead: a job dead-lettered
/// for an outage would stop the period's charges without a decision, while
/// without a job the scheduler enqueues the period again, and that job
/// resumes the pending attempt.
fn resume_later(job: &ClaimedJob, error: impl std::fmt::Display) -> Attempted {
    tracing::warn!(%error, "charge outcome unknown; the attempt will be resumed");
    if job.job.receive_count >= job.job.max_receives {
        return Attempted::Done;
    }
    let exponent = job.job.receive_count.min(6);
    let after = Duration::from_secs(1u64 << exponent).min(MAX_RESUME_BACKOFF);
    Attempted::Resume {
        after,
        error: error.to_string(),
    }
}

/// Records a declined attempt with the job's fate: the next dunning retry,
/// or (a hard decline, or the last receive) the dead letter and `past_due`.
async fn declined(deps: &Deps, job: &ClaimedJob, charge: &Charge, decline: Decline) -> Attempted {
    let now = Utc::now();
    let retry_at = if decline.is_hard() {
        None
    } else {
        match retry_time(deps, charge, now).await {
            Ok(at) => Some(at),
            Err(error) => return resume_later(job, error),
        }
    };
    let attempt = FailedAttempt {
        charge: charge.id.clone(),
        failure: ChargeFailure {
            intent_id: decline.intent_id.clone(),
            code: decline.code.clone(),
            decline_code: decline.decline_code.clone(),
            message: decline.message.clone(),
        },
        job: job.job.id.clone(),
        lease: job.lease_token.clone(),
        retry_at,
        now,
    };
    match deps.store.subscriptions().record_failed_attempt(&attempt).await {
        Ok(failed) => {
            let dead_lettered = failed.job == FailOutcome::DeadLettered;
            tracing::info!(
                charge = %charge.id,
                code = %decline.code,
                hard = decline.is_hard(),
                dead_lettered,
                status = %failed.subscription.status,
                "charge declined"
            );
            Attempted::Declined { dead_lettered }
        }
        Err(error) => resume_later(job, error),
    }
}

/// When the job is received again after failed attempt `charge`: the next
/// dunning delay from now. A subscription on a test clock that is already
/// past that delay (a clock advanced by months) retries at once; one that
/// is not waits for the clock, whose advance brings the job forward.
async fn retry_time(deps: &Deps, charge: &Charge, now: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    let delay = deps.config.subscriptions.dunning_delay(charge.attempt);
    let later = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
    let subscription = super::find(deps, &charge.subscription_id).await?;
    let Some(clock) = subscription.test_clock else {
        return Ok(later);
    };
    let clock_now = clock_time(deps, Some(&clock), now).await?;
    let due = charge.attempted_at + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
    Ok(if due <= clock_now { now } else { later })
}

/// Dunning's end and pauses' end, on each subscription's clock: a
/// `past_due` subscription whose grace period is over gets its plan's
/// `on_dunning_exhausted`, a paused one whose `resumes_at` has come is
/// resumed. Returns how many it changed.
#[tracing::instrument(skip(deps))]
pub async fn sweep_dunning(deps: &Deps, now: DateTime<Utc>) -> Result<usize, Error> {
    let mut changed = 0;
    for status in [SubscriptionStatus::PastDue, SubscriptionStatus::Paused] {
        let mut after = None;
        loop {
            let page = deps
                .store
                .subscriptions()
                .list_subscriptions(&SubscriptionFilter {
                    creator_id: None,
                    status: Some(status),
                    after: after.clone(),
                    limit: SWEEP_PAGE,
                })
                .await?;
            for subscription in &page {
                if let Some(change) = sweep_change(deps, subscription, now).await? {
                    match deps.store.subscriptions().transition_subscription(&change).await {
                        Ok(_) => changed += 1,
                        // Changed meanwhile (paid, canceled): nothing to do.
                        Err(StoreError::InvalidSubscriptionTransition(_)) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            if page.len() < usize::try_from(SWEEP_PAGE).unwrap_or(usize::MAX) {
                break;
            }
            after = page.last().map(|subscription| subscription.id.clone());
        }
    }
    Ok(changed)
}

/// The change the sweep makes to one subscription now, if any.
async fn sweep_change(
    deps: &Deps,
    subscription: &holdfast_store::Subscription,
    now: DateTime<Utc>,
) -> Result<Option<SubscriptionChange>, Error> {
    let at = clock_time(deps, subscription.test_clock.as_ref(), now).await?;
    let change = |to, cause: &str| SubscriptionChange {
        id: subscription.id.clone(),
        to,
        cause: cause.to_owned(),
        resumes_at: None,
        now,
    };
    match subscription.status {
        SubscriptionStatus::PastDue => {
            let grace = deps.config.subscriptions.past_due_grace();
            let over = subscription.past_due_since.is_some_and(|since| since + grace <= at);
            if !over {
                return Ok(None);
            }
            let plan = deps
                .store
                .subscriptions()
                .plan(&subscription.plan_id)
                .await?
                .ok_or(Error::NotFound("plan"))?;
            let to = plan.on_dunning_exhausted.status();
            Ok(Some(change(to, "dunning exhausted: the grace period ended unpaid")))
        }
        SubscriptionStatus::Paused if subscription.resumes_at.is_some_and(|resumes| resumes <= at) => {
            Ok(Some(change(SubscriptionStatus::Active, "the pause ended")))
        }
        _ => Ok(None),
    }
}

/// Settles every creator with unsettled charges whose windows have waited
/// out its delay. A creator whose subscriptions live on test clocks is
/// settled on its clocks' latest time (on the wall clock if any of them
/// live on it). Returns how many batches it made.
#[tracing::instrument(skip(deps))]
pub async fn settle(deps: &Deps, now: DateTime<Utc>) -> Result<usize, Error> {
    let subscriptions = deps.store.subscriptions();
    let mut batches = 0;
    for (creator, clocks) in subscriptions.unsettled_creators(SETTLE_BATCH).await? {
        let mut at: Option<DateTime<Utc>> = None;
        for clock in &clocks {
            let time = match clock {
                None => now,
                Some(clock) => clock_time(deps, Some(clock), now).await?,
            };
            at = Some(at.map_or(time, |at| at.max(time)));
        }
        let at = if clocks.iter().any(Option::is_none) {
            now
        } else {
            at.unwrap_or(now)
        };
        batches += subscriptions.settle_due(&creator, at).await?.len();
    }
    Ok(batches)
}
