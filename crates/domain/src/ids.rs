//! Prefixed, time-ordered identifiers (`ord_…`, `evt_…`), like Stripe's.
//!
//! The suffix is a UUIDv7 in hex, so ids sort by creation time: order listings
//! page by id and the outbox relays events in id order within a transaction.

use std::fmt;

use crate::error::FieldError;

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, later than every id made before it in this process.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Accepts `prefix_` followed by 32 lowercase hex digits.
            pub fn parse(raw: &str) -> Result<Self, FieldError> {
                let valid = raw
                    .strip_prefix(concat!($prefix, "_"))
                    .is_some_and(|rest| {
                        rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                if valid {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(FieldError::new("", concat!("must be an id of the form ", $prefix, "_<32 hex digits>")))
                }
            }

            /// Wraps an id read back from storage, which only ever holds ids
            /// this type generated.
            pub fn from_trusted(raw: String) -> Self {
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// An order.
    OrderId,
    "ord"
);
prefixed_id!(
    /// An event in the outbox; also the `webhook-id` of partner deliveries.
    EventId,
    "evt"
);
prefixed_id!(
    /// A customer, identified in checkout by email.
    CustomerId,
    "cus"
);
prefixed_id!(
    /// An API key's public id (the secret itself is never stored).
    ApiKeyId,
    "key"
);
prefixed_id!(
    /// A partner's webhook endpoint (Stripe's prefix).
    WebhookEndpointId,
    "we"
);
prefixed_id!(
    /// One event's delivery to one endpoint, with all its attempts.
    DeliveryId,
    "dlv"
);
prefixed_id!(
    /// A creator: sells plans, is paid out in settlement batches.
    CreatorId,
    "cr"
);
prefixed_id!(
    /// A creator's plan: a name, a billing interval and versioned prices.
    PlanId,
    "plan"
);
prefixed_id!(
    /// A customer's subscription to a plan.
    SubscriptionId,
    "sub"
);
prefixed_id!(
    /// One attempt to charge one period of a subscription (Stripe's prefix).
    ChargeId,
    "ch"
);
prefixed_id!(
    /// A settlement batch: the charges of one creator paid out together.
    SettlementId,
    "stl"
);
prefixed_id!(
    /// A test clock: a frozen time that subscriptions created on it live on.
    TestClockId,
    "clock"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_creation() {
        let first = OrderId::generate();
        let second = OrderId::generate();
        assert!(first < second);
        assert_eq!(OrderId::parse(first.as_str()), Ok(first));
    }

    #[test]
    fn foreign_prefixes_and_junk_are_rejected() {
        let event = EventId::generate();
        assert!(OrderId::parse(event.as_str()).is_err());
        assert!(OrderId::parse("ord_").is_err());
        assert!(OrderId::parse("ord_ZZZZ0000000000000000000000000000").is_err());
        assert!(OrderId::parse("ord_00000000000000000000000000000000x").is_err());
    }
}
