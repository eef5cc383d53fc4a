//! Deadlines: a call ends at the earlier of the request's deadline and the
//! dependency's `deadline_ms`, and a spent budget is refused without a call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use holdfast_resilience::{BreakerState, CallError, CallOptions, DependencyConfig};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Fault, config, policy};

fn hung() -> std::future::Pending<Result<(), Fault>> {
    std::future::pending()
}

/// Real time: 30 ms of request budget left, a dependency that never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_ms_of_budget_against_a_hung_dependency() {
    let policy = policy(DependencyConfig {
        deadline_ms: 5000,
        ..config()
    });
    let started = std::time::Instant::now();
    let deadline = Instant::now() + Duration::from_millis(30);
    let result = policy
        .call(CallOptions::idempotent().with_deadline(deadline), hung)
        .await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(CallError::DeadlineExceeded)));
    assert!(elapsed >= Duration::from_millis(30), "returned early: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(30 + 50), "returned late: {elapsed:?}");
    assert_eq!(policy.state().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn the_earlier_of_request_and_dependency_deadline_wins() {
    let policy = policy(DependencyConfig {
        deadline_ms: 200,
        ..config()
    });

    let started = Instant::now();
    let late_request = started + Duration::from_secs(5);
    let result = policy
        .call(CallOptions::default().with_deadline(late_request), hung)
        .await;
    assert!(matches!(result, Err(CallError::DeadlineExceeded)));
    assert_eq!(started.elapsed(), Duration::from_millis(200));

    let started = Instant::now();
    let early_request = started + Duration::from_millis(30);
    let result = policy
        .call(CallOptions::default().with_deadline(early_request), hung)
        .await;
    assert!(matches!(result, Err(CallError::DeadlineExceeded)));
    assert_eq!(started.elapsed(), Duration::from_millis(30));

    let started = Instant::now();
    let result = policy.call(CallOptions::default(), hung).await;
    assert!(matches!(result, Err(CallError::DeadlineExceeded)));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(200),
        "no request deadline: deadline_ms alone"
    );
    assert_eq!(policy.state().timeouts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_is_refused_without_calling() {
    let policy = policy(config());
    let ran = AtomicUsize::new(0);
    let spent = Instant::now();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let result = policy
        .call(CallOptions::default().with_deadline(spent), || {
            ran.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Fault>(()) }
        })
        .await;
    assert!(matches!(result, Err(CallError::DeadlineExceeded)));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let state = policy.state();
    assert_eq!(
        (state.rejected.deadline, state.timeouts, state.calls_in_window),
        (1, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_failures_for_the_breaker() {
    let policy = policy(DependencyConfig {
        deadline_ms: 100,
        ..config()
    });
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let policy = policy.clone();
        tasks.spawn(async move { policy.call(CallOptions::default(), hung).await });
    }
    while let Some(joined) = tasks.join_next().await {
        assert!(matches!(joined.expect("task"), Err(CallError::DeadlineExceeded)));
    }
    let state = policy.state();
    assert_eq!(
        (state.state, state.timeouts, state.failures_in_window),
        (BreakerState::Open, 10, 10)
    );
}
