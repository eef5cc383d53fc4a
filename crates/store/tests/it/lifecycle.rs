//! One job's life, driven by explicit times: leases, redelivery, retries,
//! dead letters, dedup and delays.

use std::time::Duration;

use holdfast_store::{FailOutcome, JobState, NewJob, Redrive};

use crate::both_backends;
use crate::helpers::{claim_one, job, n_of, open, secs, t0};

both_backends!(one_job_per_group_in_enqueue_order, |backend| async move {
    let db = open(backend).await;
    let q = db.queue();
    let now = t0();
    for (group, n) in [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1)] {
        q.enqueue(&job("payments", group, n, now)).await.expect("enqueue");
    }

    let batch = q.claim_batch("payments", "w1", 10, now).await.expect("claim");
    let heads: Vec<_> = batch.iter().map(|c| (c.job.group_key.as_str(), n_of(c))).collect();
    assert_eq!(heads, [("a", 0), ("b", 0)], "one job per group, oldest first");
    assert!(
        batch
            .iter()
            .all(|c| c.job.state == JobState::InFlight && c.job.receive_count == 1)
    );
    assert!(batch.iter().all(|c| c.job.leased_by.as_deref() == Some("w1")));
    assert!(batch.iter().all(|c| c.job.visible_at == now + secs(300)));
    assert!(
        q.claim_batch("payments", "w2", 10, now)
            .await
            .expect("claim")
            .is_empty(),
        "both groups have a job in flight"
    );

    assert!(
        q.complete(&batch[0].job.id, &batch[0].lease_token)
            .await
            .expect("complete")
    );
    let next = claim_one(q, "payments", "w2", now).await.expect("a's next job");
    assert_eq!((next.job.group_key.as_str(), n_of(&next)), ("a", 1));
    assert!(
        q.claim_batch("other", "w2", 10, now).await.expect("claim").is_empty(),
        "queues are separate"
    );
    db.drop_database().await;
});

both_backends!(
    a_killed_workers_job_comes_back_after_the_visibility_timeout,
    |backend| async move {
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        let id = q.enqueue(&job("payments", "creator-1", 0, now)).await.expect("enqueue");

        // The first worker claims and is then killed: it never answers again.
        let first = claim_one(q, "payments", "doomed", now).await.expect("claimed");
        assert_eq!((first.job.id.clone(), first.job.receive_count), (id.clone(), 1));

        assert!(
            claim_one(q, "payments", "w2", now + secs(299)).await.is_none(),
            "hidden until the lease ends"
        );
        let second = claim_one(q, "payments", "w2", now + secs(300))
            .await
            .expect("redelivered");
        assert_eq!(second.job.id, id);
        assert_eq!(second.job.receive_count, 2);
        assert_ne!(second.lease_token, first.lease_token);

        // The first worker's late answers change nothing.
        assert!(!q.complete(&id, &first.lease_token).await.expect("complete"));
        assert!(
            !q.heartbeat(&id, &first.lease_token, Duration::from_secs(60), now + secs(301))
                .await
                .expect("heartbeat")
        );
        let late = q
            .fail(&id, &first.lease_token, "late", now + secs(310))
            .await
            .expect("fail");
        assert_eq!(late, FailOutcome::LeaseLost);

        assert!(q.complete(&id, &second.lease_token).await.expect("complete"));
        assert!(
            !q.complete(&id, &second.lease_token).await.expect("complete twice"),
            "already gone"
        );
        assert!(
            q.stats(now + secs(301)).await.expect("stats").is_empty(),
            "completion removes the job"
        );
        db.drop_database().await;
    }
);

both_backends!(heartbeats_extend_the_lease, |backend| async move {
    let db = open(backend).await;
    let q = db.queue();
    let now = t0();
    let new = job("payments", "creator-1", 0, now).visibility_timeout(Duration::from_secs(30));
    q.enqueue(&new).await.expect("enqueue");
    let claimed = claim_one(q, "payments", "w1", now).await.expect("claimed");
    assert_eq!(claimed.job.visible_at, now + secs(30));

    let extended = q
        .heartbeat(
            &claimed.job.id,
            &claimed.lease_token,
            Duration::from_secs(120),
            now + secs(20),
        )
        .await
        .expect("heartbeat");
    assert!(extended);
    assert!(
        claim_one(q, "payments", "w2", now + secs(139)).await.is_none(),
        "the lease now ends at 140 s"
    );
    let again = claim_one(q, "payments", "w2", now + secs(140))
        .await
        .expect("redelivered after the new end");
    assert_eq!(again.job.receive_count, 2);
    db.drop_database().await;
});

both_backends!(
    a_poison_job_is_dead_lettered_redriven_and_completed,
    |backend| async move {
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        let poison = q.enqueue(&job("payments", "creator-1", 0, now)).await.expect("enqueue");
        q.enqueue(&job("payments", "creator-1", 1, now)).await.expect("enqueue");
        // Nothing expires: a job due in ten years waits for ten years.
        let far = now + secs(10 * 366 * 24 * 3600);
        let later = job("payments", "creator-2", 0, now).visible_at(far);
        q.enqueue(&later).await.expect("enqueue");

        let mut t = now;
        for attempt in 1..=3u32 {
            let claimed = claim_one(q, "payments", "w1", t).await.expect("the poison job again");
            assert_eq!(
                (claimed.job.id.clone(), claimed.job.receive_count),
                (poison.clone(), attempt)
            );
            let retry_at = t + secs(10);
            let outcome = q
                .fail(
                    &poison,
                    &claimed.lease_token,
                    &format!("card declined #{attempt}"),
                    retry_at,
                )
                .await
                .expect("fail");
            let expected = if attempt < 3 {
                FailOutcome::Retrying { visible_at: retry_at }
            } else {
                FailOutcome::DeadLettered
            };
            assert_eq!(outcome, expected);
            if attempt < 3 {
                // Backing off, the job still holds its group's place.
                assert!(claim_one(q, "payments", "w1", t + secs(5)).await.is_none());
            }
            t = retry_at;
        }

        // Dead, it no longer blocks its group.
        let next = claim_one(q, "payments", "w1", t).await.expect("the group's next job");
        assert_eq!((next.job.group_key.as_str(), n_of(&next)), ("creator-1", 1));
        assert!(q.complete(&next.job.id, &next.lease_token).await.expect("complete"));

        let dead = q.dead_letters("payments", 10).await.expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, poison);
        assert_eq!(dead[0].state, JobState::Dead);
        assert_eq!(dead[0].receive_count, 3);
        assert_eq!(dead[0].last_error.as_deref(), Some("card declined #3"));

        let stats = q.stats(t + secs(5 * 366 * 24 * 3600)).await.expect("stats");
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].ready, stats[0].in_flight, stats[0].delayed, stats[0].dead),
            (0, 0, 1, 1)
        );

        let moved = q
            .redrive("payments", &Redrive::Jobs(vec![poison.clone()]), t)
            .await
            .expect("redrive");
        assert_eq!(moved, 1);
        assert!(q.dead_letters("payments", 10).await.expect("dead letters").is_empty());
        let back = claim_one(q, "payments", "w1", t).await.expect("redriven job");
        assert_eq!((back.job.id.clone(), back.job.receive_count), (poison.clone(), 1));
        assert!(q.complete(&poison, &back.lease_token).await.expect("complete"));

        assert!(
            claim_one(q, "payments", "w1", far - secs(1)).await.is_none(),
            "not due yet"
        );
        let due = claim_one(q, "payments", "w1", far).await.expect("still there when due");
        assert_eq!(due.job.id, later.id);
        db.drop_database().await;
    }
);

both_backends!(
    leases_that_keep_expiring_dead_letter_the_job_on_the_next_claim,
    |backend| async move {
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        let stuck = job("payments", "creator-1", 0, now)
            .max_receives(2)
            .visibility_timeout(Duration::from_secs(60));
        q.enqueue(&stuck).await.expect("enqueue");
        q.enqueue(&job("payments", "creator-1", 1, now)).await.expect("enqueue");

        claim_one(q, "payments", "w1", now).await.expect("first receive");
        let second = claim_one(q, "payments", "w1", now + secs(60))
            .await
            .expect("second receive");
        assert_eq!((second.job.id.clone(), second.job.receive_count), (stuck.id.clone(), 2));

        // The third claim finds the job out of receives: it is dead-lettered
        // and the same call moves on to the next job of the group.
        let third = claim_one(q, "payments", "w1", now + secs(120))
            .await
            .expect("the group's next job");
        assert_eq!(n_of(&third), 1);
        let dead = q.dead_letters("payments", 10).await.expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, stuck.id);
        assert!(
            dead[0].last_error.as_deref().is_some_and(|e| e.contains("expired")),
            "{dead:?}"
        );
        assert!(
            !q.complete(&stuck.id, &second.lease_token).await.expect("complete"),
            "dead, not leased"
        );

        let all = q
            .redrive("payments", &Redrive::All, now + secs(120))
            .await
            .expect("redrive");
        assert_eq!(all, 1);
        assert_eq!(q.redrive("payments", &Redrive::All, now).await.expect("redrive"), 0);
        db.drop_database().await;
    }
);

both_backends!(a_dedup_key_holds_one_job_while_it_exists, |backend| async move {
    let db = open(backend).await;
    let q = db.queue();
    let now = t0();
    let charge = |queue: &str| NewJob::new(queue, "creator-1", serde_json::json!({}), now).dedup_key("sub_1:2025-06");

    let first = q.enqueue(&charge("payments")).await.expect("enqueue");
    let again = q.enqueue(&charge("payments")).await.expect("enqueue duplicate");
    assert_eq!(again, first);
    let stats = q.stats(now).await.expect("stats");
    assert_eq!(stats[0].ready, 1, "one job exists");
    let elsewhere = q.enqueue(&charge("renewals")).await.expect("enqueue in another queue");
    assert_ne!(elsewhere, first, "a dedup key is scoped to its queue");

    let claimed = claim_one(q, "payments", "w1", now).await.expect("claimed");
    assert!(
        q.complete(&claimed.job.id, &claimed.lease_token)
            .await
            .expect("complete")
    );
    let after = q.enqueue(&charge("payments")).await.expect("enqueue after completion");
    assert_ne!(after, first, "the key is free once its job is done");
    db.drop_database().await;
});

both_backends!(a_delayed_job_waits_for_its_time, |backend| async move {
    let db = open(backend).await;
    let q = db.queue();
    let now = t0();
    q.enqueue(&job("payments", "creator-1", 0, now).visible_at(now + secs(60)))
        .await
        .expect("enqueue");

    assert!(claim_one(q, "payments", "w1", now + secs(59)).await.is_none());
    let stats = q.stats(now).await.expect("stats");
    assert_eq!(
        (stats[0].ready, stats[0].delayed, stats[0].oldest_ready_age_s),
        (0, 1, None)
    );
    let stats = q.stats(now + secs(90)).await.expect("stats");
    assert_eq!((stats[0].ready, stats[0].oldest_ready_age_s), (1, Some(90)));
    let claimed = claim_one(q, "payments", "w1", now + secs(60)).await.expect("due");
    assert_eq!(claimed.job.created_at, now);
    db.drop_database().await;
});
