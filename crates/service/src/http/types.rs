//! Wire types shared by several resources.

use chrono::{DateTime, Utc};
use holdfast_store::{Order, OrderLine};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An amount in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyIo {
    /// Minor units (cents): 1999 is $19.99.
    pub amount: i64,
    /// ISO 4217, upper case: "USD".
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressIo {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2: "US".
    pub country: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderItemOut {
    pub sku: String,
    pub qty: u32,
    pub unit_price: MoneyIo,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerOut {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderOut {
    pub id: String,
    /// accepted, pending_payment, paid, fulfilling, shipped, payment_failed, cancelled, rejected
    pub status: String,
    pub items: Vec<OrderItemOut>,
    pub total: MoneyIo,
    pub customer: CustomerOut,
    pub shipping_address: AddressIo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Order> for OrderOut {
    fn from(order: Order) -> Self {
        let currency = order.currency.clone();
        let item = |line: OrderLine| OrderItemOut {
            sku: line.sku,
            qty: line.qty,
            unit_price: MoneyIo {
                amount: line.unit_amount,
                currency: currency.clone(),
            },
        };
        OrderOut {
            id: order.id.to_string(),
            status: order.status.to_string(),
            items: order.lines.into_iter().map(item).collect(),
            total: MoneyIo {
                amount: order.total_amount,
                currency: order.currency.clone(),
            },
            customer: CustomerOut {
                email: order.email,
                name: order.name,
            },
            shipping_address: AddressIo {
                line1: order.address.line1,
                line2: order.address.line2,
                city: order.address.city,
                state: order.address.state,
                postal_code: order.address.postal_code,
                country: order.address.country,
            },
            payment_intent_id: order.payment_intent_id,
            tracking_number: order.tracking_number,
            // Only an order holding a reservation has a meaningful expiry.
            expires_at: order
                .expires_at
                .filter(|_| order.status == holdfast_domain::OrderStatus::PendingPayment),
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}
