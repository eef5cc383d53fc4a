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
}

/// Ready to take traffic: the database answers and migrations are current.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (database, migrations) = match state.store.migration_status().await {
        Ok(status) if status.is_current() => ("ok".to_owned(), "current".to_owned()),
        Ok(status) => (
            "ok".to_owned(),
            format!("pending {:?}, unknown {:?}", status.pending(), status.unknown()),
        ),
        Err(error) => (format!("unreachable: {error}"), "unknown".to_owned()),
    };
    let ready = database == "ok" && migrations == "current";
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
    let id = register_key(&state.store, &key, scope, name).await?;
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
