//! Operations: liveness, readiness and API keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use holdfast_store::Scope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, generate_key, register_key};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiJson;
use super::state::AppState;

/// The process is alive. Never touches the database.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub database: String,
    pub migrations: String,
    /// What is saturated right now, so new requests would be shed with 503
    /// (a database pool with every connection in use, a dependency's
    /// bulkhead at `max_concurrency`); empty when nothing is.
    pub shedding: Vec<String>,
}

/// Saturated pools and bulkheads: a balancer that sees them sends new
/// requests elsewhere instead of to a node that would shed them.
fn shedding(state: &AppState) -> Vec<String> {
    let pools = state
        .deps
        .store
        .pool_usage()
        .into_iter()
        // Workers' pool saturating sheds no request; SQLite's one shared
        // writer is busy whenever anything writes and queues rather than sheds.
        .filter(|pool| pool.pool != "worker" && pool.max > 1 && pool.in_use >= pool.max)
        .map(|pool| format!("database pool {} ({}/{} in use)", pool.pool, pool.in_use, pool.max));
    let bulkheads = state
        .deps
        .registry
        .snapshots()
        .into_iter()
        .filter(|breaker| breaker.in_flight >= breaker.config.max_concurrency)
        .map(|breaker| {
            format!(
                "{} bulkhead ({}/{} calls in flight)",
                breaker.name, breaker.in_flight, breaker.config.max_concurrency
            )
        });
    pools.chain(bulkheads).collect()
}

/// Ready to take traffic: the database answers, migrations are current and
/// nothing is shedding load.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (database, migrations) = match state.deps.store.migration_status().await {
        Ok(status) if status.is_current() => ("ok".to_owned(), "current".to_owned()),
        Ok(status) => (
            "ok".to_owned(),
            format!("pending {:?}, unknown {:?}", status.pending(), status.unknown()),
        ),
        Err(error) => (format!("unreachable: {error}"), "unknown".to_owned()),
    };
    let shedding = shedding(&state);
    let ready = database == "ok" && migrations == "current" && shedding.is_empty();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            database,
            migrations,
            shedding,
        }),
    )
        .into_response()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    /// "storefront" or "admin".
    pub scope: String,
    /// What the key is for, e.g. "web storefront".
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyCreated {
    pub id: String,
    pub scope: String,
    pub name: String,
    /// Shown once; only its hash is kept.
    pub key: String,
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "ops", request_body = ApiKeyIn,
    responses((status = 201, body = ApiKeyCreated), (status = 422, body = Problem)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<ApiKeyIn>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    let scope = Scope::parse(&json.body.scope)
        .ok_or_else(|| ApiError::field("invalid_request", "scope", "must be \"storefront\" or \"admin\""))?;
    let name = json.body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::field(
            "invalid_request",
            "name",
            "must be 1 to 200 characters",
        ));
    }
    let key = generate_key();
    let id = register_key(&state.deps.store, &key, scope, name).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            id: id.to_string(),
            scope: scope.as_str().to_owned(),
            name: name.to_owned(),
            key,
        }),
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(create_api_key))
}
