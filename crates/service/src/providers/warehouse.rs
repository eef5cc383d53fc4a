//! The warehouse: creates a shipment for a paid order and returns its
//! tracking id. One HTTP adapter speaks the sandbox warehouse's API
//! (`POST /v1/shipments` with bearer auth and `Idempotency-Key`), which a
//! real warehouse integration exposes the same way.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::payments::describe;
use crate::config::Secret;

#[async_trait]
pub trait Warehouse: Send + Sync + 'static {
    /// Creates (or, for the same idempotency key, returns again) the
    /// shipment of `request.order_id`.
    async fn create_shipment(&self, request: &ShipmentRequest) -> Result<ShipmentRef, WarehouseError>;
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ShipmentRequest {
    pub order_id: String,
    pub items: Vec<ShipmentItem>,
    pub address: serde_json::Map<String, serde_json::Value>,
    /// The order id: a retried job never ships an order twice.
    #[serde(skip)]
    pub idempotency_key: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ShipmentItem {
    pub sku: String,
    pub qty: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShipmentRef {
    pub id: String,
    pub tracking_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// Timeout, connection failure, 429 or 5xx: retry with the same key.
    #[error("warehouse unavailable: {0}")]
    Unavailable(String),
    /// The warehouse refused the shipment (4xx): retrying will not help.
    #[error("warehouse rejected the shipment: HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
}

impl holdfast_resilience::Classify for WarehouseError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub struct HttpWarehouse {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
}

impl HttpWarehouse {
    pub fn new(base_url: &str, api_key: Secret, deadline: Duration) -> Result<Self, reqwest::Error> {
        let http = super::http_client(deadline).build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
        })
    }
}

#[async_trait]
impl Warehouse for HttpWarehouse {
    async fn create_shipment(&self, request: &ShipmentRequest) -> Result<ShipmentRef, WarehouseError> {
        let response = self
            .http
            .post(format!("{}/v1/shipments", self.base_url))
            .bearer_auth(self.api_key.expose())
            .header("Idempotency-Key", &request.idempotency_key)
            .json(request)
            .send()
            .await
            .map_err(|e| WarehouseError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(WarehouseError::Unavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(WarehouseError::Rejected {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        response
            .json()
            .await
            .map_err(|e| WarehouseError::Unavailable(format!("unreadable response: {}", describe(&e))))
    }
}
