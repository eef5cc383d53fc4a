//! Plans (admin): create one, read it, and change its price, which adds a
//! price version that new subscriptions get while existing ones keep theirs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use holdfast_domain::subscription::MAX_TRIAL_DAYS;
use holdfast_domain::{CreatorId, DunningExhausted, FieldError, PlanId, PlanInterval, ValidationErrors};
use holdfast_store::{NewPlan, Plan, PlanPrice};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{money_out, parse_money};
use crate::http::auth::Admin;
use crate::http::error::{ApiError, ApiResult, Problem};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;
use crate::http::types::MoneyIo;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanIn {
    pub creator_id: String,
    pub name: String,
    pub price: MoneyIo,
    /// "day", "week", "month" or "year".
    pub interval: String,
    /// How many intervals one period lasts (up to three years in all).
    pub interval_count: i64,
    /// A free trial before the first charge, 0 to 730 days; none when absent.
    pub trial_days: Option<i64>,
    /// What happens when dunning and the grace period end unpaid:
    /// "canceled" (the default) or "unpaid".
    pub on_dunning_exhausted: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanOut {
    pub id: String,
    pub creator_id: String,
    pub name: String,
    /// The current price: what new subscriptions pay.
    pub price: MoneyIo,
    pub price_version: u32,
    pub interval: &'static str,
    pub interval_count: u32,
    pub trial_days: u32,
    pub on_dunning_exhausted: &'static str,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Plan> for PlanOut {
    fn from(plan: Plan) -> Self {
        Self {
            id: plan.id.to_string(),
            creator_id: plan.creator_id.to_string(),
            name: plan.name,
            price: money_out(plan.price),
            price_version: plan.price_version,
            interval: plan.interval.unit().as_str(),
            interval_count: plan.interval.count(),
            trial_days: plan.trial_days,
            on_dunning_exhausted: plan.on_dunning_exhausted.as_str(),
            created_at: plan.created_at,
            updated_at: plan.updated_at,
        }
    }
}

impl PlanIn {
    fn parse(&self, now: DateTime<Utc>) -> Result<NewPlan, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let creator_id = errors.collect("creator_id", CreatorId::parse(&self.creator_id));
        let name = super::parse_name(&mut errors, &self.name);
        let price = parse_money(&mut errors, "price", &self.price);
        let interval = match PlanInterval::parse(&self.interval, self.interval_count) {
            Ok(interval) => Some(interval),
            Err(invalid) => {
                errors.0.extend(invalid.0);
                None
            }
        };
        let trial_days = match u32::try_from(self.trial_days.unwrap_or(0)) {
            Ok(days) if days <= MAX_TRIAL_DAYS => Some(days),
            _ => {
                errors.push(FieldError::new(
                    "trial_days",
                    format!("must be an integer from 0 to {MAX_TRIAL_DAYS}"),
                ));
                None
            }
        };
        let exhausted = errors.collect(
            "on_dunning_exhausted",
            DunningExhausted::parse(self.on_dunning_exhausted.as_deref().unwrap_or("canceled")),
        );
        match (creator_id, name, price, interval, trial_days, exhausted) {
            (Some(creator_id), Some(name), Some(price), Some(interval), Some(trial_days), Some(exhausted))
                if errors.is_empty() =>
            {
                Ok(NewPlan {
                    id: PlanId::generate(),
                    creator_id,
                    name,
                    price,
                    interval,
                    trial_days,
                    on_dunning_exhausted: exhausted,
                    created_at: now,
                })
            }
            _ => Err(errors),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/plans", tag = "subscriptions", request_body = PlanIn,
    responses(
        (status = 201, body = PlanOut),
        (status = 404, body = Problem, description = "the creator does not exist"),
        (status = 422, body = Problem, description = "invalid_plan"),
    ))]
pub async fn create_plan(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<PlanIn>,
) -> ApiResult<(StatusCode, Json<PlanOut>)> {
    let plan = json
        .body
        .parse(Utc::now())
        .map_err(|errors| ApiError::validation("invalid_plan", errors))?;
    let created = state.deps.store.subscriptions().create_plan(&plan).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[utoipa::path(get, path = "/api/v1/plans/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "plan_…")),
    responses((status = 200, body = PlanOut), (status = 404, body = Problem)))]
pub async fn get_plan(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<PlanOut>> {
    let id = parse_plan_id(&id)?;
    let plan = state
        .deps
        .store
        .subscriptions()
        .plan(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("plan"))?;
    Ok(Json(plan.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceIn {
    /// In the plan's currency or another; existing subscribers keep theirs.
    pub price: MoneyIo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceOut {
    pub version: u32,
    pub price: MoneyIo,
    pub created_at: DateTime<Utc>,
}

impl From<PlanPrice> for PriceOut {
    fn from(price: PlanPrice) -> Self {
        Self {
            version: price.version,
            price: money_out(price.price),
            created_at: price.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceList {
    pub data: Vec<PriceOut>,
}

/// Changes the plan's price: a new version for new subscriptions.
#[utoipa::path(post, path = "/api/v1/plans/{id}/prices", tag = "subscriptions", request_body = PriceIn,
    params(("id" = String, Path, description = "plan_…")),
    responses((status = 201, body = PlanOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn change_price(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    json: ApiJson<PriceIn>,
) -> ApiResult<(StatusCode, Json<PlanOut>)> {
    let id = parse_plan_id(&id)?;
    let mut errors = ValidationErrors::default();
    let price = parse_money(&mut errors, "price", &json.body.price)
        .ok_or_else(|| ApiError::validation("invalid_price", errors))?;
    let plan = state
        .deps
        .store
        .subscriptions()
        .change_price(&id, price, Utc::now())
        .await?;
    Ok((StatusCode::CREATED, Json(plan.into())))
}

/// Every version of the plan's price, oldest first.
#[utoipa::path(get, path = "/api/v1/plans/{id}/prices", tag = "subscriptions",
    params(("id" = String, Path, description = "plan_…")),
    responses((status = 200, body = PriceList), (status = 404, body = Problem)))]
pub async fn list_prices(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<PriceList>> {
    let id = parse_plan_id(&id)?;
    let prices = state.deps.store.subscriptions().plan_prices(&id).await?;
    if prices.is_empty() {
        return Err(ApiError::not_found("plan"));
    }
    Ok(Json(PriceList {
        data: prices.into_iter().map(PriceOut::from).collect(),
    }))
}

fn parse_plan_id(raw: &str) -> ApiResult<PlanId> {
    PlanId::parse(raw).map_err(|_| ApiError::not_found("plan"))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_plan))
        .routes(routes!(get_plan))
        .routes(routes!(change_price, list_prices))
}
