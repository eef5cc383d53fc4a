//! Retries: only idempotent calls with transient errors, within the budget,
//! with jittered pauses bounded by `max_ms`, never past the deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use holdfast_resilience::{CallError, CallOptions, DependencyConfig, RetryConfig};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Fault, config, policy};

/// A wide bulkhead and a breaker that never trips, so only the retry rules act.
fn retrying(retry: RetryConfig) -> DependencyConfig {
    let mut config = DependencyConfig {
        deadline_ms: 60_000,
        max_concurrency: 1000,
        retry,
        ..config()
    };
    config.breaker.failure_rate = 1.0;
    config.breaker.min_calls = 1_000_000;
    config
}

fn three_attempts() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        base_ms: 50,
        max_ms: 1000,
        budget_percent: 100,
    }
}

async fn attempts_of(options: CallOptions, fault: Fault) -> (usize, Result<(), CallError<Fault>>) {
    let policy = policy(retrying(three_attempts()));
    let attempts = AtomicUsize::new(0);
    let result = policy
        .call(options, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(fault) }
        })
        .await;
    (attempts.load(Ordering::SeqCst), result)
}

#[tokio::test(start_paused = true)]
async fn only_idempotent_calls_with_transient_errors_are_retried() {
    let (attempts, result) = attempts_of(CallOptions::idempotent(), Fault::Transient).await;
    assert_eq!(attempts, 3);
    assert!(matches!(result, Err(CallError::Failed(Fault::Transient))));

    let (attempts, _) = attempts_of(CallOptions::non_idempotent(), Fault::Transient).await;
    assert_eq!(attempts, 1, "a call without an idempotency key is never repeated");

    let (attempts, result) = attempts_of(CallOptions::idempotent(), Fault::Definitive).await;
    assert_eq!(attempts, 1, "a definitive answer is not retried");
    assert!(matches!(result, Err(CallError::Failed(Fault::Definitive))));
}

#[tokio::test(start_paused = true)]
async fn a_retry_can_succeed() {
    let policy = policy(retrying(three_attempts()));
    let attempts = AtomicUsize::new(0);
    let result = policy
        .call(CallOptions::idempotent(), || {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt < 3 {
                    Err(Fault::Transient)
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
    assert_eq!(result.ok(), Some(3));
    assert_eq!(policy.state().retries, 2);
}

/// 100 callers fail together; with a 20% budget the dependency sees at most
/// 20 retries, not the 200 that three attempts each would make.
#[tokio::test(start_paused = true)]
async fn a_burst_of_failures_stays_within_the_budget() {
    let policy = policy(retrying(RetryConfig {
        budget_percent: 20,
        ..three_attempts()
    }));
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let (policy, attempts) = (policy.clone(), attempts.clone());
        tasks.spawn(async move {
            policy
                .call(CallOptions::idempotent(), || {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Err::<(), _>(Fault::Transient)
                    }
                })
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        assert!(matches!(
            joined.expect("task"),
            Err(CallError::Failed(Fault::Transient))
        ));
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 120);
    assert_eq!(policy.state().retries, 20);
}

/// One call per window, so the budget's floor (3 retries per window) lets
/// every call use all its attempts: the pauses before retries 1, 2 and 3 are
/// capped at 100, 200 and 250 ms (`max_ms`), and differ from call to call.
#[tokio::test(start_paused = true)]
async fn pauses_are_jittered_and_bounded_by_max_ms() {
    let retry = RetryConfig {
        max_attempts: 4,
        base_ms: 100,
        max_ms: 250,
        budget_percent: 100,
    };
    let policy = policy(retrying(retry));
    let mut pauses: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for _ in 0..40 {
        let mut last: Option<Instant> = None;
        let mut gaps = Vec::new();
        let _ = policy
            .call(CallOptions::idempotent(), || {
                let now = Instant::now();
                if let Some(previous) = last.replace(now) {
                    gaps.push(now - previous);
                }
                async { Err::<(), _>(Fault::Transient) }
            })
            .await;
        assert_eq!(gaps.len(), 3);
        for (retry, gap) in gaps.into_iter().enumerate() {
            pauses[retry].push(gap);
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    // Sleeps in paused time round up to the next millisecond.
    for (pauses, ceiling_ms) in pauses.iter().zip([100, 200, 250]) {
        let longest = pauses.iter().max().copied().unwrap_or_default();
        assert!(
            longest <= Duration::from_millis(ceiling_ms + 1),
            "{longest:?} above {ceiling_ms} ms"
        );
        let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 10, "pauses are jittered: {distinct:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retries_never_run_past_the_deadline() {
    let retry = RetryConfig {
        max_attempts: 10,
        base_ms: 200,
        max_ms: 1000,
        budget_percent: 100,
    };
    let policy = policy(DependencyConfig {
        deadline_ms: 300,
        ..retrying(retry)
    });
    for _ in 0..50 {
        let started = Instant::now();
        let attempts = AtomicUsize::new(0);
        let result = policy
            .call(CallOptions::idempotent(), || {
                attempts.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<(), _>(Fault::Transient)
                }
            })
            .await;
        let elapsed = started.elapsed();
        assert!(
            elapsed <= Duration::from_millis(300),
            "ran {elapsed:?} past a 300 ms deadline"
        );
        match result {
            // The pause that would not fit is skipped and the last error returned.
            Err(CallError::Failed(Fault::Transient)) => {}
            // A retry started in time may still be cut off by the deadline.
            Err(CallError::DeadlineExceeded) => assert_eq!(elapsed, Duration::from_millis(300)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(attempts.load(Ordering::SeqCst) >= 1);
    }
    assert!(policy.state().retries > 0, "some pauses fit before the deadline");
}
