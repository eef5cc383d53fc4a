//! One method per API endpoint. Each says how it may be retried: reads always, writes
//! only with an idempotency key or when the API makes them idempotent by contract.

use uuid::Uuid;

use crate::client::{Call, Client, Retry, segment};
use crate::error::Error;
use crate::types::*;

impl Client {
    /// `POST /api/v1/products` (admin). Sent once: without an idempotency key a retry
    /// could not tell "created" from "lost".
    pub async fn create_product(&self, product: &ProductIn) -> Result<ProductOut, Error> {
        self.execute(Call::post("/api/v1/products".to_owned(), product, Retry::Never))
            .await
    }

    /// `GET /api/v1/products/{sku}`.
    pub async fn get_product(&self, sku: &str) -> Result<ProductOut, Error> {
        self.execute(Call::get(format!("/api/v1/products/{}", segment(sku))))
            .await
    }

    /// `POST /api/v1/orders` with a fresh random `Idempotency-Key`, reused on every
    /// retry of this call so the server creates the order at most once.
    pub async fn create_order(&self, order: &OrderIn) -> Result<OrderCreated, Error> {
        self.create_order_with_key(&Uuid::new_v4().to_string(), order).await
    }

    /// `POST /api/v1/orders` with the caller's `Idempotency-Key` (for example one kept
    /// across a process restart).
    pub async fn create_order_with_key(&self, key: &str, order: &OrderIn) -> Result<OrderCreated, Error> {
        let call = Call::post("/api/v1/orders".to_owned(), order, Retry::WithKey(key.to_owned()));
        self.execute(call).await
    }

    /// `GET /api/v1/orders/{id}`.
    pub async fn get_order(&self, id: &str) -> Result<Order, Error> {
        self.execute(Call::get(format!("/api/v1/orders/{}", segment(id)))).await
    }

    /// `GET /api/v1/orders?customer=&status=&limit=&cursor=`.
    pub async fn list_orders(&self, filter: &ListOrders) -> Result<Page<Order>, Error> {
        let mut call = Call::get("/api/v1/orders".to_owned());
        let ListOrders {
            customer,
            status,
            limit,
            cursor,
        } = filter;
        if let Some(customer) = customer {
            call.query.push(("customer", customer.clone()));
        }
        if let Some(status) = status {
            call.query.push(("status", status.as_str().to_owned()));
        }
        if let Some(limit) = limit {
            call.query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = cursor {
            call.query.push(("cursor", cursor.clone()));
        }
        self.execute(call).await
    }

    /// `GET /api/v1/orders/{id}/events`: the order's timeline, oldest first.
    pub async fn order_events(&self, id: &str) -> Result<Vec<OrderEvent>, Error> {
        let call = Call::get(format!("/api/v1/orders/{}/events", segment(id)));
        self.execute::<ListBody<OrderEvent>>(call).await.map(ListBody::into_vec)
    }

    /// `GET /api/v1/inventory/{sku}`.
    pub async fn get_inventory(&self, sku: &str) -> Result<Inventory, Error> {
        self.execute(Call::get(format!("/api/v1/inventory/{}", segment(sku))))
            .await
    }

    /// `POST /api/v1/inventory/sync`. The API applies a batch once per `batch_id`, so a
    /// retry is safe even without an idempotency key.
    pub async fn sync_inventory(&self, batch_id: &str, levels: &[InventoryLevel]) -> Result<InventorySynced, Error> {
        let body = InventorySyncIn {
            batch_id: batch_id.to_owned(),
            levels: levels.to_vec(),
        };
        self.execute(Call::post("/api/v1/inventory/sync".to_owned(), &body, Retry::Safe))
            .await
    }

    /// `GET /api/v1/customers/search?q=`: case-insensitive match on name and email.
    pub async fn search_customers(&self, q: &str) -> Result<Vec<Customer>, Error> {
        let mut call = Call::get("/api/v1/customers/search".to_owned());
        call.query.push(("q", q.to_owned()));
        self.execute::<ListBody<Customer>>(call).await.map(ListBody::into_vec)
    }

    /// `POST /api/v1/payments/intent`: (re)creates the intent of an order awaiting
    /// payment. Sent once, as it carries no idempotency key.
    pub async fn create_payment_intent(&self, order_id: &str) -> Result<PaymentIntentCreated, Error> {
        let body = PaymentIntentIn {
            order_id: order_id.to_owned(),
        };
        self.execute(Call::post("/api/v1/payments/intent".to_owned(), &body, Retry::Never))
            .await
    }

    /// `POST /api/v1/api-keys` (admin): a new key with `scope`. Sent once.
    pub async fn create_api_key(&self, scope: Scope) -> Result<ApiKeyCreated, Error> {
        let body = ApiKeyIn { scope };
        self.execute(Call::post("/api/v1/api-keys".to_owned(), &body, Retry::Never))
            .await
    }
}
