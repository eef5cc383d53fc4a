//! A remote inventory node (`inventory.mode = "remote"`): the HTTP client an
//! order node uses to hold, settle and read stock on a `holdfast serve
//! --role inventory` node (its API is `http/inventory.rs`).
//!
//! Every call carries what is left of the caller's deadline in the
//! `holdfast-deadline-ms` header, so the inventory node gives up when the
//! order node would, and holds are keyed by the order id, so a retried or
//! repeated call never holds stock twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, Quantity, Sku};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::payments::describe;
use crate::config::Secret;

/// The header that carries the caller's remaining budget, in milliseconds.
pub const DEADLINE_HEADER: &str = "holdfast-deadline-ms";

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldItem {
    pub sku: String,
    pub qty: u64,
}

/// `POST /api/v1/inventory/holds`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldIn {
    /// The order id: holding again with the same id returns the same hold.
    pub id: String,
    pub items: Vec<HoldItem>,
    /// When the inventory node releases the hold by itself.
    pub expires_at: DateTime<Utc>,
}

/// A hold as the inventory node answers it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldOut {
    pub id: String,
    /// `held`, `committed`, `consumed` or `released`.
    pub status: String,
    pub items: Vec<HoldItem>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Stock levels as `GET /api/v1/inventory/{sku}` answers them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LevelOut {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{sku}: {requested} requested, {available} available")]
    OutOfStock { sku: Sku, requested: u64, available: i64 },
    #[error("unknown SKU {0}")]
    UnknownSku(Sku),
    #[error("not found on the inventory node")]
    NotFound,
    /// The hold exists with other lines, or is past the asked-for change.
    #[error("inventory node refused: {0}")]
    Conflict(String),
    /// Timeout, connection failure, 429 or 5xx: retry with the same id.
    #[error("inventory node unavailable: {0}")]
    Unavailable(String),
    /// Any other refusal (a bad API key, a malformed call): retrying will
    /// not help.
    #[error("inventory node rejected the call: HTTP {status}: {detail}")]
    Rejected { status: u16, detail: String },
}

impl holdfast_resilience::Classify for InventoryError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The problem+json fields the client reads.
#[derive(Debug, Default, Deserialize)]
struct ProblemIn {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    stock: Option<StockIn>,
}

#[derive(Debug, Deserialize)]
struct StockIn {
    sku: String,
    requested: Option<u64>,
    available: Option<i64>,
}

pub struct RemoteInventory {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
    /// The longest any one call may take (`dependencies.inventory.deadline_ms`).
    deadline: Duration,
}

impl RemoteInventory {
    pub fn new(base_url: &str, api_key: Secret, deadline: Duration) -> Result<Self, reqwest::Error> {
        let http = super::http_client(deadline).build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            deadline,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Holds every line for `order_id`, all or nothing.
    pub async fn hold(
        &self,
        order_id: &OrderId,
        lines: &[(Sku, Quantity)],
        expires_at: DateTime<Utc>,
    ) -> Result<HoldOut, InventoryError> {
        let body = HoldIn {
            id: order_id.to_string(),
            items: lines
                .iter()
                .map(|(sku, qty)| HoldItem {
                    sku: sku.to_string(),
                    qty: u64::from(qty.get()),
                })
                .collect(),
            expires_at,
        };
        self.send(self.request(Method::POST, "/api/v1/inventory/holds").json(&body))
            .await
    }

    /// Commits, consumes or releases the hold of `order_id`
    /// (`action` is `commit`, `consume` or `release`).
    pub async fn settle(&self, order_id: &OrderId, action: &str) -> Result<HoldOut, InventoryError> {
        let path = format!("/api/v1/inventory/holds/{order_id}/{action}");
        self.send(self.request(Method::POST, &path)).await
    }

    pub async fn level(&self, sku: &Sku) -> Result<LevelOut, InventoryError> {
        let path = format!("/api/v1/inventory/{sku}");
        self.send(self.request(Method::GET, &path)).await
    }

    /// Forwards an admin call (product creation, a warehouse sync) as is and
    /// returns the node's status and JSON body.
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value), InventoryError> {
        let response = self
            .request(method, path)
            .json(body)
            .send()
            .await
            .map_err(|e| InventoryError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(InventoryError::Unavailable(format!("HTTP {status}")));
        }
        let body = response
            .json()
            .await
            .map_err(|e| InventoryError::Unavailable(format!("unreadable response: {}", describe(&e))))?;
        Ok((status, body))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let budget = holdfast_store::deadline::remaining().map_or(self.deadline, |left| left.min(self.deadline));
        self.http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(self.api_key.expose())
            .header(DEADLINE_HEADER, budget.as_millis().max(1).to_string())
            .timeout(budget)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, InventoryError> {
        let response = request
            .send()
            .await
            .map_err(|e| InventoryError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|e| InventoryError::Unavailable(format!("unreadable response: {}", describe(&e))));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(InventoryError::Unavailable(format!("HTTP {status}")));
        }
        let problem: ProblemIn = response.json().await.unwrap_or_default();
        Err(refusal(status, problem))
    }
}

/// A 4xx from the inventory node, as the order node acts on it.
fn refusal(status: StatusCode, problem: ProblemIn) -> InventoryError {
    let sku = problem.stock.as_ref().and_then(|stock| Sku::parse(&stock.sku).ok());
    match (status, problem.code.as_str(), sku) {
        (StatusCode::CONFLICT, "out_of_stock", Some(sku)) => {
            let stock = problem.stock.as_ref();
            InventoryError::OutOfStock {
                sku,
                requested: stock.and_then(|s| s.requested).unwrap_or(0),
                available: stock.and_then(|s| s.available).unwrap_or(0),
            }
        }
        (_, "unknown_sku", Some(sku)) => InventoryError::UnknownSku(sku),
        (StatusCode::NOT_FOUND, _, _) => InventoryError::NotFound,
        (StatusCode::CONFLICT, _, _) => InventoryError::Conflict(problem.detail),
        _ => InventoryError::Rejected {
            status: status.as_u16(),
            detail: format!("{}: {}", problem.code, problem.detail),
        },
    }
}
