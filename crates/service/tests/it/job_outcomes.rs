//! What a handler's failure does to its job: a store that cannot be reached
//! gives the job back for a moment, its receive not counted, while any other
//! failure is a retry that counts and backs off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use holdfast_service::workers::jobs::{self, JobOutcome, QueueRun};
use holdfast_store::{ClaimedJob, JobTemplate, StoreError};
use serde_json::json;

use crate::both_backends;
use crate::helpers::spawn_app;

const QUEUE: &str = "outcomes-test";

fn run() -> QueueRun {
    QueueRun {
        queue: QUEUE.to_owned(),
        worker_id: "outcomes-worker".to_owned(),
        batch: 4,
        run_length: 4,
        depends_on: None,
    }
}

/// What each claimed job looked like, in the order the handler saw them.
type Seen = Arc<Mutex<Vec<(String, u32)>>>;

fn record(seen: &Seen, jobs: &[ClaimedJob]) {
    let mut seen = seen.lock().expect("seen");
    seen.extend(jobs.iter().map(|job| (job.job.id.to_string(), job.job.receive_count)));
}

both_backends!(
    a_store_outage_gives_the_job_back_uncounted_and_soon,
    |backend| async move {
        let app = spawn_app(backend).await;
        let store = app.store.clone();
        let now = Utc::now();
        let template = JobTemplate::new(QUEUE);
        let mut ids = Vec::new();
        for n in 0..3 {
            let job = template.job("endpoint-a", json!({ "n": n }), now);
            ids.push(store.queue().enqueue(&job).await.expect("enqueue").to_string());
        }

        // The head's first step cannot reach the store.
        let claimed = jobs::run_once(&store, &run(), now, |jobs: Vec<ClaimedJob>| async move {
            let head = jobs.first().expect("a run");
            let error = anyhow::Error::new(StoreError::Unavailable("connection refused".into()));
            vec![JobOutcome::after_failure(head, Duration::from_secs(60), &error)]
        })
        .await
        .expect("run");
        assert_eq!(claimed, 3, "the whole run was claimed");

        // Given back for a moment: not claimable at once.
        let none = jobs::run_once(&store, &run(), Utc::now(), |_| async { Vec::new() })
            .await
            .expect("run");
        assert_eq!(none, 0, "the run waits out the pause");

        // Two seconds on it is back, in order, as its first receive again.
        let seen = Seen::default();
        let later = Utc::now() + TimeDelta::seconds(2);
        let handled = jobs::run_once(&store, &run(), later, |jobs: Vec<ClaimedJob>| {
            record(&seen, &jobs);
            async move { vec![JobOutcome::Done; jobs.len()] }
        })
        .await
        .expect("run");
        assert_eq!(handled, 3);
        let seen = seen.lock().expect("seen").clone();
        let expected: Vec<(String, u32)> = ids.iter().map(|id| (id.clone(), 1)).collect();
        assert_eq!(seen, expected, "same order, and the outage cost no receive");
    }
);

both_backends!(
    any_other_failure_is_a_counted_retry_with_backoff,
    |backend| async move {
        let app = spawn_app(backend).await;
        let store = app.store.clone();
        let now = Utc::now();
        let template = JobTemplate::new(QUEUE);
        let mut ids = Vec::new();
        // A partner's failure, and a statement of the job's own that timed
        // out: neither says the store is out, so both count.
        for group in ["partner-500", "statement-timeout"] {
            let job = template.job(group, json!({}), now);
            ids.push(store.queue().enqueue(&job).await.expect("enqueue").to_string());
        }

        jobs::run_once(&store, &run(), now, |jobs: Vec<ClaimedJob>| async move {
            let head = jobs.first().expect("a run");
            let error = if head.job.group_key == "partner-500" {
                anyhow::anyhow!("the partner answered 500")
            } else {
                anyhow::Error::new(StoreError::Timeout(
                    "canceling statement due to statement timeout".into(),
                ))
            };
            vec![JobOutcome::after_failure(head, Duration::from_secs(60), &error)]
        })
        .await
        .expect("run");

        let seen = Seen::default();
        let later = Utc::now() + TimeDelta::seconds(3);
        jobs::run_once(&store, &run(), later, |jobs: Vec<ClaimedJob>| {
            record(&seen, &jobs);
            async move { vec![JobOutcome::Done; jobs.len()] }
        })
        .await
        .expect("run");
        let mut seen = seen.lock().expect("seen").clone();
        seen.sort();
        let mut expected: Vec<(String, u32)> = ids.into_iter().map(|id| (id, 2)).collect();
        expected.sort();
        assert_eq!(seen, expected, "both failures counted");
    }
);
