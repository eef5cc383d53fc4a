//! The operational event journal for operators (admin): what happened to
//! the service and when (breaker transitions, …), oldest first, for an
//! incident timeline.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use holdfast_domain::{FieldError, ValidationErrors};
use holdfast_store::{JournalEntry, JournalQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiQuery;
use super::state::AppState;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;

/// The raw parameters, parsed in the handler so a bad one is named.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JournalParams {
    /// RFC 3339 (`2025-01-31T14:00:00Z`); entries at or after it.
    pub since: Option<String>,
    /// RFC 3339; entries before it.
    pub until: Option<String>,
    /// Only entries of this kind: `breaker`, `journal`.
    pub kind: Option<String>,
    /// 1 to 1,000, default 100; the oldest entries in the range come first.
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JournalEntryOut {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// What it is about, e.g. the dependency `payments`.
    pub subject: String,
    /// One human line: "payments breaker closed → open: failure rate 0.62 over 21 calls".
    pub summary: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The process that saw it: hostname:pid or its listen address.
    pub node: String,
}

impl From<JournalEntry> for JournalEntryOut {
    fn from(entry: JournalEntry) -> Self {
        Self {
            seq: entry.seq,
            at: entry.at,
            kind: entry.kind,
            subject: entry.subject,
            summary: entry.summary,
            detail: entry.detail,
            node: entry.node,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JournalOut {
    pub entries: Vec<JournalEntryOut>,
}

#[utoipa::path(get, path = "/api/v1/ops/journal", tag = "ops", params(JournalParams),
    responses((status = 200, body = JournalOut), (status = 422, body = Problem)))]
pub async fn list_journal(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(params): ApiQuery<JournalParams>,
) -> ApiResult<Json<JournalOut>> {
    let query = parse_query(params)?;
    let entries = state.deps.store.journal().list(&query).await?;
    Ok(Json(JournalOut {
        entries: entries.into_iter().map(JournalEntryOut::from).collect(),
    }))
}

fn parse_query(params: JournalParams) -> ApiResult<JournalQuery> {
    let mut errors = ValidationErrors::default();
    let mut time = |name: &str, raw: Option<String>| {
        let raw = raw?;
        errors.collect(
            name,
            DateTime::parse_from_rfc3339(&raw)
                .map(|at| at.with_timezone(&Utc))
                .map_err(|_| FieldError::new("", "must be an RFC 3339 time, e.g. 2025-01-31T14:00:00Z")),
        )
    };
    let since = time("since", params.since);
    let until = time("until", params.until);
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        errors.push(FieldError::new("until", "must be after since"));
    }
    let kind = params.kind.and_then(|raw| {
        let valid = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            errors.push(FieldError::new(
                "kind",
                "must be 1 to 64 lowercase letters, digits or underscores",
            ));
        }
        valid.then_some(raw)
    });
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(FieldError::new("limit", "must be a whole number from 1 to 1000"));
                DEFAULT_LIMIT
            }
        },
    };
    if !errors.is_empty() {
        // 422 with the parameter named in `errors[].field`, as the other
        // list endpoints answer a bad query parameter.
        return Err(ApiError::validation("invalid_query", errors));
    }
    Ok(JournalQuery {
        since,
        until,
        kind,
        limit,
    })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_journal))
}
