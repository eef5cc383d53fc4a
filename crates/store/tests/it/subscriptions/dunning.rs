//! The renewal scheduler's enqueue and dunning's one transaction: a due
//! period gets one payment job however often it is scheduled, a failed
//! attempt and the job's retry or dead letter (with `past_due`) commit
//! together, and a dead letter can be expedited back by its period.

use holdfast_store::{FailOutcome, FailedAttempt, JobState, JobTemplate, payment_job_key};

use super::*;
use crate::helpers::secs;

const QUEUE: &str = "subscription-payments";

both_backends!(
    due_periods_get_one_job_and_declines_end_past_due,
    |backend| async move {
        let db = open(backend).await;
        let (subs, queue) = (db.store.subscriptions(), db.store.queue());
        let creator = creator(subs, 0).await;
        let plan = plan(subs, &creator, 2_000, ("month", 1), 0).await;
        let sub = subscribe(subs, &plan.id, None, t0()).await;
        let template = JobTemplate::new(QUEUE);
        let now = t0();
        let first = subs.schedule_due_charges(&template, now, 10).await.expect("schedule");
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].subscription_id.clone(), first[0].period_index),
            (sub.id.clone(), 0)
        );
        assert_eq!(subs.schedule_due_charges(&template, now, 10).await.expect("again"), []);

        for receive in 1..=3 {
            let job = crate::helpers::claim_one(queue, QUEUE, "w", now + secs(receive * 1_000))
                .await
                .expect("the job is received");
            assert_eq!(job.job.dedup_key.as_deref(), Some(payment_job_key(&sub.id, 0).as_str()));
            let (charge, _) = attempt(subs, &sub.id, 0, now).await;
            let failed = subs
                .record_failed_attempt(&FailedAttempt {
                    charge: charge.id,
                    failure: declined(),
                    job: job.job.id.clone(),
                    lease: job.lease_token.clone(),
                    retry_at: Some(now + secs(receive * 1_000 + 500)),
                    now,
                })
                .await
                .expect("recorded");
            if receive < 3 {
                assert!(matches!(failed.job, FailOutcome::Retrying { .. }), "{failed:?}");
                assert_eq!(failed.subscription.status, SubscriptionStatus::Incomplete);
            } else {
                assert_eq!(failed.job, FailOutcome::DeadLettered);
                // A first charge that never paid: the subscription ends.
                assert_eq!(failed.subscription.status, SubscriptionStatus::Canceled);
            }
        }
        let dead = queue.dead_letters(QUEUE, 10).await.expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].state, JobState::Dead);
        let charges = subs.charges(&sub.id).await.expect("charges");
        assert_eq!(charges.iter().map(|c| c.attempt).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(charges.iter().all(|c| c.status == ChargeStatus::Failed));
        assert!(
            queue
                .expedite(QUEUE, &payment_job_key(&sub.id, 0), now)
                .await
                .expect("expedite")
        );
        assert!(
            queue.dead_letters(QUEUE, 10).await.expect("dead").is_empty(),
            "redriven"
        );
        assert!(!queue.expedite(QUEUE, "no such key", now).await.expect("expedite"));
        db.drop_database().await;
    }
);

both_backends!(
    a_renewal_declined_for_good_goes_past_due_at_once,
    |backend| async move {
        let db = open(backend).await;
        let (subs, queue) = (db.store.subscriptions(), db.store.queue());
        let creator = creator(subs, 0).await;
        let plan = plan(subs, &creator, 2_000, ("month", 1), 0).await;
        let clock = clock(subs, "2026-01-31T00:00:00Z").await;
        let sub = subscribe(subs, &plan.id, Some(&clock), t0()).await;
        pay(subs, &sub.id, 0, t0()).await;
        let template = JobTemplate::new(QUEUE);
        assert_eq!(
            subs.schedule_due_charges(&template, t0(), 10).await.expect("schedule"),
            []
        );
        subs.advance_test_clock(&clock, at("2026-02-28T00:00:00Z"), t0())
            .await
            .expect("advance");
        assert_eq!(
            subs.schedule_due_charges(&template, t0(), 10)
                .await
                .expect("schedule")
                .len(),
            1
        );
        let job = crate::helpers::claim_one(queue, QUEUE, "w", t0()).await.expect("job");
        let (charge, _) = attempt(subs, &sub.id, 1, t0()).await;
        let failed = subs
            .record_failed_attempt(&FailedAttempt {
                charge: charge.id,
                failure: declined(),
                job: job.job.id,
                lease: job.lease_token,
                retry_at: None,
                now: t0(),
            })
            .await
            .expect("recorded");
        assert_eq!(failed.job, FailOutcome::DeadLettered);
        assert_eq!(failed.subscription.status, SubscriptionStatus::PastDue);
        assert_eq!(
            failed.subscription.past_due_since,
            Some(at("2026-02-28T00:00:00Z")),
            "on the clock"
        );
        assert_eq!(
            subs.failed_periods(&clock).await.expect("failed"),
            [],
            "past_due is not waiting for a retry"
        );
        db.drop_database().await;
    }
);
