//! Completing claimed jobs in batches: one transaction removes every job its
//! lease still owns and leaves the rest exactly as `complete` would.

use std::time::Duration;

use holdfast_store::LeaseToken;

use crate::both_backends;
use crate::helpers::{claim_one, job, open, secs, t0};

both_backends!(
    complete_batch_removes_only_jobs_whose_lease_still_holds,
    |backend| async move {
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        // Job "a" has a short lease so that it can be taken over while the
        // others are still held by the first worker.
        q.enqueue(&job("payments", "a", 0, now).visibility_timeout(Duration::from_secs(10)))
            .await
            .expect("enqueue");
        for group in ["b", "c", "d"] {
            q.enqueue(&job("payments", group, 0, now)).await.expect("enqueue");
        }
        let first = q.claim_batch("payments", "w1", 10, now).await.expect("claim");
        assert_eq!(first.len(), 4);
        let held = |group: &str| {
            let c = first.iter().find(|c| c.job.group_key == group).expect("claimed");
            (c.job.id.clone(), c.lease_token.clone())
        };
        let (a, b, c, d) = (held("a"), held("b"), held("c"), held("d"));

        // a's lease runs out and a second worker takes the job over.
        let taken_over = claim_one(q, "payments", "w2", now + secs(11))
            .await
            .expect("a redelivered");
        assert_eq!(taken_over.job.id, a.0);
        // b was already completed on its own.
        assert!(q.complete(&b.0, &b.1).await.expect("complete"));

        let batch = vec![
            a.clone(),
            b.clone(),
            c.clone(),
            d.clone(),
            c.clone(),
            (d.0.clone(), LeaseToken::from_trusted("not-a-lease".into())),
        ];
        assert_eq!(
            q.complete_batch(&batch).await.expect("complete batch"),
            2,
            "c and d removed once each; a's stale lease and b's finished job count for nothing"
        );

        let stats = q.stats(now + secs(11)).await.expect("stats");
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].ready, stats[0].in_flight, stats[0].dead),
            (0, 1, 0),
            "only a is left, held by the second worker"
        );
        let again = claim_one(q, "payments", "w3", now + secs(12)).await;
        assert!(again.is_none(), "a's new lease was not disturbed");

        assert_eq!(q.complete_batch(&[]).await.expect("empty batch"), 0);
        assert_eq!(
            q.complete_batch(&[(taken_over.job.id.clone(), taken_over.lease_token.clone())])
                .await
                .expect("complete batch"),
            1
        );
        assert!(q.stats(now + secs(12)).await.expect("stats").is_empty());
        db.drop_database().await;
    }
);
