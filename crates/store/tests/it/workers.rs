//! Real concurrent workers: FIFO per group, parallel groups, and no job
//! claimed twice or lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use holdfast_store::{JobId, SharedStore};

use crate::both_backends;
use crate::helpers::{job, n_of, open, t0};

/// One job's time in a worker's hands: from after its claim returned to
/// before its completion was sent, so two jobs of one group can never look
/// as if they overlapped merely because of when the times were read.
#[derive(Debug, Clone)]
struct Held {
    id: JobId,
    group: String,
    n: u64,
    claimed: Instant,
    released: Instant,
}

struct Run {
    queue: &'static str,
    workers: usize,
    batch: u32,
    total: usize,
    /// Simulated work per job.
    work: Duration,
}

/// Starts `run.workers` tasks that claim and complete until every job is
/// done, checking on the way that no job and no group is held twice at once.
async fn work_through(store: &SharedStore, run: Run) -> Vec<Held> {
    let held_jobs = Arc::new(Mutex::new(HashSet::<JobId>::new()));
    let held_groups = Arc::new(Mutex::new(HashSet::<String>::new()));
    let log = Arc::new(Mutex::new(Vec::<Held>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..run.workers {
        let (store, held_jobs, held_groups, log, done) = (
            store.clone(),
            held_jobs.clone(),
            held_groups.clone(),
            log.clone(),
            done.clone(),
        );
        let (queue, batch, total, work) = (run.queue, run.batch, run.total, run.work);
        tasks.spawn(async move {
            let worker = format!("worker-{w}");
            while done.load(Ordering::SeqCst) < total {
                let claimed = store
                    .queue()
                    .claim_batch(queue, &worker, batch, Utc::now())
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let at = Instant::now();
                for c in &claimed {
                    assert!(
                        held_jobs.lock().expect("lock").insert(c.job.id.clone()),
                        "{} claimed twice",
                        c.job.id
                    );
                    let group = c.job.group_key.clone();
                    assert!(
                        held_groups.lock().expect("lock").insert(group.clone()),
                        "two of {group} in flight"
                    );
                }
                for c in claimed {
                    tokio::time::sleep(work).await;
                    let released = Instant::now();
                    held_jobs.lock().expect("lock").remove(&c.job.id);
                    held_groups.lock().expect("lock").remove(&c.job.group_key);
                    log.lock().expect("lock").push(Held {
                        id: c.job.id.clone(),
                        group: c.job.group_key.clone(),
                        n: n_of(&c),
                        claimed: at,
                        released,
                    });
                    let completed = store
                        .queue()
                        .complete(&c.job.id, &c.lease_token)
                        .await
                        .expect("complete");
                    assert!(completed, "{} lost its lease", c.job.id);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    // The first worker to fail the test ends it at once (dropping the set
    // aborts the others, which would otherwise wait for jobs it held).
    let all = async {
        while let Some(finished) = tasks.join_next().await {
            finished.expect("worker task");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("workers finish within 2 minutes");
    log.lock().expect("lock").clone()
}

/// Enqueues `per_group` jobs in each of `groups` groups, interleaved, and
/// returns their ids.
async fn enqueue_interleaved(store: &SharedStore, queue: &str, groups: usize, per_group: u32) -> HashSet<JobId> {
    let now = t0();
    let mut ids = HashSet::new();
    for n in 0..per_group {
        for g in 0..groups {
            let id = store
                .queue()
                .enqueue(&job(queue, &format!("group-{g}"), n, now))
                .await
                .expect("enqueue");
            ids.insert(id);
        }
    }
    ids
}

/// Every job done exactly once, and each group's jobs in enqueue order.
fn check_exactly_once_in_order(log: &[Held], enqueued: &HashSet<JobId>) {
    assert_eq!(log.len(), enqueued.len(), "every job completes once");
    let completed: HashSet<JobId> = log.iter().map(|h| h.id.clone()).collect();
    assert_eq!(&completed, enqueued, "no job lost, none done twice");
    let mut by_group: HashMap<&str, Vec<&Held>> = HashMap::new();
    for held in log {
        by_group.entry(held.group.as_str()).or_default().push(held);
    }
    for (group, mut jobs) in by_group {
        jobs.sort_by_key(|h| h.claimed);
        let order: Vec<u64> = jobs.iter().map(|h| h.n).collect();
        let expected: Vec<u64> = (0..order.len() as u64).collect();
        assert_eq!(order, expected, "{group} ran out of order");
        for pair in jobs.windows(2) {
            assert!(pair[0].released <= pair[1].claimed, "{group} had two jobs in flight");
        }
    }
}

both_backends!(
    four_workers_keep_each_group_in_order_and_run_groups_in_parallel,
    |backend| async move {
        let db = open(backend).await;
        let enqueued = enqueue_interleaved(&db.store, "payments", 6, 8).await;
        let run = Run {
            queue: "payments",
            workers: 4,
            batch: 2,
            total: enqueued.len(),
            work: Duration::from_millis(10),
        };
        let log = work_through(&db.store, run).await;
        check_exactly_once_in_order(&log, &enqueued);

        let parallel = log.iter().any(|a| {
            log.iter()
                .any(|b| a.group != b.group && a.claimed < b.released && b.claimed < a.released)
        });
        assert!(parallel, "different groups never had jobs in flight together");
        assert!(db.queue().stats(Utc::now()).await.expect("stats").is_empty());
        db.drop_database().await;
    }
);

both_backends!(eight_claimers_never_share_a_job_and_lose_none, |backend| async move {
    let db = open(backend).await;
    let enqueued = enqueue_interleaved(&db.store, "renewals", 50, 10).await;
    let run = Run {
        queue: "renewals",
        workers: 8,
        batch: 10,
        total: enqueued.len(),
        work: Duration::ZERO,
    };
    let log = work_through(&db.store, run).await;
    check_exactly_once_in_order(&log, &enqueued);
    assert!(
        db.queue().stats(Utc::now()).await.expect("stats").is_empty(),
        "no job left behind"
    );
    db.drop_database().await;
});
