//! A sandbox warehouse: creates shipments with tracking ids over HTTP, with the same
//! idempotency keys, fault injection and error envelope as the payments sandbox.
//!
//! A call runs to completion even when its client hangs up, as on a real warehouse:
//! a client that dies mid-call cannot know whether its shipment exists, which is the
//! case its idempotency key is for and the one crash tests must be able to reproduce.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::error::{ApiError, json_response};
use crate::gate::{AuthRule, Gate, gate, run_to_completion};
use crate::idempotency::{Executed, IdempotencyStore, idempotency_key};
use crate::ids::{new_id, unix_now};

/// Fault settings of the sandbox warehouse; the default is a well-behaved warehouse.
#[derive(Debug, Clone, Default)]
pub struct WarehouseConfig {
    /// Fraction of API calls (0..=1) answered `500 api_error` before doing anything.
    pub failure_rate: f64,
    /// Added to every API call before it is answered.
    pub latency: Duration,
}

/// Counters since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WarehouseStats {
    pub api_calls: u64,
    pub injected_failures: u64,
    /// Shipments created (idempotent replays not counted).
    pub shipments_created: u64,
}

/// One line of a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentItem {
    pub sku: String,
    pub qty: u32,
}

/// A shipment as it goes over the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    pub id: String,
    pub order_id: String,
    pub tracking_id: String,
    pub status: String,
    pub items: Vec<ShipmentItem>,
    pub address: Map<String, Value>,
    pub created: i64,
}

#[derive(Deserialize)]
struct ShipmentIn {
    order_id: String,
    items: Vec<ShipmentItem>,
    address: Map<String, Value>,
}

struct Inner {
    gate: Arc<Gate>,
    idempotency: IdempotencyStore,
    // A std `Mutex`: critical sections are single map operations with no `.await`.
    shipments: Mutex<HashMap<String, Shipment>>,
    shipments_created: AtomicU64,
}

impl Inner {
    fn shipments_lock(&self) -> MutexGuard<'_, HashMap<String, Shipment>> {
        self.shipments.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sandbox warehouse. Clones share one state.
#[derive(Clone)]
pub struct SandboxWarehouse {
    inner: Arc<Inner>,
}

impl SandboxWarehouse {
    pub fn new(config: WarehouseConfig) -> Self {
        let inner = Inner {
            gate: Arc::new(Gate::new(AuthRule::AnyBearer, config.failure_rate, config.latency)),
            idempotency: IdempotencyStore::default(),
            shipments: Mutex::new(HashMap::new()),
            shipments_created: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The HTTP API (`/v1/shipments…`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/shipments", post(create_shipment))
            .route("/v1/shipments/{id}", get(get_shipment))
            .layer(from_fn_with_state(self.inner.gate.clone(), gate))
            .layer(from_fn(run_to_completion))
            .with_state(self.inner.clone())
    }

    /// Serves the API on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = listener.local_addr().context("reading the listener address")?;
        tracing::info!(%address, "sandbox warehouse listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .with_context(|| format!("serving the sandbox warehouse on {address}"))
    }

    pub fn stats(&self) -> WarehouseStats {
        WarehouseStats {
            api_calls: self.inner.gate.api_calls.load(Ordering::Relaxed),
            injected_failures: self.inner.gate.injected_failures.load(Ordering::Relaxed),
            shipments_created: self.inner.shipments_created.load(Ordering::Relaxed),
        }
    }

    pub fn set_failure_rate(&self, rate: f64) {
        self.inner.gate.set_failure_rate(rate);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.inner.gate.set_latency(latency);
    }

    /// A snapshot of one shipment.
    pub fn shipment(&self, id: &str) -> Option<Shipment> {
        self.inner.shipments_lock().get(id).cloned()
    }

    /// A snapshot of every shipment, oldest first, so a test can check what
    /// was created without knowing the ids the client was given.
    pub fn shipments(&self) -> Vec<Shipment> {
        let mut all: Vec<Shipment> = self.inner.shipments_lock().values().cloned().collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        all
    }
}

async fn create_shipment(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let prepared = idempotency_key(&headers).and_then(|key| {
        let (input, fingerprint) = parse_shipment(&body)?;
        Ok((key, input, fingerprint))
    });
    let (key, input, fingerprint) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return error.into_response(),
    };
    let fingerprint = format!("POST /v1/shipments {fingerprint}");
    inner.idempotency.run(key.as_deref(), &fingerprint, || {
        let shipment = Shipment {
            id: new_id("shp"),
            order_id: input.order_id,
            tracking_id: new_tracking_id(),
            status: "created".to_owned(),
            items: input.items,
            address: input.address,
            created: unix_now(),
        };
        let body = serde_json::to_string(&shipment).unwrap_or_else(|_| "{}".to_owned());
        inner.shipments_lock().insert(shipment.id.clone(), shipment);
        inner.shipments_created.fetch_add(1, Ordering::Relaxed);
        Executed::stored(StatusCode::CREATED, body)
    })
}

async fn get_shipment(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    match inner.shipments_lock().get(&id) {
        Some(shipment) => json_response(
            StatusCode::OK,
            serde_json::to_string(shipment).unwrap_or_else(|_| "{}".to_owned()),
        ),
        None => ApiError::missing_resource("shipment", &id).into_response(),
    }
}

/// Parses and checks the body; the fingerprint is the JSON with sorted keys, so key
/// order and whitespace do not make a replay look like a different request.
fn parse_shipment(body: &[u8]) -> Result<(ShipmentIn, String), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid_request(format!("Invalid JSON body: {error}")))?;
    let fingerprint = canonical_json(&value);
    let input: ShipmentIn = serde_json::from_value(value)
        .map_err(|error| ApiError::invalid_request(format!("Invalid shipment: {error}")))?;
    if input.order_id.trim().is_empty() {
        return Err(ApiError::invalid_param(
            "order_id",
            "parameter_missing",
            "order_id must not be empty.",
        ));
    }
    if input.items.is_empty() {
        return Err(ApiError::invalid_param(
            "items",
            "parameter_missing",
            "items must not be empty.",
        ));
    }
    if let Some(index) = input
        .items
        .iter()
        .position(|item| item.sku.trim().is_empty() || item.qty == 0)
    {
        return Err(ApiError::invalid_param(
            "items",
            "parameter_invalid",
            format!("items[{index}] needs a non-empty sku and a qty of at least 1."),
        ));
    }
    Ok((input, fingerprint))
}

fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let fields: Vec<String> = entries
                .into_iter()
                .map(|(key, value)| format!("{}:{}", Value::String(key.clone()), canonical_json(value)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        scalar => scalar.to_string(),
    }
}

fn new_tracking_id() -> String {
    let digits: u64 = rand::thread_rng().gen_range(0..10_u64.pow(12));
    format!("TRK{digits:012}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap_or_default();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&b), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn tracking_ids_have_a_fixed_shape() {
        let id = new_tracking_id();
        assert_eq!(id.len(), 15);
        assert!(id.starts_with("TRK") && id[3..].chars().all(|c| c.is_ascii_digit()));
    }
}
