//! Group heads and runs: a claim walks groups, not a group's backlog, and a
//! run of one group's jobs is leased, worked and given back in order.

use std::collections::BTreeSet;

use holdfast_store::LeaseToken;

use crate::both_backends;
use crate::helpers::{claim_one, job, n_of, open, secs, t0};

both_backends!(
    a_long_backlog_in_one_group_does_not_hide_the_other_groups,
    |backend| async move {
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        // One busy group with a long backlog, enqueued first so its jobs
        // come first in enqueue order ...
        for n in 0..10_000 {
            q.enqueue(&job("webhooks", "hot", n, now)).await.expect("enqueue");
        }
        let head = claim_one(q, "webhooks", "w1", now).await.expect("the hot group's head");
        assert_eq!((head.job.group_key.as_str(), n_of(&head)), ("hot", 0));
        // ... then 100 other groups with one job each.
        for g in 0..100 {
            q.enqueue(&job("webhooks", &format!("g{g:03}"), 0, now))
                .await
                .expect("enqueue");
        }
        // While the hot head is in flight, a claim of 100 finds exactly the
        // other groups' jobs: not one job of the backlog, and none missed.
        let claimed = q.claim_batch("webhooks", "w2", 100, now).await.expect("claim");
        let groups: BTreeSet<&str> = claimed.iter().map(|c| c.job.group_key.as_str()).collect();
        assert_eq!(claimed.len(), 100);
        assert_eq!(groups.len(), 100);
        assert!(!groups.contains("hot"), "the hot group has its head in flight");
        // Once the head completes, the next job of the backlog heads its group.
        assert!(q.complete(&head.job.id, &head.lease_token).await.expect("complete"));
        let next = claim_one(q, "webhooks", "w3", now).await.expect("the next hot job");
        assert_eq!((next.job.group_key.as_str(), n_of(&next)), ("hot", 1));
        db.drop_database().await;
    }
);

both_backends!(
    a_run_is_a_groups_next_jobs_in_order_and_stops_at_a_gap,
    |backend| async move {
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        for n in 0..5 {
            q.enqueue(&job("webhooks", "a", n, now)).await.expect("enqueue");
        }
        // The sixth is delayed: the run must stop before it.
        q.enqueue(&job("webhooks", "a", 5, now).visible_at(now + secs(60)))
            .await
            .expect("enqueue");
        q.enqueue(&job("webhooks", "a", 6, now)).await.expect("enqueue");
        for n in 0..3 {
            q.enqueue(&job("webhooks", "b", n, now)).await.expect("enqueue");
        }
        let runs = q.claim_runs("webhooks", "w1", 10, 4, now).await.expect("claim runs");
        let shape: Vec<(String, Vec<u64>)> = runs
            .iter()
            .map(|run| (run[0].job.group_key.clone(), run.iter().map(n_of).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![("a".to_owned(), vec![0, 1, 2, 3]), ("b".to_owned(), vec![0, 1, 2])],
            "runs in head order, each in enqueue order, at most 4 long"
        );
        assert!(
            runs.iter()
                .flatten()
                .all(|c| c.lease_token == runs[0][0].lease_token && c.job.receive_count == 1),
            "one lease, one receive each"
        );
        // Nothing of a or b is claimable while their runs are in flight.
        assert!(
            q.claim_runs("webhooks", "w2", 10, 4, now)
                .await
                .expect("claim")
                .is_empty()
        );

        // The run of a: 0 and 1 done, 2 failed, 3 never started.
        let a = &runs[0];
        let done: Vec<_> = a[..2]
            .iter()
            .map(|c| (c.job.id.clone(), c.lease_token.clone()))
            .collect();
        assert_eq!(q.complete_batch(&done).await.expect("complete"), 2);
        q.fail(&a[2].job.id, &a[2].lease_token, "503", now + secs(5))
            .await
            .expect("fail");
        let untouched = vec![(a[3].job.id.clone(), a[3].lease_token.clone())];
        assert_eq!(q.release(&untouched, now).await.expect("release"), 1);
        // The released job waits behind the failed one, and its receive was
        // given back.
        assert!(
            q.claim_runs("webhooks", "w2", 10, 4, now + secs(1))
                .await
                .expect("claim")
                .is_empty()
        );
        let again = q
            .claim_runs("webhooks", "w2", 10, 4, now + secs(5))
            .await
            .expect("claim");
        assert_eq!(again.len(), 1);
        let ns: Vec<u64> = again[0].iter().map(n_of).collect();
        assert_eq!(
            ns,
            vec![2, 3, 4],
            "the failed job first, then the rest, stopping before the delayed one"
        );
        assert_eq!(
            again[0].iter().map(|c| c.job.receive_count).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        db.drop_database().await;
    }
);

both_backends!(a_run_whose_worker_died_comes_back_whole, |backend| async move {
    let db = open(backend).await;
    let q = db.queue();
    let now = t0();
    for n in 0..3 {
        q.enqueue(&job("webhooks", "a", n, now).visibility_timeout(std::time::Duration::from_secs(10)))
            .await
            .expect("enqueue");
    }
    let first = q.claim_runs("webhooks", "w1", 1, 10, now).await.expect("claim");
    assert_eq!(first[0].len(), 3);
    // w1 dies. After the visibility timeout the same run comes back, in order.
    assert!(
        q.claim_runs("webhooks", "w2", 1, 10, now + secs(5))
            .await
            .expect("claim")
            .is_empty()
    );
    let second = q
        .claim_runs("webhooks", "w2", 1, 10, now + secs(11))
        .await
        .expect("claim");
    assert_eq!(second[0].iter().map(n_of).collect::<Vec<_>>(), vec![0, 1, 2]);
    // w1's late completion changes nothing; w2's removes the run.
    let stale: Vec<_> = first[0]
        .iter()
        .map(|c| (c.job.id.clone(), c.lease_token.clone()))
        .collect();
    assert_eq!(q.complete_batch(&stale).await.expect("complete"), 0);
    let fresh: Vec<_> = second[0]
        .iter()
        .map(|c| (c.job.id.clone(), c.lease_token.clone()))
        .collect();
    assert_eq!(q.complete_batch(&fresh).await.expect("complete"), 3);
    assert!(q.stats(now + secs(11)).await.expect("stats").is_empty());
    db.drop_database().await;
});

both_backends!(a_redriven_dead_letter_heads_its_group_again, |backend| async move {
    let db = open(backend).await;
    let q = db.queue();
    let now = t0();
    q.enqueue(&job("payments", "creator-1", 0, now).max_receives(1))
        .await
        .expect("enqueue");
    q.enqueue(&job("payments", "creator-1", 1, now)).await.expect("enqueue");
    let first = claim_one(q, "payments", "w1", now).await.expect("claim");
    q.fail(&first.job.id, &first.lease_token, "declined", now)
        .await
        .expect("fail");
    // Dead after its one receive: the next job heads the group.
    let second = claim_one(q, "payments", "w1", now).await.expect("claim");
    assert_eq!(n_of(&second), 1);
    q.fail(&second.job.id, &second.lease_token, "later", now + secs(60))
        .await
        .expect("fail");
    assert_eq!(
        q.redrive("payments", &holdfast_store::Redrive::All, now)
            .await
            .expect("redrive"),
        1
    );
    // The redriven job is older, so it goes first again.
    let third = claim_one(q, "payments", "w1", now).await.expect("claim");
    assert_eq!(n_of(&third), 0);
    db.drop_database().await;
});

both_backends!(
    a_heads_row_follows_its_jobs_visibility_through_every_change,
    |backend| async move {
        // Claims find heads by when their row says they are claimable; each
        // way a head job's visibility moves must move the row with it, or
        // the job is claimed too early or waits too long.
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        let ten_s = std::time::Duration::from_secs(10);
        for group in ["released", "retried", "extended"] {
            q.enqueue(&job("payments", group, 0, now).visibility_timeout(ten_s))
                .await
                .expect("enqueue");
        }
        let leased = q.claim_batch("payments", "w1", 3, now).await.expect("claim");
        assert_eq!(leased.len(), 3);
        let of = |group: &str| {
            leased
                .iter()
                .find(|c| c.job.group_key == group)
                .expect("leased")
                .clone()
        };
        assert!(
            q.claim_batch("payments", "w2", 3, now).await.expect("claim").is_empty(),
            "every head is leased"
        );

        // Given back unstarted: claimable at once, not when the lease would end.
        let released = of("released");
        let back = [(released.job.id.clone(), released.lease_token.clone())];
        assert_eq!(q.release(&back, now + secs(1)).await.expect("release"), 1);
        let again = q.claim_batch("payments", "w2", 3, now + secs(1)).await.expect("claim");
        assert_eq!(groups_of(&again), vec!["released"]);

        // Failed with a retry in 3 s: not before, and at once after.
        let retried = of("retried");
        q.fail(&retried.job.id, &retried.lease_token, "declined", now + secs(4))
            .await
            .expect("fail");
        assert!(
            q.claim_batch("payments", "w2", 3, now + secs(3))
                .await
                .expect("claim")
                .is_empty(),
            "a retry waits for its time"
        );
        let retry = q.claim_batch("payments", "w2", 3, now + secs(4)).await.expect("claim");
        assert_eq!(groups_of(&retry), vec!["retried"]);

        // Extended by a heartbeat at 8 s to 18 s: not claimable when the
        // first lease would have ended (10 s), claimable after 18 s.
        let extended = of("extended");
        assert!(
            q.heartbeat(&extended.job.id, &extended.lease_token, ten_s, now + secs(8))
                .await
                .expect("heartbeat")
        );
        assert!(
            q.claim_batch("payments", "w3", 3, now + secs(12))
                .await
                .expect("claim")
                .iter()
                .all(|c| c.job.group_key != "extended"),
            "the heartbeat kept the lease"
        );
        let expired = q.claim_batch("payments", "w3", 3, now + secs(40)).await.expect("claim");
        assert!(groups_of(&expired).contains(&"extended"), "{:?}", groups_of(&expired));
        db.drop_database().await;
    }
);

fn groups_of(claimed: &[holdfast_store::ClaimedJob]) -> Vec<&str> {
    let mut groups: Vec<&str> = claimed.iter().map(|c| c.job.group_key.as_str()).collect();
    groups.sort_unstable();
    groups
}

both_backends!(
    a_claim_whose_answer_was_lost_is_given_back_by_its_token,
    |backend| async move {
        let db = open(backend).await;
        let q = db.queue();
        let now = t0();
        for n in 0..3 {
            q.enqueue(&job("webhooks", "a", n, now)).await.expect("enqueue");
        }
        q.enqueue(&job("webhooks", "b", 0, now)).await.expect("enqueue");
        // The claim commits, and its caller never learns what it leased.
        let token = LeaseToken::generate();
        let lost = q
            .claim_runs_as("webhooks", "w1", 10, 4, &token, now)
            .await
            .expect("claim");
        assert_eq!(lost.iter().map(Vec::len).sum::<usize>(), 4);
        assert!(
            q.claim_batch("webhooks", "w2", 10, now)
                .await
                .expect("claim")
                .is_empty(),
            "both groups are held by the lost claim"
        );
        // Another claim's token gives back nothing ...
        let other = LeaseToken::generate();
        assert_eq!(q.release_claim("webhooks", &other, now).await.expect("release"), 0);
        // ... nor does this token on another queue ...
        assert_eq!(q.release_claim("fulfillment", &token, now).await.expect("release"), 0);
        // ... and the claim's own gives back all four, ready at once, their
        // receive uncounted and their order kept.
        assert_eq!(q.release_claim("webhooks", &token, now).await.expect("release"), 4);
        let runs = q.claim_runs("webhooks", "w2", 10, 4, now).await.expect("claim again");
        let shape: Vec<(String, Vec<u64>)> = runs
            .iter()
            .map(|run| (run[0].job.group_key.clone(), run.iter().map(n_of).collect()))
            .collect();
        assert_eq!(shape, vec![("a".to_owned(), vec![0, 1, 2]), ("b".to_owned(), vec![0])]);
        assert!(runs.iter().flatten().all(|c| c.job.receive_count == 1));
        // Once the jobs are someone else's, the old token finds nothing.
        assert_eq!(q.release_claim("webhooks", &token, now).await.expect("release"), 0);
        db.drop_database().await;
    }
);
