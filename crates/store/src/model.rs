//! The records the store reads and writes.

use chrono::{DateTime, Utc};
use holdfast_domain::{Address, ApiKeyId, Currency, CustomerName, Email, Money, OrderId, OrderStatus, Quantity, Sku};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Versions the binary knows.
    pub expected: Vec<i64>,
    /// Versions applied to the database.
    pub applied: Vec<i64>,
}

impl MigrationStatus {
    pub fn pending(&self) -> Vec<i64> {
        self.expected
            .iter()
            .copied()
            .filter(|v| !self.applied.contains(v))
            .collect()
    }

    /// Applied versions this binary does not know: the database is newer.
    pub fn unknown(&self) -> Vec<i64> {
        self.applied
            .iter()
            .copied()
            .filter(|v| !self.expected.contains(v))
            .collect()
    }

    pub fn is_current(&self) -> bool {
        self.pending().is_empty() && self.unknown().is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub pool: &'static str,
    pub in_use: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Storefront,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Storefront => "storefront",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "storefront" => Some(Self::Storefront),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

pub struct NewApiKey {
    pub id: ApiKeyId,
    /// SHA-256 of the secret, hex. The secret itself is never stored.
    pub hash: String,
    pub scope: Scope,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub scope: Scope,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: String,
    pub price: Money,
    pub on_hand: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub price: Money,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryLevel {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[derive(Debug, Clone)]
pub struct InventoryBatch {
    pub batch_id: String,
    pub levels: Vec<(Sku, u32)>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOutcome {
    pub batch_id: String,
    /// SKUs whose level was set.
    pub updated: Vec<String>,
    /// SKUs in the batch that are not in the catalogue.
    pub unknown: Vec<String>,
    /// True when this batch id had been applied before and nothing changed now.
    #[serde(default)]
    pub replayed: bool,
}

/// One priced line of a new order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub qty: u32,
    pub unit_amount: i64,
}

#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: OrderId,
    pub email: Email,
    pub name: Option<CustomerName>,
    pub address: Address,
    pub lines: Vec<(Sku, Quantity, Money)>,
    pub total: Money,
    pub payment_method: String,
    pub status: OrderStatus,
    pub expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntentRef {
    pub intent_id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: OrderId,
    pub status: OrderStatus,
    pub email: String,
    pub name: Option<String>,
    pub address: Address,
    pub lines: Vec<OrderLine>,
    pub currency: String,
    pub total_amount: i64,
    pub payment_method: String,
    pub payment_intent_id: Option<String>,
    pub client_secret: Option<String>,
    pub tracking_number: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    pub fn currency(&self) -> Currency {
        Currency::parse(&self.currency).unwrap_or(Currency::USD)
    }
}

#[derive(Debug, Clone)]
pub struct StatusChange {
    pub order_id: OrderId,
    pub to: OrderStatus,
    /// Why, in words for the timeline: "payment_intent.succeeded evt_…".
    pub cause: String,
    pub at: DateTime<Utc>,
    /// Recorded with the change (entering `shipped`).
    pub tracking_number: Option<String>,
    /// A new payment deadline, set with the change (an accepted order whose
    /// stock a remote inventory node now holds enters `pending_payment`).
    pub expires_at: Option<DateTime<Utc>>,
    /// Jobs enqueued in the transaction that makes the change, and only if it
    /// is made: the follow-up work exists exactly when the new state does.
    pub enqueue: Vec<crate::NewJob>,
}

impl StatusChange {
    pub fn new(order_id: OrderId, to: OrderStatus, cause: impl Into<String>, at: DateTime<Utc>) -> Self {
        Self {
            order_id,
            to,
            cause: cause.into(),
            at,
            tracking_number: None,
            expires_at: None,
            enqueue: Vec::new(),
        }
    }

    pub fn tracking_number(mut self, tracking_number: impl Into<String>) -> Self {
        self.tracking_number = Some(tracking_number.into());
        self
    }

    pub fn expires_at(mut self, expires_at: DateTime<Utc>) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    pub fn enqueue(mut self, job: crate::NewJob) -> Self {
        self.enqueue.push(job);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    Changed {
        from: OrderStatus,
        to: OrderStatus,
    },
    /// The order was already in the target state: a duplicate delivery.
    Unchanged,
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub email: Option<Email>,
    pub status: Option<OrderStatus>,
    /// Orders created before this one (the previous page's last id).
    pub before: Option<OrderId>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderEvent {
    pub seq: i64,
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    pub cause: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct IdempotentRequest {
    /// Keys are per API key, so two clients cannot collide.
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    /// The id the request will create if it is the first with this key.
    pub resource_id: String,
    pub now: DateTime<Utc>,
    /// How long a crashed first attempt blocks the key before a retry may
    /// take it over.
    pub lease: chrono::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// Go ahead, then complete or release the key. Carries the resource id
    /// to use: the request's own, or the one a crashed first attempt chose.
    New(String),
    Replay(StoredResponse),
    InProgress,
    /// Same key, different request body.
    Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub received_at: DateTime<Utc>,
}

pub(crate) fn order_event_payload(order: &Order) -> String {
    serde_json::json!({
        "id": order.id,
        "status": order.status,
        "email": order.email,
        "total": {"amount": order.total_amount, "currency": order.currency},
        "items": order.lines,
        "tracking_number": order.tracking_number,
    })
    .to_string()
}

pub(crate) fn order_lines(order: &NewOrder) -> Vec<OrderLine> {
    order
        .lines
        .iter()
        .map(|(sku, qty, price)| OrderLine {
            sku: sku.to_string(),
            qty: qty.get(),
            unit_amount: price.amount(),
        })
        .collect()
}

pub(crate) fn new_order_payload(order: &NewOrder, lines: &[OrderLine]) -> String {
    serde_json::json!({
        "id": order.id,
        "status": order.status,
        "email": order.email.as_str(),
        "total": {"amount": order.total.amount(), "currency": order.total.currency().code()},
        "items": lines,
        "tracking_number": null,
    })
    .to_string()
}

/// An order's lines as SKUs and quantities again, sorted by SKU (the order
/// stock is locked in), for reserving an order taken before its stock.
pub fn stored_lines(order: &Order) -> Result<Vec<(Sku, Quantity)>, crate::StoreError> {
    let mut lines = order
        .lines
        .iter()
        .map(|line| {
            let sku = Sku::parse(&line.sku).map_err(|_| crate::error::corrupt("order line sku", &line.sku))?;
            let qty = Quantity::parse(i64::from(line.qty))
                .map_err(|_| crate::error::corrupt("order line qty", &line.qty.to_string()))?;
            Ok((sku, qty))
        })
        .collect::<Result<Vec<_>, crate::StoreError>>()?;
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(lines)
}
