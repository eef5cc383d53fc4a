//! The circuit breaker: trips on the failure rate over `min_calls`, refuses
//! at once while open, counts slow calls, and lets exactly N probes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use holdfast_resilience::{BreakerConfig, BreakerState, CallError, CallOptions};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Fault, Gate, config, fail, policy, succeed, trip};

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_rate_once_min_calls_are_in() {
    let policy = policy(config());
    for _ in 0..9 {
        assert!(matches!(
            fail(&policy, Fault::Transient).await,
            Err(CallError::Failed(Fault::Transient))
        ));
    }
    let state = policy.state();
    assert_eq!(
        (state.state, state.calls_in_window),
        (BreakerState::Closed, 9),
        "9 calls are below min_calls"
    );

    assert!(fail(&policy, Fault::Transient).await.is_err());
    let state = policy.state();
    assert_eq!(state.state, BreakerState::Open);
    assert_eq!((state.calls_in_window, state.failures_in_window), (10, 10));
    assert_eq!(state.failure_rate, 1.0);
    assert_eq!(state.transitions, 1);
    assert!(state.opened_at.is_some());
    assert_eq!(state.retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn the_rate_is_a_threshold_and_definitive_errors_are_not_failures() {
    let policy = policy(config());
    for _ in 0..6 {
        succeed(&policy).await.expect("success");
    }
    for _ in 0..4 {
        let _ = fail(&policy, Fault::Transient).await;
    }
    for _ in 0..10 {
        let _ = fail(&policy, Fault::Definitive).await;
    }
    let state = policy.state();
    assert_eq!(
        (state.state, state.calls_in_window, state.failures_in_window),
        (BreakerState::Closed, 20, 4)
    );

    for _ in 0..6 {
        let _ = fail(&policy, Fault::Transient).await;
    }
    assert_eq!(policy.state().state, BreakerState::Closed, "10 of 26 failed");
    for _ in 0..6 {
        let _ = fail(&policy, Fault::Transient).await;
    }
    assert_eq!(policy.state().state, BreakerState::Open, "16 of 32 failed: 50% reached");
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_do_not_count() {
    let policy = policy(config());
    for _ in 0..9 {
        let _ = fail(&policy, Fault::Transient).await;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(policy.state().calls_in_window, 0);
    for _ in 0..9 {
        succeed(&policy).await.expect("success");
    }
    let _ = fail(&policy, Fault::Transient).await;
    assert_eq!(policy.state().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn while_open_calls_are_refused_without_running() {
    let policy = policy(config());
    trip(&policy).await;
    let ran = AtomicUsize::new(0);
    let started = Instant::now();
    let result = policy
        .call(CallOptions::idempotent(), || {
            ran.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), Fault>>()
        })
        .await;
    assert!(matches!(result, Err(CallError::BreakerOpen { retry_after }) if retry_after == Duration::from_secs(30)));
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(policy.state().rejected.breaker_open, 1);

    tokio::time::sleep(Duration::from_secs(12)).await;
    let result = fail(&policy, Fault::Transient).await;
    assert_eq!(
        result.err().and_then(|e| e.retry_after()),
        Some(Duration::from_secs(18))
    );
}

/// Measured on real time and threads: against a dependency that hangs, an
/// open breaker answers every caller at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_open_a_hung_dependency_costs_nothing() {
    let policy = policy(config());
    trip(&policy).await;
    let mut tasks = JoinSet::new();
    for _ in 0..200 {
        let policy = policy.clone();
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            let result = policy
                .call(CallOptions::default(), std::future::pending::<Result<(), Fault>>)
                .await;
            (started.elapsed(), result.map_err(|e| e.reason()))
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(joined) = tasks.join_next().await {
        let (elapsed, result) = joined.expect("task");
        assert_eq!(result, Err("breaker_open"));
        slowest = slowest.max(elapsed);
    }
    assert!(slowest < Duration::from_millis(50), "slowest refusal took {slowest:?}");
    assert_eq!(policy.state().rejected.breaker_open, 200);
}

#[tokio::test(start_paused = true)]
async fn slow_successes_count_as_failures() {
    let policy = policy(config());
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let policy = policy.clone();
        tasks.spawn(async move {
            policy
                .call(CallOptions::default(), || async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    Ok::<_, Fault>(())
                })
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("slow calls still return their answer");
    }
    let state = policy.state();
    assert_eq!(state.state, BreakerState::Open);
    assert_eq!(
        (state.calls_in_window, state.slow_calls, state.failures_in_window),
        (10, 10, 10)
    );
}

#[tokio::test(start_paused = true)]
async fn after_open_s_the_probes_close_it() {
    let policy = policy(config());
    trip(&policy).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        policy.state().state,
        BreakerState::HalfOpen,
        "observing it after open_s turns it half-open"
    );
    for _ in 0..3 {
        succeed(&policy).await.expect("probe");
    }
    let state = policy.state();
    assert_eq!(state.state, BreakerState::Closed);
    assert_eq!(
        (state.transitions, state.calls_in_window, state.opened_at),
        (3, 0, None)
    );
}

async fn race_probes(outcome: Result<(), Fault>) -> (holdfast_resilience::Policy, Gate, Vec<Result<(), &'static str>>) {
    let mut config = config();
    config.breaker = BreakerConfig {
        min_calls: 4,
        open_s: 1,
        half_open_probes: 3,
        ..config.breaker
    };
    config.deadline_ms = 10_000;
    let policy = crate::support::policy(config);
    trip(&policy).await;
    tokio::time::sleep(Duration::from_millis(1050)).await;

    let gate = Gate::new();
    let barrier = Arc::new(Barrier::new(50));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let (policy, gate, barrier, refused) = (policy.clone(), gate.clone(), barrier.clone(), refused.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let result = policy.call(CallOptions::default(), || gate.pass(outcome)).await;
            if result.is_err() {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            result.map_err(|e| e.reason())
        });
    }
    gate.wait_for(3).await;
    let all_refused = tokio::time::timeout(Duration::from_secs(5), async {
        while refused.load(Ordering::SeqCst) < 47 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(
        all_refused.is_ok(),
        "the other 47 callers were refused while the probes ran"
    );
    assert_eq!(gate.entered(), 3, "exactly half_open_probes calls got through");
    assert_eq!(policy.state().state, BreakerState::HalfOpen);

    gate.open(3);
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.expect("task"));
    }
    (policy, gate, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_n_concurrent_probes_then_closed_on_success() {
    let (policy, gate, results) = race_probes(Ok(())).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert_eq!(results.iter().filter(|r| **r == Err("breaker_open")).count(), 47);
    assert_eq!(gate.entered(), 3);
    assert_eq!(policy.state().state, BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_n_concurrent_probes_then_reopened_on_failure() {
    let (policy, gate, results) = race_probes(Err(Fault::Transient)).await;
    assert_eq!(results.iter().filter(|r| **r == Err("failed")).count(), 3);
    assert_eq!(gate.entered(), 3);
    let state = policy.state();
    assert_eq!(state.state, BreakerState::Open);
    assert_eq!(state.transitions, 3, "closed→open, open→half-open, half-open→open");
    assert!(state.retry_after.is_some_and(|left| left > Duration::from_millis(900)));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot() {
    let mut config = config();
    config.breaker.half_open_probes = 1;
    let policy = policy(config);
    trip(&policy).await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let hung = policy.call(CallOptions::default(), std::future::pending::<Result<(), Fault>>);
    assert!(
        tokio::time::timeout(Duration::from_millis(10), hung).await.is_err(),
        "the caller gave up"
    );
    succeed(&policy).await.expect("the slot came back");
    assert_eq!(policy.state().state, BreakerState::Closed);
}
