//! Holdfast's domain: the types and rules of checkout and of creator
//! subscriptions, with no I/O.
//!
//! Everything that crosses the API boundary is parsed into these types first
//! (`Sku::parse`, `Quantity::parse`, `Money::new`, …), so the rest of the code
//! never handles a raw string where a domain value belongs.

pub mod address;
pub mod customer;
pub mod error;
pub mod ids;
pub mod money;
pub mod order;
pub mod sku;
pub mod subscription;

pub use address::{Address, Country};
pub use customer::{CustomerName, Email};
pub use error::{FieldError, ValidationErrors};
pub use ids::{
    ApiKeyId, ChargeId, CreatorId, CustomerId, DeliveryId, EventId, OrderId, PlanId, SettlementId, SubscriptionId,
    TestClockId, WebhookEndpointId,
};
pub use money::{Currency, Money, MoneyError};
pub use order::{Cart, CartLine, OrderStatus, StockEffect, TransitionError};
pub use sku::{Quantity, Sku};
pub use subscription::{
    BillingSchedule, DunningExhausted, FeeBps, FeeSplit, IntervalUnit, Period, PlanInterval, SettlementInterval,
    SettlementSchedule, SettlementWindow, SubscriptionEvent, SubscriptionStatus, SubscriptionTransitionError,
};
