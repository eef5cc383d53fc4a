//! Request and response types of the Holdfast API, as they appear on the wire.
//!
//! Inputs end in `In`, outputs in `Out` or a plain noun. Outputs ignore members they do
//! not know, and optional members default, so a newer server does not break an older
//! client.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An amount in integer minor units (cents) and an ISO 4217 currency. Never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

impl Money {
    pub fn usd(amount: i64) -> Self {
        Self {
            amount,
            currency: "USD".to_owned(),
        }
    }
}

/// Order states, as the server names them. `Unknown` absorbs states added later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Accepted,
    PendingPayment,
    Paid,
    Fulfilling,
    Shipped,
    PaymentFailed,
    Cancelled,
    Rejected,
    #[serde(other)]
    Unknown,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Fulfilling => "fulfilling",
            Self::Shipped => "shipped",
            Self::PaymentFailed => "payment_failed",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Unknown => "unknown",
        }
    }
}

/// One cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItemIn {
    pub sku: String,
    pub qty: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerIn {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A shipping address; `country` is ISO 3166-1 alpha-2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub postal_code: String,
    pub country: String,
}

/// The body of `POST /api/v1/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderIn {
    pub items: Vec<LineItemIn>,
    pub customer: CustomerIn,
    pub shipping_address: Address,
    pub payment_method: String,
}

/// The answer to an order creation: `201 pending_payment` with a client secret, or
/// `202 accepted` when the server took the order for asynchronous processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub status: OrderStatus,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// One line of a stored order, priced from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub qty: u32,
    pub unit_price: Money,
}

/// A customer as the server returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    #[serde(default)]
    pub id: Option<String>,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// An order, from `GET /api/v1/orders/{id}` and the order list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    pub total: Money,
    pub customer: Customer,
    pub shipping_address: Address,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub tracking_number: Option<String>,
}

/// One page of a list; pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Filters of `GET /api/v1/orders`; unset fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOrders {
    pub customer: Option<String>,
    pub status: Option<OrderStatus>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One entry of an order's timeline: a transition, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, alias = "from_status")]
    pub from: Option<OrderStatus>,
    #[serde(default, alias = "to_status", alias = "status")]
    pub to: Option<OrderStatus>,
    #[serde(default, alias = "reason")]
    pub cause: Option<String>,
    #[serde(default, alias = "created_at", alias = "occurred_at")]
    pub at: Option<DateTime<Utc>>,
    /// Members this SDK does not model (event type, actor, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Stock of one SKU: `available = on_hand - reserved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// One level of a warehouse feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryLevel {
    pub sku: String,
    pub on_hand: i64,
}

/// The body of `POST /api/v1/inventory/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventorySyncIn {
    pub batch_id: String,
    pub levels: Vec<InventoryLevel>,
}

/// The answer to a sync. Only `batch_id` is certain; the rest is kept as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventorySynced {
    #[serde(default)]
    pub batch_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `POST /api/v1/products` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductIn {
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub on_hand: i64,
}

/// A catalogue product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductOut {
    pub sku: String,
    pub name: String,
    pub price: Money,
    #[serde(default)]
    pub on_hand: Option<i64>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// The body of `POST /api/v1/payments/intent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntentIn {
    pub order_id: String,
}

/// A (re)created payment intent for an order awaiting payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentIntentCreated {
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Storefront,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApiKeyIn {
    pub scope: Scope,
}

/// A new API key. The secret `key` (`hf_…`) is shown once; the server keeps a hash.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(alias = "api_key", alias = "secret", alias = "token")]
    pub key: String,
    pub scope: Scope,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

// The secret stays out of logs.
impl std::fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCreated")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("scope", &self.scope)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A list that arrives either wrapped as `{"data": [...]}` or as a bare array.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ListBody<T> {
    Wrapped { data: Vec<T> },
    Bare(Vec<T>),
}

impl<T> ListBody<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            Self::Wrapped { data } | Self::Bare(data) => data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_left_out_of_requests() -> Result<(), serde_json::Error> {
        let order = OrderIn {
            items: vec![LineItemIn {
                sku: "MUG-1".to_owned(),
                qty: 2,
            }],
            customer: CustomerIn {
                email: "a@example.com".to_owned(),
                name: None,
            },
            shipping_address: Address {
                line1: "1 Main St".to_owned(),
                line2: None,
                city: "Springfield".to_owned(),
                state: None,
                postal_code: "12345".to_owned(),
                country: "US".to_owned(),
            },
            payment_method: "pm_card_visa".to_owned(),
        };
        let json = serde_json::to_value(&order)?;
        assert_eq!(json["customer"], serde_json::json!({"email": "a@example.com"}));
        assert!(json["shipping_address"].get("line2").is_none());
        Ok(())
    }

    #[test]
    fn unknown_statuses_do_not_fail_decoding() -> Result<(), serde_json::Error> {
        let created: OrderCreated = serde_json::from_str(r#"{"order_id":"ord_1","status":"on_hold","extra":1}"#)?;
        assert_eq!(created.status, OrderStatus::Unknown);
        Ok(())
    }

    #[test]
    fn lists_decode_wrapped_or_bare() -> Result<(), serde_json::Error> {
        let wrapped: ListBody<InventoryLevel> = serde_json::from_str(r#"{"data":[{"sku":"A","on_hand":1}]}"#)?;
        let bare: ListBody<InventoryLevel> = serde_json::from_str(r#"[{"sku":"A","on_hand":1}]"#)?;
        assert_eq!(wrapped.into_vec(), bare.into_vec());
        Ok(())
    }
}
