//! The inventory node's API (`holdfast serve --role inventory`): stock holds
//! that order nodes in `inventory.mode = "remote"` place and settle
//! (`providers/inventory.rs` is their client). A hold is keyed by the order
//! id and all or nothing; holding again with the same id returns it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{SubsecRound, Utc};
use holdfast_domain::{FieldError, OrderId, Quantity, Sku, ValidationErrors};
use holdfast_store::{Hold, HoldAction, NewHold, PlaceOrderError, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiJson;
use super::state::AppState;
use crate::providers::inventory::{HoldIn, HoldItem, HoldOut};

/// Most lines one hold may carry, as a cart.
const MAX_LINES: usize = 100;

/// Longest a hold may last: stock held longer is stock lost to the shop.
const MAX_HOLD_DAYS: i64 = 7;

impl From<Hold> for HoldOut {
    fn from(hold: Hold) -> Self {
        HoldOut {
            id: hold.id.to_string(),
            status: hold.status.as_str().to_owned(),
            items: hold
                .lines
                .iter()
                .map(|(sku, qty)| HoldItem {
                    sku: sku.to_string(),
                    qty: u64::from(qty.get()),
                })
                .collect(),
            expires_at: hold.expires_at,
            created_at: hold.created_at,
            updated_at: hold.updated_at,
        }
    }
}

fn parse_id(raw: &str, field: &str) -> Result<OrderId, FieldError> {
    OrderId::parse(raw).map_err(|e| FieldError::new(field, e.message))
}

impl HoldIn {
    fn parse(&self) -> Result<NewHold, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let id = errors.collect("id", parse_id(&self.id, ""));
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            errors.push(FieldError::new("items", format!("must hold 1 to {MAX_LINES} lines")));
        }
        let mut lines: Vec<(Sku, Quantity)> = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.iter().enumerate() {
            let sku = errors.collect(&format!("items[{i}].sku"), Sku::parse(&item.sku));
            let qty = errors.collect(
                &format!("items[{i}].qty"),
                Quantity::parse(i64::try_from(item.qty).unwrap_or(i64::MAX)),
            );
            if let (Some(sku), Some(qty)) = (sku, qty) {
                if lines.iter().any(|(seen, _)| seen == &sku) {
                    errors.push(FieldError::new(format!("items[{i}].sku"), "appears twice in the hold"));
                }
                lines.push((sku, qty));
            }
        }
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        // Storage keeps microseconds: `create_hold` compares this.
        let now = Utc::now().trunc_subsecs(6);
        if self.expires_at <= now || self.expires_at > now + chrono::Duration::days(MAX_HOLD_DAYS) {
            errors.push(FieldError::new(
                "expires_at",
                format!("must be in the future and at most {MAX_HOLD_DAYS} days away"),
            ));
        }
        match id {
            Some(id) if errors.is_empty() => Ok(NewHold {
                id,
                lines,
                expires_at: self.expires_at,
                now,
            }),
            _ => Err(errors),
        }
    }
}

/// Holds every line for an order, all or nothing.
#[utoipa::path(post, path = "/api/v1/inventory/holds", tag = "inventory", request_body = HoldIn,
    responses((status = 201, body = HoldOut, description = "held now"),
        (status = 200, body = HoldOut, description = "the hold this id already has"),
        (status = 409, body = Problem, description = "out_of_stock, or hold_conflict: the id holds other lines"),
        (status = 422, body = Problem)))]
pub async fn create_hold(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<HoldIn>,
) -> ApiResult<(StatusCode, Json<HoldOut>)> {
    let hold = json
        .body
        .parse()
        .map_err(|errors| ApiError::validation("invalid_hold", errors))?;
    match state.deps.store.holds().hold(&hold).await {
        Ok(held) => {
            // A repeated call answers 200 with the hold it already has.
            let status = if held.created_at == hold.now {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(held.into())))
        }
        Err(PlaceOrderError::Store(StoreError::Conflict(detail))) => Err(ApiError::conflict("hold_conflict", detail)),
        Err(error) => Err(error.into()),
    }
}

#[utoipa::path(get, path = "/api/v1/inventory/holds/{id}", tag = "inventory",
    params(("id" = String, Path, description = "the order id")),
    responses((status = 200, body = HoldOut), (status = 404, body = Problem)))]
pub async fn get_hold(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<HoldOut>> {
    let id = parse_id(&id, "id").map_err(|e| ApiError::field("invalid_id", "id", e.message))?;
    let hold = state.deps.store.holds().get(&id).await?;
    Ok(Json(hold.ok_or_else(|| ApiError::not_found("hold"))?.into()))
}

/// `commit` (the order was paid), `consume` (shipped) or `release` (the
/// order failed, was cancelled or rejected: the units are available again).
/// Repeating a change answers the hold as it is.
#[utoipa::path(post, path = "/api/v1/inventory/holds/{id}/{action}", tag = "inventory",
    params(("id" = String, Path, description = "the order id"), ("action" = String, Path, description = "commit, consume or release")),
    responses((status = 200, body = HoldOut), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "hold_conflict: e.g. committing a released hold")))]
pub async fn settle_hold(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<HoldOut>> {
    let id = parse_id(&id, "id").map_err(|e| ApiError::field("invalid_id", "id", e.message))?;
    let action = match action.as_str() {
        "commit" => HoldAction::Commit,
        "consume" => HoldAction::Consume,
        "release" => HoldAction::Release,
        _ => return Err(ApiError::not_found("route")),
    };
    match state.deps.store.holds().settle(&id, action, Utc::now()).await {
        Ok(hold) => Ok(Json(hold.into())),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found("hold")),
        Err(StoreError::Conflict(detail)) => Err(ApiError::conflict("hold_conflict", detail)),
        Err(error) => Err(error.into()),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_hold))
        .routes(routes!(get_hold))
        .routes(routes!(settle_hold))
}
