//! The durable queues for operators (admin): depth per queue, outbox lag,
//! dead letters and their redrive. `holdfast queue …` does the same from a
//! shell.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use holdfast_store::{Job, JobId, OutboxLag, QueueStats, Redrive};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{ApiJson, ApiQuery};
use super::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuesOut {
    #[schema(value_type = Vec<Object>)]
    pub queues: Vec<QueueStats>,
    #[schema(value_type = Object)]
    pub outbox: OutboxLag,
}

#[utoipa::path(get, path = "/api/v1/ops/queues", tag = "ops", responses((status = 200, body = QueuesOut)))]
pub async fn list_queues(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<QueuesOut>> {
    let now = Utc::now();
    Ok(Json(QueuesOut {
        queues: state.deps.store.queue().stats(now).await?,
        outbox: state.deps.store.outbox().lag(now).await?,
    }))
}

/// A dead-lettered job as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterOut {
    pub id: String,
    pub queue: String,
    pub group_key: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub receive_count: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub dead_since: DateTime<Utc>,
}

impl From<Job> for DeadLetterOut {
    fn from(job: Job) -> Self {
        Self {
            id: job.id.to_string(),
            queue: job.queue,
            group_key: job.group_key,
            payload: job.payload,
            receive_count: job.receive_count,
            last_error: job.last_error,
            created_at: job.created_at,
            dead_since: job.visible_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetterOut>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// 1 to 500, default 50.
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/ops/queues/{queue}/dead-letters", tag = "ops",
    params(("queue" = String, Path, description = "fulfillment, webhooks, events, …"), DeadLetterQuery),
    responses((status = 200, body = DeadLetterList), (status = 400, body = Problem)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    _admin: Admin,
    Path(queue): Path<String>,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("invalid_query", "limit", "must be between 1 and 500"));
    }
    let jobs = state.deps.store.queue().dead_letters(&queue, limit).await?;
    Ok(Json(DeadLetterList {
        data: jobs.into_iter().map(DeadLetterOut::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveIn {
    /// The dead letters to return to the queue; all of the queue's when absent.
    pub job_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveOut {
    pub redriven: u64,
}

/// Returns dead letters to their queue with a fresh receive count; each
/// keeps its place in its group's order.
#[utoipa::path(post, path = "/api/v1/ops/queues/{queue}/redrive", tag = "ops", request_body = RedriveIn,
    params(("queue" = String, Path, description = "fulfillment, webhooks, events, …")),
    responses((status = 200, body = RedriveOut), (status = 422, body = Problem)))]
pub async fn redrive(
    State(state): State<AppState>,
    _admin: Admin,
    Path(queue): Path<String>,
    json: ApiJson<RedriveIn>,
) -> ApiResult<Json<RedriveOut>> {
    let which = match json.body.job_ids {
        None => Redrive::All,
        Some(ids) => Redrive::Jobs(
            ids.iter()
                .enumerate()
                .map(|(index, raw)| {
                    JobId::parse(raw).ok_or_else(|| {
                        ApiError::field(
                            "invalid_request",
                            &format!("job_ids[{index}]"),
                            "must be job_<32 hex digits>",
                        )
                    })
                })
                .collect::<ApiResult<_>>()?,
        ),
    };
    let redriven = state.deps.store.queue().redrive(&queue, &which, Utc::now()).await?;
    Ok(Json(RedriveOut { redriven }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(dead_letters))
        .routes(routes!(redrive))
}
