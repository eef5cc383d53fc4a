//! The catalogue and stock: products, inventory levels, warehouse sync.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use holdfast_domain::{Currency, FieldError, Money, Sku, ValidationErrors};
use holdfast_resilience::CallOptions;
use holdfast_store::{InventoryBatch, NewProduct, Product, StoreError, SyncOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Storefront};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::ApiJson;
use super::state::AppState;
use super::types::MoneyIo;
use crate::pipeline::remote;

/// The most units one SKU may hold: keeps every stock sum far from overflow.
const MAX_ON_HAND: i64 = 1_000_000_000;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductIn {
    pub sku: String,
    pub name: String,
    pub price: MoneyIo,
    /// Initial stock, in units.
    pub on_hand: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductOut {
    pub sku: String,
    pub name: String,
    pub price: MoneyIo,
    pub created_at: DateTime<Utc>,
}

impl From<Product> for ProductOut {
    fn from(product: Product) -> Self {
        ProductOut {
            sku: product.sku.to_string(),
            name: product.name,
            price: MoneyIo {
                amount: product.price.amount(),
                currency: product.price.currency().code().to_owned(),
            },
            created_at: product.created_at,
        }
    }
}

fn on_hand(raw: i64) -> Result<u32, FieldError> {
    if (0..=MAX_ON_HAND).contains(&raw) {
        Ok(u32::try_from(raw).unwrap_or(0))
    } else {
        Err(FieldError::new(
            "",
            format!("must be an integer from 0 to {MAX_ON_HAND}"),
        ))
    }
}

fn parse_sku(raw: &str) -> ApiResult<Sku> {
    Sku::parse(raw).map_err(|e| ApiError::field("invalid_sku", "sku", e.message))
}

impl ProductIn {
    fn parse(&self) -> Result<NewProduct, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let sku = errors.collect("sku", Sku::parse(&self.sku));
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push(FieldError::new("name", "must be 1 to 200 characters"));
        }
        let currency = errors.collect("price.currency", Currency::parse(&self.price.currency));
        let price = currency.and_then(|c| errors.collect("price", Money::new(self.price.amount, c)));
        let on_hand = errors.collect("on_hand", on_hand(self.on_hand));
        match (sku, price, on_hand) {
            (Some(sku), Some(price), Some(on_hand)) if errors.is_empty() => Ok(NewProduct {
                sku,
                name: name.to_owned(),
                price,
                on_hand,
                created_at: Utc::now(),
            }),
            _ => Err(errors),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/products", tag = "catalogue", request_body = ProductIn,
    responses((status = 201, body = ProductOut), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<ProductIn>,
) -> ApiResult<(StatusCode, Json<ProductOut>)> {
    let mut product = json
        .body
        .parse()
        .map_err(|errors| ApiError::validation("invalid_product", errors))?;
    if state.deps.inventory.is_some() {
        // Stock lives on the inventory node: it gets the initial on-hand
        // first (an existing SKU there keeps its stock), and this node's own
        // stock rows stay at zero, unused.
        let (status, body) = forward(&state, Method::POST, "/api/v1/products", &json.body).await?;
        if !status.is_success() && status != StatusCode::CONFLICT {
            return Err(refused(status, &body));
        }
        product.on_hand = 0;
    }
    match state.deps.store.create_product(&product).await {
        Ok(created) => Ok((StatusCode::CREATED, Json(created.into()))),
        Err(StoreError::Conflict(_)) => Err(ApiError::conflict(
            "sku_exists",
            format!("a product with SKU {} already exists", product.sku),
        )),
        Err(other) => Err(other.into()),
    }
}

#[utoipa::path(get, path = "/api/v1/products/{sku}", tag = "catalogue",
    params(("sku" = String, Path)), responses((status = 200, body = ProductOut), (status = 404, body = Problem)))]
pub async fn get_product(
    State(state): State<AppState>,
    _auth: Storefront,
    Path(sku): Path<String>,
) -> ApiResult<Json<ProductOut>> {
    let sku = parse_sku(&sku)?;
    let product = state
        .deps
        .store
        .get_products(std::slice::from_ref(&sku))
        .await?
        .into_iter()
        .next();
    Ok(Json(product.ok_or_else(|| ApiError::not_found("product"))?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryOut {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[utoipa::path(get, path = "/api/v1/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path)), responses((status = 200, body = InventoryOut), (status = 404, body = Problem)))]
pub async fn get_inventory(
    State(state): State<AppState>,
    _auth: Storefront,
    Path(sku): Path<String>,
) -> ApiResult<Json<InventoryOut>> {
    let sku = parse_sku(&sku)?;
    if state.deps.inventory.is_some() {
        let level = remote::level(&state.deps, &sku).await?;
        return Ok(Json(InventoryOut {
            sku: level.sku,
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: level.available,
        }));
    }
    let level = state
        .deps
        .store
        .get_inventory(&sku)
        .await?
        .ok_or_else(|| ApiError::not_found("product"))?;
    Ok(Json(InventoryOut {
        sku: sku.to_string(),
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available,
    }))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncLevelIn {
    pub sku: String,
    pub on_hand: i64,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncIn {
    /// The warehouse feed's batch id; a batch is applied once.
    pub batch_id: String,
    pub levels: Vec<SyncLevelIn>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncOut {
    pub batch_id: String,
    pub updated: Vec<String>,
    pub unknown: Vec<String>,
    /// True when the batch had been applied before; nothing changed now.
    pub replayed: bool,
}

impl From<SyncOutcome> for SyncOut {
    fn from(o: SyncOutcome) -> Self {
        SyncOut {
            batch_id: o.batch_id,
            updated: o.updated,
            unknown: o.unknown,
            replayed: o.replayed,
        }
    }
}

/// Bulk-set on-hand levels from a warehouse feed; idempotent per `batch_id`.
#[utoipa::path(post, path = "/api/v1/inventory/sync", tag = "inventory", request_body = SyncIn,
    responses((status = 200, body = SyncOut), (status = 422, body = Problem)))]
pub async fn sync_inventory(
    State(state): State<AppState>,
    _admin: Admin,
    json: ApiJson<SyncIn>,
) -> ApiResult<Json<SyncOut>> {
    let input = &json.body;
    let mut errors = ValidationErrors::default();
    let batch_id = input.batch_id.trim();
    if batch_id.is_empty() || batch_id.len() > 255 {
        errors.push(FieldError::new("batch_id", "must be 1 to 255 characters"));
    }
    if input.levels.is_empty() || input.levels.len() > 10_000 {
        errors.push(FieldError::new("levels", "must hold 1 to 10000 entries"));
    }
    let mut levels = Vec::with_capacity(input.levels.len());
    for (i, level) in input.levels.iter().enumerate() {
        let sku = errors.collect(&format!("levels[{i}].sku"), Sku::parse(&level.sku));
        let units = errors.collect(&format!("levels[{i}].on_hand"), on_hand(level.on_hand));
        if let (Some(sku), Some(units)) = (sku, units) {
            if levels.iter().any(|(seen, _)| seen == &sku) {
                errors.push(FieldError::new(
                    format!("levels[{i}].sku"),
                    "appears twice in the batch",
                ));
            }
            levels.push((sku, units));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation("invalid_sync", errors));
    }
    if state.deps.inventory.is_some() {
        let (status, body) = forward(&state, Method::POST, "/api/v1/inventory/sync", input).await?;
        if !status.is_success() {
            return Err(refused(status, &body));
        }
        let outcome = serde_json::from_value(body)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("the inventory node's sync answer: {e}")))?;
        return Ok(Json(outcome));
    }
    let batch = InventoryBatch {
        batch_id: batch_id.to_owned(),
        levels,
        received_at: Utc::now(),
    };
    Ok(Json(state.deps.store.sync_inventory(&batch).await?.into()))
}

/// Sends an admin call on to the inventory node (`inventory.mode =
/// "remote"`) under the inventory policy; its answer comes back as is.
async fn forward(
    state: &AppState,
    method: Method,
    path: &str,
    body: &impl Serialize,
) -> ApiResult<(StatusCode, serde_json::Value)> {
    let inventory = state
        .deps
        .inventory
        .as_deref()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("inventory.mode is not \"remote\"")))?;
    let body = serde_json::to_value(body).map_err(ApiError::internal)?;
    let options = CallOptions::non_idempotent().with_deadline(crate::deadline::request_deadline());
    state
        .deps
        .dependencies
        .inventory
        .call(options, || inventory.forward(method.clone(), path, &body))
        .await
        .map_err(|error| ApiError::dependency("inventory", "the inventory node", error))
}

/// The inventory node refused a forwarded call: the same status, its detail
/// and field errors.
fn refused(status: StatusCode, body: &serde_json::Value) -> ApiError {
    let text = |key: &str| body.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let mut error = ApiError::new(
        status,
        "inventory_refused",
        format!("the inventory node refused: {}: {}", text("code"), text("detail")),
    );
    if let Some(fields) = body.get("errors").and_then(|v| v.as_array()) {
        error.errors = fields
            .iter()
            .map(|f| {
                let get = |key: &str| f.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                FieldError::new(get("field"), get("message"))
            })
            .collect();
    }
    error
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product))
        .routes(routes!(get_product))
        .routes(routes!(get_inventory))
        .routes(routes!(sync_inventory))
}
