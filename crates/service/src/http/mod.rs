//! The HTTP API: one module per resource, each ending with its `router()`,
//! assembled here with the cross-cutting layers (body limit, deadline,
//! request ids, tracing, panic safety) and the OpenAPI document.

pub mod auth;
pub mod breakers;
pub mod catalogue;
pub mod customers;
pub mod error;
pub mod extract;
pub mod inventory;
pub mod journal;
pub mod keys;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod queues;
pub mod state;
pub mod subscriptions;
pub mod types;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use error::ApiError;
use state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Holdfast", description = "Order and checkout service that keeps working, or fails fast and honestly."),
    modifiers(&BearerAuth),
    security(("api_key" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API routes and their OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(orders::router())
        .merge(catalogue::router())
        .merge(customers::router())
        .merge(payments::router())
        .merge(ops::router())
        .merge(queues::router())
        .merge(breakers::router())
        .merge(journal::router())
        .merge(webhooks::router())
        .merge(inventory::router())
        .merge(subscriptions::router())
        .split_for_parts()
}

/// An inventory node's routes (`serve --role inventory`): the catalogue,
/// stock levels and holds, and the operators' endpoints.
pub fn inventory_api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(catalogue::router())
        .merge(inventory::router())
        .merge(ops::router())
        .merge(breakers::router())
        .split_for_parts()
}

/// A worker node's routes (`serve --role workers`): health, metrics and the
/// operators' endpoints, no storefront API.
pub fn workers_api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::router())
        .merge(queues::router())
        .merge(breakers::router())
        .merge(journal::router())
        .split_for_parts()
}

/// The whole API (roles `all` and `api`).
pub fn router(state: AppState) -> Router {
    assemble(api(), state)
}

/// A worker node's API (role `workers`).
pub fn workers_router(state: AppState) -> Router {
    assemble(workers_api(), state)
}

/// The inventory node's API (role `inventory`).
pub fn inventory_router(state: AppState) -> Router {
    assemble(inventory_api(), state)
}

fn assemble((api, openapi): (Router<AppState>, utoipa::openapi::OpenApi), state: AppState) -> Router {
    let spec = openapi.to_pretty_json().unwrap_or_default();
    let max_body = state.deps.config.server.max_body_bytes;
    let request_id = HeaderName::from_static("x-request-id");
    api.route(
        "/api/v1/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], spec) }),
    )
    .route(
        "/metrics",
        get(|State(state): State<AppState>| async move {
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                crate::telemetry::render(&state.deps.store, &state.deps.registry),
            )
        }),
    )
    .fallback(|| async { ApiError::not_found("route") })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    })
    .layer(middleware::from_fn(crate::telemetry::track))
    .layer(DefaultBodyLimit::max(max_body))
    .layer(middleware::from_fn_with_state(state.clone(), deadline))
    .layer(CatchPanicLayer::custom(|_| {
        ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
    }))
    .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
        let id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
    }))
    .layer(PropagateRequestIdLayer::new(request_id.clone()))
    .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
    .with_state(state)
}

/// Kept back from a request's steps for answering after one runs out of time.
const WRAP_UP: Duration = Duration::from_millis(100);

/// One deadline for the whole request: past it the client gets 503 at once
/// instead of waiting on whatever is slow. Another Holdfast node calling
/// this one sends what is left of its own request's budget
/// (`holdfast-deadline-ms`), and the shorter of the two applies.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let configured = Duration::from_millis(state.deps.config.server.request_deadline_ms);
    let budget = request
        .headers()
        .get(crate::providers::inventory::DEADLINE_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(configured, |ms| configured.min(Duration::from_millis(ms)));
    let until = tokio::time::Instant::now() + budget;
    // The steps inside see a deadline a little earlier than the response's,
    // so a step that runs out of time still has a moment to answer for it
    // (take the order for later, give reserved stock back) before the
    // request as a whole is cut off.
    let wrap_up = (budget / 10).min(WRAP_UP);
    match crate::deadline::scope(until - wrap_up, tokio::time::timeout_at(until, next.run(request))).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(
            "deadline_exceeded",
            format!(
                "the request did not finish within its {} ms deadline",
                budget.as_millis()
            ),
            1,
        )
        .into_response(),
    }
}
