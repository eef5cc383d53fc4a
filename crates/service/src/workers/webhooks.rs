//! Delivers partner webhooks: one job per delivery, grouped by endpoint, so
//! an endpoint receives its events one at a time and in order, and a failing
//! endpoint holds back only its own deliveries.
//!
//! Retries follow `webhooks.retry_schedule_ms` (jittered), or the endpoint's
//! `Retry-After` when it sends one; a `410 Gone` disables the endpoint, and
//! so does failing without one success for `webhooks.disable_after_s`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_domain::DeliveryId;
use holdfast_store::{AttemptOutcome, ClaimedJob, DeliveryStatus, DeliveryWork, StoreError, WebhookAttempt};

use super::context::WorkerContext;
use super::jobs::{JobOutcome, jitter, payload_str};
use crate::config::WebhooksConfig;
use crate::providers::webhooks::{Answer, Outgoing};
use holdfast_signing::WebhookSecret;

pub use crate::pipeline::queues::WEBHOOKS as QUEUE;

/// The longest backoff of a run that failed for a reason other than the
/// store being unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Delivers one endpoint's run of deliveries in order, then records every
/// attempt in one transaction. The run stops at the first delivery that must
/// be retried; the deliveries behind it wait for it. If the attempts cannot
/// be recorded, nothing of the run counts as done: the whole run comes back
/// and is delivered again with the same `webhook-id`s (at least once).
pub async fn handle_run(ctx: &WorkerContext, jobs: Vec<ClaimedJob>) -> Vec<JobOutcome> {
    // A run whose store reads or writes fail comes back as soon as the
    // store does (`JobOutcome::Release`), not after the head's backoff.
    let retry_all = |what: &str, error: StoreError| {
        tracing::warn!(error = format!("{error:#}"), "{what}; the run will be repeated");
        let error = anyhow::Error::new(error).context(what.to_owned());
        jobs.first()
            .map(|head| JobOutcome::after_failure(head, MAX_BACKOFF, &error))
            .into_iter()
            .collect::<Vec<_>>()
    };
    let ids: Vec<DeliveryId> = jobs
        .iter()
        .filter_map(|job| payload_str(job, "delivery_id").and_then(|raw| DeliveryId::parse(raw).ok()))
        .collect();
    // The whole run's deliveries, endpoint and events in one read.
    let mut works: HashMap<DeliveryId, DeliveryWork> = match ctx.deps.store.webhooks().delivery_works(&ids).await {
        Ok(works) => works.into_iter().map(|w| (w.delivery.id.clone(), w)).collect(),
        Err(error) => return retry_all("could not read the run's deliveries", error),
    };
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut records = Vec::new();
    let mut disabled: Option<String> = None;
    for job in &jobs {
        let Some(delivery_id) = payload_str(job, "delivery_id").and_then(|raw| DeliveryId::parse(raw).ok()) else {
            tracing::error!(job = %job.job.id, "webhook job without a valid delivery_id; dropped");
            outcomes.push(JobOutcome::Done);
            continue;
        };
        let work = works.remove(&delivery_id);
        let Attempted { record, outcome } = attempt(ctx, &delivery_id, work, disabled.as_deref(), Utc::now()).await;
        if let Some((_, AttemptOutcome::DisableEndpoint { reason })) = &record {
            disabled = Some(reason.clone());
        }
        records.extend(record);
        let stop = outcome != JobOutcome::Done;
        outcomes.push(outcome);
        if stop {
            break;
        }
    }
    if let Err(error) = ctx.deps.store.webhooks().record_attempts(&records).await {
        return retry_all("could not record webhook attempts", error);
    }
    outcomes
}

/// What one attempt did: the attempt to record (none for a delivery settled
/// before), and what becomes of its job.
struct Attempted {
    record: Option<(WebhookAttempt, AttemptOutcome)>,
    outcome: JobOutcome,
}

impl Attempted {
    fn done(record: Option<(WebhookAttempt, AttemptOutcome)>) -> Self {
        Self {
            record,
            outcome: JobOutcome::Done,
        }
    }
}

/// Makes one attempt of `delivery_id`, unless the endpoint was disabled
/// earlier in the same run (`disabled_in_run`), and says what to record.
#[tracing::instrument(skip(ctx, work, now))]
async fn attempt(
    ctx: &WorkerContext,
    delivery_id: &DeliveryId,
    work: Option<DeliveryWork>,
    disabled_in_run: Option<&str>,
    now: DateTime<Utc>,
) -> Attempted {
    let Some(work) = work else {
        tracing::warn!("unknown delivery; dropped");
        return Attempted::done(None);
    };
    if work.delivery.status != DeliveryStatus::Pending {
        // Settled by an earlier attempt whose job outlived its lease.
        return Attempted::done(None);
    }
    let skip = disabled_in_run
        .map(|reason| format!("endpoint disabled: {reason}"))
        .or_else(|| not_deliverable(&work));
    if let Some(reason) = skip {
        let attempt = failed_attempt(delivery_id, now, &reason);
        return Attempted::done(Some((attempt, AttemptOutcome::Skipped)));
    }
    let Ok(secret) = WebhookSecret::parse(&work.endpoint.secret) else {
        let reason = "the endpoint's secret is not a whsec_ secret".to_owned();
        let attempt = failed_attempt(delivery_id, now, &reason);
        return Attempted::done(Some((attempt, AttemptOutcome::DisableEndpoint { reason })));
    };
    let body = body(&work);
    let answer = ctx
        .webhook_sender
        .send(&Outgoing {
            url: &work.endpoint.url,
            secret: &secret,
            msg_id: &work.event.id,
            body: &body,
            now,
        })
        .await;
    let (outcome, next) = judge(&ctx.deps.config.webhooks, &work, &answer, now);
    let attempt = WebhookAttempt {
        delivery_id: delivery_id.clone(),
        at: now,
        status_code: answer.status,
        latency_ms: i64::try_from(answer.latency.as_millis()).unwrap_or(i64::MAX),
        error: answer.error.clone(),
    };
    let label = match &outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retrying => "retrying",
        AttemptOutcome::DisableEndpoint { .. } => "endpoint_disabled",
        AttemptOutcome::Skipped => "skipped",
    };
    metrics::counter!("holdfast_webhook_deliveries_total", "outcome" => label).increment(1);
    metrics::histogram!("holdfast_webhook_delivery_duration_seconds").record(answer.latency.as_secs_f64());
    if let AttemptOutcome::DisableEndpoint { reason } = &outcome {
        tracing::warn!(endpoint = %work.endpoint.id, %reason, "webhook endpoint disabled");
    }
    Attempted {
        record: Some((attempt, outcome)),
        outcome: match next {
            Some(after) => JobOutcome::retry(after, answer.error.unwrap_or_default()),
            None => JobOutcome::Done,
        },
    }
}

fn not_deliverable(work: &DeliveryWork) -> Option<String> {
    if work.endpoint_deleted {
        return Some("endpoint deleted".into());
    }
    work.endpoint.disabled_at.map(|_| {
        format!(
            "endpoint disabled: {}",
            work.endpoint.disabled_reason.as_deref().unwrap_or("no reason given")
        )
    })
}

fn failed_attempt(delivery_id: &DeliveryId, now: DateTime<Utc>, error: &str) -> WebhookAttempt {
    WebhookAttempt {
        delivery_id: delivery_id.clone(),
        at: now,
        status_code: None,
        latency_ms: 0,
        error: Some(error.to_owned()),
    }
}

/// The body the Standard Webhooks spec recommends.
fn body(work: &DeliveryWork) -> String {
    serde_json::json!({
        "type": work.event.event_type,
        "timestamp": work.event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": work.event.payload,
    })
    .to_string()
}

/// What an answer means, and when to try again (`None`: do not).
fn judge(
    config: &WebhooksConfig,
    work: &DeliveryWork,
    answer: &Answer,
    now: DateTime<Utc>,
) -> (AttemptOutcome, Option<Duration>) {
    match answer.status {
        Some(status) if (200..300).contains(&status) => return (AttemptOutcome::Delivered, None),
        Some(410) => {
            let reason = "the endpoint answered 410 Gone".to_owned();
            return (AttemptOutcome::DisableEndpoint { reason }, None);
        }
        _ => {}
    }
    let failing_for = work
        .endpoint
        .failing_since
        .map_or(chrono::TimeDelta::zero(), |since| now - since);
    let limit = chrono::TimeDelta::seconds(i64::try_from(config.disable_after_s).unwrap_or(i64::MAX));
    if failing_for >= limit {
        let reason = format!("failing without a success for {} s", failing_for.num_seconds());
        return (AttemptOutcome::DisableEndpoint { reason }, None);
    }
    (
        AttemptOutcome::Retrying,
        Some(next_delay(config, work.delivery.attempts + 1, answer)),
    )
}

/// The wait after the `attempt`-th attempt failed: the schedule's next entry
/// (its last entry repeats), or the endpoint's `Retry-After` when it asks for
/// longer, up to `max_retry_after_s`.
fn next_delay(config: &WebhooksConfig, attempt: u32, answer: &Answer) -> Duration {
    let schedule = &config.retry_schedule_ms;
    let index = usize::try_from(attempt).unwrap_or(usize::MAX).min(schedule.len() - 1);
    let scheduled = jitter(Duration::from_millis(schedule[index]), 0.1);
    let asked = answer
        .retry_after
        .map(|after| after.min(Duration::from_secs(config.max_retry_after_s)));
    asked.map_or(scheduled, |asked| asked.max(scheduled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhooksConfig {
        WebhooksConfig {
            allow_private_networks: false,
            retry_schedule_ms: vec![0, 5_000, 300_000],
            disable_after_s: 432_000,
            max_retry_after_s: 3600,
        }
    }

    fn answer(retry_after: Option<u64>) -> Answer {
        Answer {
            status: Some(503),
            latency: Duration::ZERO,
            error: None,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn delays_follow_the_schedule_and_repeat_its_last_entry() {
        let first = next_delay(&config(), 1, &answer(None));
        assert!((4_500..=5_500).contains(&first.as_millis()), "{first:?}");
        let late = next_delay(&config(), 9, &answer(None));
        assert!((270_000..=330_000).contains(&late.as_millis()), "{late:?}");
    }

    fn work(failing_for: Option<chrono::TimeDelta>, now: DateTime<Utc>) -> DeliveryWork {
        use holdfast_domain::WebhookEndpointId;
        use holdfast_store::{OutboxEvent, WebhookDelivery, WebhookEndpoint};
        DeliveryWork {
            delivery: WebhookDelivery {
                id: DeliveryId::generate(),
                endpoint_id: WebhookEndpointId::generate(),
                event_id: "evt_1".into(),
                event_type: "order.paid".into(),
                status: DeliveryStatus::Pending,
                attempts: 3,
                last_status_code: None,
                last_latency_ms: None,
                last_error: None,
                created_at: now,
                completed_at: None,
            },
            endpoint: WebhookEndpoint {
                id: WebhookEndpointId::generate(),
                url: "https://partner.example/hooks".into(),
                event_types: vec!["*".into()],
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                created_at: now,
                disabled_at: None,
                disabled_reason: None,
                failing_since: failing_for.map(|d| now - d),
            },
            endpoint_deleted: false,
            event: OutboxEvent {
                seq: 1,
                id: "evt_1".into(),
                aggregate_id: "ord_1".into(),
                event_type: "order.paid".into(),
                payload: serde_json::json!({}),
                created_at: now,
                published_at: Some(now),
            },
        }
    }

    #[test]
    fn answers_decide_the_delivery_and_the_endpoint() {
        let now = Utc::now();
        let with = |status| Answer { status, ..answer(None) };
        let (ok, next) = judge(
            &config(),
            &work(Some(chrono::TimeDelta::days(4)), now),
            &with(Some(204)),
            now,
        );
        assert_eq!((ok, next), (AttemptOutcome::Delivered, None));
        let (gone, next) = judge(&config(), &work(None, now), &with(Some(410)), now);
        assert!(matches!(gone, AttemptOutcome::DisableEndpoint { .. }) && next.is_none());
        let (retry, next) = judge(
            &config(),
            &work(Some(chrono::TimeDelta::days(4)), now),
            &with(None),
            now,
        );
        assert_eq!(retry, AttemptOutcome::Retrying);
        assert!(next.is_some());
        let (tired, next) = judge(
            &config(),
            &work(Some(chrono::TimeDelta::days(5)), now),
            &with(Some(500)),
            now,
        );
        assert!(
            matches!(tired, AttemptOutcome::DisableEndpoint { .. }) && next.is_none(),
            "{tired:?}"
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_cap() {
        assert_eq!(next_delay(&config(), 1, &answer(Some(60))), Duration::from_secs(60));
        assert_eq!(
            next_delay(&config(), 1, &answer(Some(86_400))),
            Duration::from_secs(3600)
        );
    }
}
