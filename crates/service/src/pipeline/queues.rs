//! The queues the pipeline hands work to, by name, and the jobs it puts on
//! them. The steps that enqueue (checkout, payment confirmation, the admin
//! API's replays) and the workers that drain the queues both name a queue
//! from here; the outbox relay makes the event-driven jobs (webhooks,
//! events, inventory) itself, from the templates it is given.

use chrono::{DateTime, Utc};
use holdfast_domain::OrderId;
use holdfast_store::{JobTemplate, NewJob};

/// Orders taken as `accepted` while a dependency was unavailable, completed
/// later: stock reserved, payment intent created.
pub const CHECKOUT: &str = "checkout";
/// Order status changes applied to a remote inventory node's holds.
pub const INVENTORY: &str = "inventory";
/// Paid orders to ship.
pub const FULFILLMENT: &str = "fulfillment";
/// Partner webhook deliveries, grouped by endpoint.
pub const WEBHOOKS: &str = "webhooks";
/// Outbox events to publish to NATS JetStream.
pub const EVENTS: &str = "events";

/// Subscription charges, grouped by creator: one job per period
/// (`holdfast_store::payment_job_key`), each receive one attempt.
pub const SUBSCRIPTION_PAYMENTS: &str = "subscription-payments";

/// Every queue a worker drains.
pub const ALL: [&str; 6] = [
    CHECKOUT,
    INVENTORY,
    FULFILLMENT,
    WEBHOOKS,
    EVENTS,
    SUBSCRIPTION_PAYMENTS,
];

/// The completion job of an order taken as `accepted`: one per order.
pub fn checkout_job(template: &JobTemplate, order_id: &OrderId, now: DateTime<Utc>) -> NewJob {
    order_job(template, order_id, now)
}

/// The fulfillment job of a paid order: one per order.
pub fn fulfillment_job(template: &JobTemplate, order_id: &OrderId, now: DateTime<Utc>) -> NewJob {
    order_job(template, order_id, now)
}

/// A job about one order: grouped and deduplicated by the order id, so an
/// order has at most one job in a queue and its jobs run one at a time.
pub fn order_job(template: &JobTemplate, order_id: &OrderId, now: DateTime<Utc>) -> NewJob {
    template
        .job(order_id.as_str(), serde_json::json!({ "order_id": order_id }), now)
        .dedup_key(order_id.as_str())
}
