//! The Prometheus series the alert rules and dashboard read.

use std::time::Duration;

use holdfast_resilience::{CallOptions, DependencyConfig, Registry};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::support::{Fault, config, fail, trip};

/// Runs `scenario` on a paused current-thread runtime with a recorder of
/// its own, so parallel tests do not share series.
fn record(scenario: impl AsyncFnOnce()) -> PrometheusHandle {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(scenario());
    });
    handle
}

#[test]
fn breaker_state_transitions_rejections_timeouts_and_retries_are_exported() {
    let handle = record(async || {
        let mut hanging = config();
        hanging.deadline_ms = 50;
        hanging.retry.max_attempts = 2;
        // The jittered pause (up to base_ms) must end before the 50 ms
        // deadline, or the retry is rightly skipped.
        hanging.retry.base_ms = 10;
        let registry = Registry::from_configs([("payments", config()), ("inventory", hanging)]).expect("valid configs");
        let payments = registry.breaker_for("payments").expect("payments");
        trip(&payments).await;
        let _ = fail(&payments, Fault::Transient).await;

        let inventory = registry.breaker_for("inventory").expect("inventory");
        let _ = inventory
            .call(CallOptions::default(), std::future::pending::<Result<(), Fault>>)
            .await;
        let _ = inventory
            .call(CallOptions::idempotent(), || async { Err::<(), _>(Fault::Transient) })
            .await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        registry.export_gauges();
    });
    let text = handle.render();
    for series in [
        r#"holdfast_breaker_state{dependency="payments"} 2"#,
        r#"holdfast_breaker_state{dependency="inventory"} 0"#,
        r#"holdfast_breaker_transitions_total{dependency="payments",from="closed",to="open"} 1"#,
        r#"holdfast_dependency_rejections_total{dependency="payments",reason="breaker_open"} 1"#,
        r#"holdfast_dependency_timeouts_total{dependency="inventory"} 1"#,
        r#"holdfast_dependency_retries_total{dependency="inventory"} 1"#,
        r#"holdfast_dependency_call_duration_seconds_count{dependency="payments"} 10"#,
        r#"holdfast_dependency_max_concurrency{dependency="payments"} 64"#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

#[test]
fn a_full_bulkhead_and_a_spent_deadline_are_counted_by_reason() {
    let handle = record(async || {
        let registry = Registry::from_configs([(
            "warehouse",
            DependencyConfig {
                max_concurrency: 1,
                ..config()
            },
        )])
        .expect("valid");
        let warehouse = registry.breaker_for("warehouse").expect("warehouse");
        let holder = warehouse.clone();
        let held = tokio::spawn(async move {
            let _ = holder
                .call(CallOptions::default(), std::future::pending::<Result<(), Fault>>)
                .await;
        });
        tokio::task::yield_now().await;
        let _ = fail(&warehouse, Fault::Transient).await;
        let spent = tokio::time::Instant::now();
        let _ = warehouse
            .call(CallOptions::default().with_deadline(spent), || async {
                Ok::<_, Fault>(())
            })
            .await;
        held.abort();
    });
    let text = handle.render();
    assert!(
        text.contains(r#"holdfast_dependency_rejections_total{dependency="warehouse",reason="bulkhead"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"holdfast_dependency_rejections_total{dependency="warehouse",reason="deadline"} 1"#),
        "{text}"
    );
}
