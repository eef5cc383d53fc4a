//! Customer search (admin).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiQuery;
use super::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Matched case-insensitively against name and email.
    pub q: String,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerOut {
    pub id: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    pub data: Vec<CustomerOut>,
}

#[utoipa::path(get, path = "/api/v1/customers/search", tag = "customers", params(SearchQuery),
    responses((status = 200, body = CustomerPage), (status = 422, body = Problem)))]
pub async fn search_customers(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> ApiResult<Json<CustomerPage>> {
    let q = query.q.trim();
    if q.is_empty() || q.chars().count() > 200 {
        return Err(ApiError::field("invalid_query", "q", "must be 1 to 200 characters"));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("invalid_query", "limit", "must be from 1 to 100"));
    }
    let customers = state.deps.store.search_customers(q, limit).await?;
    let data = customers
        .into_iter()
        .map(|c| CustomerOut {
            id: c.id,
            email: c.email,
            name: c.name,
            created_at: c.created_at,
        })
        .collect();
    Ok(Json(CustomerPage { data }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search_customers))
}
