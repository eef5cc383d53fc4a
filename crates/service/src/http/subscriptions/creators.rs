//! Creators (admin): create one, read it, and list its settlement batches.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use holdfast_domain::{CreatorId, FeeBps, SettlementSchedule, ValidationErrors};
use holdfast_store::{Creator, NewCreator, SettlementBatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::money_out;
use crate::http::auth::Admin;
use crate::http::error::{ApiError, ApiResult, Problem};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;
use crate::http::types::MoneyIo;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatorIn {
    pub name: String,
    /// The platform's fee in basis points of each charge, 0 to 10000; 0 when absent.
    pub fee_bps: Option<i64>,
    /// When the creator is paid out; daily, two days after each day, when absent.
    pub settlement: Option<SettlementIo>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementIo {
    /// "daily", "weekly" (ISO weeks) or "monthly", in UTC.
    pub interval: String,
    /// Days after a window closes that its batch is made, 0 to 90.
    pub delay_days: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatorOut {
    pub id: String,
    pub name: String,
    pub fee_bps: u16,
    pub settlement: SettlementIo,
    pub created_at: DateTime<Utc>,
}

impl From<Creator> for CreatorOut {
    fn from(creator: Creator) -> Self {
        Self {
            id: creator.id.to_string(),
            name: creator.name,
            fee_bps: creator.fee_bps.get(),
            settlement: SettlementIo {
                interval: creator.settlement.interval.as_str().to_owned(),
                delay_days: i64::from(creator.settlement.delay_days),
            },
            created_at: creator.created_at,
        }
    }
}

impl CreatorIn {
    fn parse(&self, now: DateTime<Utc>) -> Result<NewCreator, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = super::parse_name(&mut errors, &self.name);
        let fee_bps = errors.collect("fee_bps", FeeBps::parse(self.fee_bps.unwrap_or(0)));
        let settlement = match &self.settlement {
            None => Some(SettlementSchedule::default()),
            Some(io) => match SettlementSchedule::parse(&io.interval, io.delay_days) {
                Ok(schedule) => Some(schedule),
                Err(invalid) => {
                    errors.0.extend(invalid.0.into_iter().map(|e| e.under("settlement")));
                    None
                }
            },
        };
        match (name, fee_bps, settlement) {
            (Some(name), Some(fee_bps), Some(settlement)) if errors.is_empty() => Ok(NewCreator {
                id: CreatorId::generate(),
                name,
                fee_bps,
                settlement,
                created_at: now,
            }),
            _ => Err(errors),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/creators", tag = "subscriptions", request_body = CreatorIn,
    responses((status = 201, body = CreatorOut), (status = 422, body = Problem, description = "invalid_creator")))]
pub async fn create_creator(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<CreatorIn>,
) -> ApiResult<(StatusCode, Json<CreatorOut>)> {
    let creator = json
        .body
        .parse(Utc::now())
        .map_err(|errors| ApiError::validation("invalid_creator", errors))?;
    let created = state.deps.store.subscriptions().create_creator(&creator).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[utoipa::path(get, path = "/api/v1/creators/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "cr_…")),
    responses((status = 200, body = CreatorOut), (status = 404, body = Problem)))]
pub async fn get_creator(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<CreatorOut>> {
    Ok(Json(find_creator(&state, &id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementOut {
    pub id: String,
    pub creator_id: String,
    /// The charges made in `[window_start, window_end)`.
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub charges: u32,
    pub gross: MoneyIo,
    pub fee: MoneyIo,
    pub net: MoneyIo,
    pub created_at: DateTime<Utc>,
}

impl From<SettlementBatch> for SettlementOut {
    fn from(batch: SettlementBatch) -> Self {
        Self {
            id: batch.id.to_string(),
            creator_id: batch.creator_id.to_string(),
            window_start: batch.window.start,
            window_end: batch.window.end,
            charges: batch.charges,
            gross: money_out(batch.totals.gross),
            fee: money_out(batch.totals.fee),
            net: money_out(batch.totals.net),
            created_at: batch.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementList {
    pub data: Vec<SettlementOut>,
}

/// The creator's settlement batches, newest window first.
#[utoipa::path(get, path = "/api/v1/creators/{id}/settlements", tag = "subscriptions",
    params(("id" = String, Path, description = "cr_…")),
    responses((status = 200, body = SettlementList), (status = 404, body = Problem)))]
pub async fn list_settlements(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<SettlementList>> {
    let creator = find_creator(&state, &id).await?;
    let batches = state.deps.store.subscriptions().settlements(&creator.id).await?;
    Ok(Json(SettlementList {
        data: batches.into_iter().map(SettlementOut::from).collect(),
    }))
}

async fn find_creator(state: &AppState, raw: &str) -> ApiResult<Creator> {
    let id = CreatorId::parse(raw).map_err(|_| ApiError::not_found("creator"))?;
    state
        .deps
        .store
        .subscriptions()
        .creator(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("creator"))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_creator))
        .routes(routes!(get_creator))
        .routes(routes!(list_settlements))
}
