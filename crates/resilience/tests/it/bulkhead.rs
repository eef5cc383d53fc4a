//! The bulkhead: beyond `max_concurrency` calls in flight, the next call is
//! refused at once instead of waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use holdfast_resilience::{BreakerState, CallError, CallOptions, DependencyConfig};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::support::{Fault, Gate, config, policy};

fn eight_wide() -> DependencyConfig {
    DependencyConfig {
        max_concurrency: 8,
        deadline_ms: 10_000,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_call_beyond_max_concurrency_is_refused_at_once() {
    let policy = policy(eight_wide());
    let gate = Gate::new();
    let mut held = JoinSet::new();
    for _ in 0..8 {
        let (policy, gate) = (policy.clone(), gate.clone());
        held.spawn(async move { policy.call(CallOptions::default(), || gate.pass(Ok(()))).await });
    }
    gate.wait_for(8).await;
    assert_eq!(policy.state().in_flight, 8);

    let ran = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let ninth = policy
        .call(CallOptions::idempotent(), || {
            ran.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), Fault>>()
        })
        .await;
    let waited = started.elapsed();
    assert!(matches!(ninth, Err(CallError::BulkheadFull)));
    assert!(waited < Duration::from_millis(50), "refusal took {waited:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    gate.open(8);
    while let Some(joined) = held.join_next().await {
        joined.expect("task").expect("held calls complete");
    }
    let state = policy.state();
    assert_eq!((state.in_flight, state.rejected.bulkhead), (0, 1));
    assert_eq!(
        (state.state, state.calls_in_window),
        (BreakerState::Closed, 8),
        "refusals are not failures"
    );
    crate::support::succeed(&policy).await.expect("room again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_racing_callers_get_exactly_max_concurrency_places() {
    let policy = policy(eight_wide());
    let gate = Gate::new();
    let barrier = Arc::new(Barrier::new(50));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let (policy, gate, barrier, refused) = (policy.clone(), gate.clone(), barrier.clone(), refused.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let result = policy.call(CallOptions::default(), || gate.pass(Ok(()))).await;
            if matches!(result, Err(CallError::BulkheadFull)) {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            result.is_ok()
        });
    }
    gate.wait_for(8).await;
    let settled = tokio::time::timeout(Duration::from_secs(5), async {
        while refused.load(Ordering::SeqCst) < 42 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "42 callers refused while 8 were held");
    assert_eq!(gate.entered(), 8);
    gate.open(8);
    let mut succeeded = 0;
    while let Some(joined) = tasks.join_next().await {
        succeeded += usize::from(joined.expect("task"));
    }
    assert_eq!(succeeded, 8);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_gives_its_place_back() {
    let policy = policy(DependencyConfig {
        max_concurrency: 1,
        ..config()
    });
    let hung = policy.call(CallOptions::default(), std::future::pending::<Result<(), Fault>>);
    assert!(tokio::time::timeout(Duration::from_millis(10), hung).await.is_err());
    assert_eq!(policy.state().in_flight, 0);
    crate::support::succeed(&policy).await.expect("the place is free");
}
