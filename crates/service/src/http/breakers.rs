//! The dependencies' circuit breakers for operators (admin): state and
//! counters, and live changes of a dependency's thresholds without a restart
//! (the same change `SIGHUP` makes from the config file).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use holdfast_resilience::{BreakerSnapshot, DependencyConfig, ReconfigureError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiJson;
use super::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerOut {
    pub name: String,
    /// "closed", "half_open" or "open".
    pub state: String,
    pub failure_rate: f64,
    pub calls_in_window: u64,
    pub failures_in_window: u64,
    pub slow_calls: u64,
    pub opened_at: Option<DateTime<Utc>>,
    /// While open: seconds before probes are let through.
    pub retry_after_s: Option<f64>,
    pub transitions: u64,
    pub rejected_bulkhead: u64,
    pub rejected_breaker_open: u64,
    pub rejected_deadline: u64,
    pub timeouts: u64,
    pub retries: u64,
    pub in_flight: usize,
    #[schema(value_type = Object)]
    pub config: DependencyConfig,
}

impl From<BreakerSnapshot> for BreakerOut {
    fn from(snapshot: BreakerSnapshot) -> Self {
        Self {
            state: snapshot.state.as_str().to_owned(),
            opened_at: snapshot.opened_at.map(DateTime::<Utc>::from),
            retry_after_s: snapshot.retry_after.map(|d| d.as_secs_f64()),
            rejected_bulkhead: snapshot.rejected.bulkhead,
            rejected_breaker_open: snapshot.rejected.breaker_open,
            rejected_deadline: snapshot.rejected.deadline,
            name: snapshot.name,
            failure_rate: snapshot.failure_rate,
            calls_in_window: snapshot.calls_in_window,
            failures_in_window: snapshot.failures_in_window,
            slow_calls: snapshot.slow_calls,
            transitions: snapshot.transitions,
            timeouts: snapshot.timeouts,
            retries: snapshot.retries,
            in_flight: snapshot.in_flight,
            config: snapshot.config,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerList {
    pub data: Vec<BreakerOut>,
}

#[utoipa::path(get, path = "/api/v1/ops/breakers", tag = "ops", responses((status = 200, body = BreakerList)))]
pub async fn list_breakers(State(state): State<AppState>, _admin: Admin) -> Json<BreakerList> {
    Json(BreakerList {
        data: state
            .deps
            .registry
            .snapshots()
            .into_iter()
            .map(BreakerOut::from)
            .collect(),
    })
}

/// Replaces a dependency's policy settings (the whole `[dependencies.NAME]`
/// table; omitted keys take their defaults). The breaker keeps its state
/// and window.
#[utoipa::path(put, path = "/api/v1/ops/breakers/{name}", tag = "ops",
    params(("name" = String, Path, description = "payments, warehouse, webhooks, events")),
    request_body(content = Object, description = "a [dependencies.NAME] table as JSON"),
    responses((status = 200, body = BreakerOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_breaker(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    json: ApiJson<DependencyConfig>,
) -> ApiResult<Json<BreakerOut>> {
    match state.deps.registry.reconfigure(&name, json.body) {
        Ok(()) => {}
        Err(ReconfigureError::UnknownDependency(_)) => return Err(ApiError::not_found("dependency")),
        Err(ReconfigureError::Invalid(invalid)) => {
            return Err(ApiError::field("invalid_request", &invalid.key, invalid.reason));
        }
    }
    tracing::info!(dependency = %name, "dependency policy changed through the admin API");
    let policy = state
        .deps
        .registry
        .breaker_for(&name)
        .ok_or_else(|| ApiError::not_found("dependency"))?;
    Ok(Json(policy.state().into()))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_breakers))
        .routes(routes!(update_breaker))
}
