//! Live reconfiguration and the registry: new thresholds apply without
//! losing the window or the breaker's state; a bad reload changes nothing.

use std::time::Duration;

use holdfast_resilience::{BreakerState, DependencyConfig, ReconfigureError, Registry};

use crate::support::{Fault, config, fail, policy, succeed, trip};

#[tokio::test(start_paused = true)]
async fn a_new_threshold_applies_to_the_window_already_recorded() {
    let mut lenient = config();
    lenient.breaker.failure_rate = 0.9;
    let policy = policy(lenient.clone());
    for _ in 0..6 {
        let _ = fail(&policy, Fault::Transient).await;
    }
    for _ in 0..4 {
        succeed(&policy).await.expect("success");
    }
    assert_eq!(policy.state().state, BreakerState::Closed, "60% is under 90%");

    let mut strict = lenient;
    strict.breaker.failure_rate = 0.5;
    policy.reconfigure(strict).expect("valid");
    let state = policy.state();
    assert_eq!(
        (state.calls_in_window, state.failures_in_window),
        (10, 6),
        "the window survived"
    );
    assert_eq!(state.config.breaker.failure_rate, 0.5);

    succeed(&policy).await.expect("success");
    assert_eq!(policy.state().state, BreakerState::Open, "6 of 11 is over the new 50%");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stays_open_and_takes_the_new_open_duration() {
    let policy = policy(config());
    trip(&policy).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut shorter = config();
    shorter.breaker.open_s = 10;
    policy.reconfigure(shorter).expect("valid");
    let state = policy.state();
    assert_eq!(state.state, BreakerState::Open);
    assert_eq!(state.retry_after, Some(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(policy.state().state, BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_config_is_refused_and_changes_nothing() {
    let policy = policy(config());
    let mut bad = config();
    bad.breaker.failure_rate = 0.0;
    bad.deadline_ms = 1;
    let error = policy.reconfigure(bad).expect_err("rate 0 is invalid");
    assert_eq!(error.key, "dependencies.inventory.breaker.failure_rate");
    assert_eq!(policy.config().deadline_ms, config().deadline_ms);
}

#[tokio::test(start_paused = true)]
async fn the_registry_finds_lists_and_reconfigures_by_name() {
    let registry = Registry::from_configs([("warehouse", config()), ("payments", config())]).expect("valid");
    let mut transitions = registry.subscribe();
    let payments = registry.breaker_for("payments").expect("configured");
    assert!(registry.breaker_for("ledger").is_none());
    trip(&payments).await;

    let snapshots = registry.snapshots();
    let names: Vec<_> = snapshots.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(
        names,
        [("payments", BreakerState::Open), ("warehouse", BreakerState::Closed)]
    );
    let transition = transitions.try_recv().expect("the trip was published");
    assert_eq!(
        (
            transition.dependency.as_str(),
            transition.from,
            transition.to,
            transition.calls_in_window
        ),
        ("payments", BreakerState::Closed, BreakerState::Open, 10)
    );

    let mut wider = config();
    wider.max_concurrency = 128;
    registry.reconfigure("payments", wider).expect("known and valid");
    assert_eq!(
        payments.config().max_concurrency,
        128,
        "the handle already held sees the change"
    );
    assert_eq!(payments.state().state, BreakerState::Open);
    assert!(matches!(
        registry.reconfigure("ledger", config()),
        Err(ReconfigureError::UnknownDependency(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_reload_is_all_or_nothing() {
    let registry = Registry::from_configs([("payments", config())]).expect("valid");
    let mut slower = config();
    slower.deadline_ms = 9000;
    let mut bad = config();
    bad.retry.max_attempts = 0;
    let error = registry
        .apply([("payments", slower.clone()), ("events", bad)])
        .expect_err("events is invalid");
    assert_eq!(
        error.to_string(),
        "dependencies.events.retry.max_attempts: must be at least 1 (the first attempt)"
    );
    let payments = registry.breaker_for("payments").expect("configured");
    assert_eq!(payments.config().deadline_ms, config().deadline_ms, "nothing applied");
    assert!(registry.breaker_for("events").is_none());

    let events = DependencyConfig::default();
    registry
        .apply([("payments", slower), ("events", events)])
        .expect("valid");
    assert_eq!(payments.config().deadline_ms, 9000);
    assert!(registry.breaker_for("events").is_some(), "a new dependency is added");
}
