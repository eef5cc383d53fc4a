//! Row shapes shared by both backends, and their conversion to the model.
//!
//! `sqlx::FromRow` derives an implementation for any driver whose types
//! decode these fields, so PostgreSQL and SQLite read through the same code.

use chrono::{DateTime, Utc};
use holdfast_domain::{ApiKeyId, Currency, Money, OrderId, Sku};

use crate::error::{StoreError, corrupt, parse_status};
use crate::model::{
    ApiKeyRecord, Customer, IdempotencyBegin, IdempotentRequest, InboxEvent, Order, OrderEvent, OrderLine, Product,
    Scope, StoredResponse, SyncOutcome,
};

/// The columns `OrderRow` reads, as a literal so queries can `concat!` it.
macro_rules! order_columns {
    () => {
        "id, status, email, name, shipping_address, lines, currency, total_amount, payment_method, \
         payment_intent_id, client_secret, tracking_number, expires_at, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    id: String,
    status: String,
    email: String,
    name: Option<String>,
    shipping_address: String,
    lines: String,
    currency: String,
    total_amount: i64,
    payment_method: String,
    payment_intent_id: Option<String>,
    client_secret: Option<String>,
    tracking_number: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        let address = serde_json::from_str(&row.shipping_address)
            .map_err(|_| corrupt("shipping address", &row.shipping_address))?;
        let lines: Vec<OrderLine> = serde_json::from_str(&row.lines).map_err(|_| corrupt("order lines", &row.lines))?;
        Ok(Order {
            status: parse_status(&row.status)?,
            id: OrderId::from_trusted(row.id),
            email: row.email,
            name: row.name,
            address,
            lines,
            currency: row.currency,
            total_amount: row.total_amount,
            payment_method: row.payment_method,
            payment_intent_id: row.payment_intent_id,
            client_secret: row.client_secret,
            tracking_number: row.tracking_number,
            expires_at: row.expires_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(crate) fn orders(rows: Vec<OrderRow>) -> Result<Vec<Order>, StoreError> {
    rows.into_iter().map(Order::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProductRow {
    sku: String,
    name: String,
    price_amount: i64,
    currency: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;

    fn try_from(row: ProductRow) -> Result<Self, StoreError> {
        let currency = Currency::parse(&row.currency).map_err(|_| corrupt("currency", &row.currency))?;
        let price =
            Money::new(row.price_amount, currency).map_err(|_| corrupt("price", &row.price_amount.to_string()))?;
        Ok(Product {
            sku: Sku::from_trusted(row.sku),
            name: row.name,
            price,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrderEventRow {
    seq: i32,
    from_status: Option<String>,
    to_status: String,
    cause: String,
    at: DateTime<Utc>,
}

impl TryFrom<OrderEventRow> for OrderEvent {
    type Error = StoreError;

    fn try_from(row: OrderEventRow) -> Result<Self, StoreError> {
        Ok(OrderEvent {
            seq: i64::from(row.seq),
            from: row.from_status.as_deref().map(parse_status).transpose()?,
            to: parse_status(&row.to_status)?,
            cause: row.cause,
            at: row.at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CustomerRow {
    id: String,
    email: String,
    name: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Customer {
            id: row.id,
            email: row.email,
            name: row.name,
            created_at: row.created_at,
        }
    }
}

/// Escapes `%`, `_` and `\` so a search term matches literally in `LIKE … ESCAPE '\'`.
pub(crate) fn like_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Splits `total` units over `buckets` as evenly as possible.
pub(crate) fn spread(total: i64, buckets: i64) -> Vec<i64> {
    let buckets = buckets.max(1);
    (0..buckets)
        .map(|i| total / buckets + i64::from(i < total % buckets))
        .collect()
}

#[derive(sqlx::FromRow)]
pub(crate) struct IdempotencyRow {
    request_hash: String,
    pub(crate) resource_id: String,
    state: String,
    response_status: Option<i32>,
    response_body: Option<String>,
    pub(crate) locked_until: DateTime<Utc>,
}

impl IdempotencyRow {
    /// What a request meeting this existing key should do; `New` means the
    /// key is stale and may be taken over, resuming the first attempt's resource.
    pub(crate) fn decide(&self, request: &IdempotentRequest) -> IdempotencyBegin {
        if self.request_hash != request.request_hash {
            return IdempotencyBegin::Mismatch;
        }
        match (self.state.as_str(), self.response_status, &self.response_body) {
            ("done", Some(status), Some(body)) => IdempotencyBegin::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                body: body.clone(),
            }),
            _ if self.locked_until > request.now => IdempotencyBegin::InProgress,
            _ => IdempotencyBegin::New(self.resource_id.clone()),
        }
    }
}

pub(crate) fn api_key_record((id, scope, name): (String, String, String)) -> Result<ApiKeyRecord, StoreError> {
    let scope = Scope::parse(&scope).ok_or_else(|| corrupt("api key scope", &scope))?;
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_trusted(id),
        scope,
        name,
    })
}

pub(crate) fn inbox_event(
    (id, event_type, payload, received_at): (String, String, String, DateTime<Utc>),
) -> InboxEvent {
    InboxEvent {
        id,
        event_type,
        payload,
        received_at,
    }
}

pub(crate) fn replayed(stored: &str) -> Result<SyncOutcome, StoreError> {
    let mut outcome: SyncOutcome = serde_json::from_str(stored).map_err(|_| corrupt("sync outcome", stored))?;
    outcome.replayed = true;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_even_and_exact() {
        assert_eq!(spread(10, 4), [3, 3, 2, 2]);
        assert_eq!(spread(0, 3), [0, 0, 0]);
        assert_eq!(spread(7, 1), [7]);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("A_b%"), "%a\\_b\\%%");
    }
}
