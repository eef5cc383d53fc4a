//! Test clocks (admin; only with `subscriptions.test_clocks = true`): a
//! frozen time that subscriptions created on it live on, advanced by the
//! test. Advancing drives the real scheduler, dunning retries, queue and
//! outbox; the clock is `advancing` until the work its time made due has
//! settled, then `ready`, as Stripe's are.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use holdfast_domain::TestClockId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::Admin;
use crate::http::error::{ApiError, ApiResult, Problem};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;
use crate::pipeline::subscriptions::{self as steps, ClockState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockIn {
    /// The clock's time (RFC 3339).
    pub frozen_time: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClockOut {
    pub id: String,
    pub frozen_time: DateTime<Utc>,
    /// "advancing" while renewals or retries its time made due are still
    /// being charged, then "ready".
    pub status: &'static str,
    /// Periods due on the clock that are not settled yet.
    pub due_periods: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ClockState> for ClockOut {
    fn from(state: ClockState) -> Self {
        Self {
            id: state.clock.id.to_string(),
            frozen_time: state.clock.frozen_time,
            status: if state.advancing { "advancing" } else { "ready" },
            due_periods: state.clock.due_periods,
            created_at: state.clock.created_at,
            updated_at: state.clock.updated_at,
        }
    }
}

/// 404 unless test clocks are on: the routes do not exist in production.
fn enabled(state: &AppState) -> ApiResult<()> {
    if state.deps.config.subscriptions.test_clocks {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "test_clocks_disabled",
            "test clocks are off on this service (subscriptions.test_clocks = false)",
        ))
    }
}

#[utoipa::path(post, path = "/api/v1/test-clocks", tag = "subscriptions", request_body = ClockIn,
    responses((status = 201, body = ClockOut), (status = 404, body = Problem, description = "test_clocks_disabled")))]
pub async fn create_clock(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<ClockIn>,
) -> ApiResult<(StatusCode, Json<ClockOut>)> {
    enabled(&state)?;
    let id = TestClockId::generate();
    state
        .deps
        .store
        .subscriptions()
        .create_test_clock(&id, json.body.frozen_time, Utc::now())
        .await?;
    let clock = steps::clock_state(&state.deps, &id).await?;
    Ok((StatusCode::CREATED, Json(clock.into())))
}

#[utoipa::path(get, path = "/api/v1/test-clocks/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "clock_…")),
    responses((status = 200, body = ClockOut), (status = 404, body = Problem)))]
pub async fn get_clock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<ClockOut>> {
    enabled(&state)?;
    let id = parse_id(&id)?;
    Ok(Json(steps::clock_state(&state.deps, &id).await?.into()))
}

/// Moves the clock forward to `frozen_time`; a clock never goes back.
#[utoipa::path(post, path = "/api/v1/test-clocks/{id}/advance", tag = "subscriptions", request_body = ClockIn,
    params(("id" = String, Path, description = "clock_…")),
    responses((status = 200, body = ClockOut), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "conflict: the time is before the clock's")))]
pub async fn advance_clock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    json: ApiJson<ClockIn>,
) -> ApiResult<Json<ClockOut>> {
    enabled(&state)?;
    let id = parse_id(&id)?;
    let clock = steps::advance_clock(&state.deps, &id, json.body.frozen_time, Utc::now()).await?;
    Ok(Json(clock.into()))
}

fn parse_id(raw: &str) -> ApiResult<TestClockId> {
    TestClockId::parse(raw).map_err(|_| ApiError::not_found("test clock"))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_clock))
        .routes(routes!(get_clock))
        .routes(routes!(advance_clock))
}
