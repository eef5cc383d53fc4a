//! Prometheus metrics: request counts and latency per route, pool
//! utilisation per pool, dependency failures. Names are the contract the
//! alert rules and `holdfast canary-gate` read:
//! `holdfast_http_requests_total{route,method,status}`,
//! `holdfast_http_request_duration_seconds{route}` (histogram),
//! `holdfast_db_pool_connections_in_use{pool}`, `holdfast_db_pool_connections_max{pool}`,
//! `holdfast_dependency_errors_total{dependency,kind}`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use holdfast_store::SharedStore;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle. The
/// recorder is global because the `metrics` macros are; several services in
/// one process (tests) share it.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be incomplete");
            }
            handle
        })
        .clone()
}

/// Counts and times every request by its route template, never by its raw
/// path (which would explode label cardinality with ids).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("holdfast_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("holdfast_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Refreshes the gauges that are read rather than counted, then renders.
pub fn render(store: &SharedStore, dependencies: &holdfast_resilience::Registry) -> String {
    dependencies.export_gauges();
    for usage in store.pool_usage() {
        metrics::gauge!("holdfast_db_pool_connections_in_use", "pool" => usage.pool).set(f64::from(usage.in_use));
        metrics::gauge!("holdfast_db_pool_connections_max", "pool" => usage.pool).set(f64::from(usage.max));
    }
    prometheus().render()
}

pub fn dependency_error(dependency: &'static str, kind: &'static str) {
    metrics::counter!("holdfast_dependency_errors_total", "dependency" => dependency, "kind" => kind).increment(1);
}

/// Counts a guarded call that did not get the dependency's answer: `kind`
/// is the policy's reason (`bulkhead`, `breaker_open`, `deadline`), or for a
/// failed call `unavailable` (worth retrying) or `rejected` (refused).
pub fn dependency_failed<E: holdfast_resilience::Classify>(
    dependency: &'static str,
    error: &holdfast_resilience::CallError<E>,
) {
    use holdfast_resilience::CallError;
    let kind = match error {
        CallError::Failed(failed) if failed.is_transient() => "unavailable",
        CallError::Failed(_) => "rejected",
        other => other.reason(),
    };
    dependency_error(dependency, kind);
}
