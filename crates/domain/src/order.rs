//! Orders: their states, the one transition function, and the cart.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{FieldError, ValidationErrors};
use crate::sku::{Quantity, Sku};

/// Where an order is in its life. The happy path is
/// `accepted → pending_payment → paid → fulfilling → shipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Taken for asynchronous processing while a dependency was unavailable,
    /// or back here from `pending_payment` with its stock returned when its
    /// checkout could not get a payment intent: the client's retry with the
    /// same idempotency key resumes it.
    Accepted,
    /// Stock reserved, waiting for the payment provider.
    PendingPayment,
    Paid,
    Fulfilling,
    Shipped,
    /// The provider declined the payment; the reservation was released.
    PaymentFailed,
    /// Cancelled, or the reservation expired before payment.
    Cancelled,
    /// Found out of stock while processing an `accepted` order.
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        Self::Accepted,
        Self::PendingPayment,
        Self::Paid,
        Self::Fulfilling,
        Self::Shipped,
        Self::PaymentFailed,
        Self::Cancelled,
        Self::Rejected,
    ];

    /// The one place that decides which status changes are legal. Storage calls
    /// it inside the transaction that changes the row, so no code path can
    /// write a status this function did not allow.
    pub fn transition(self, to: OrderStatus) -> Result<OrderStatus, TransitionError> {
        use OrderStatus::*;
        let allowed = matches!(
            (self, to),
            (Accepted, PendingPayment | Rejected | Cancelled)
                | (PendingPayment, Accepted | Paid | PaymentFailed | Cancelled)
                | (PaymentFailed, Cancelled)
                | (Paid, Fulfilling)
                | (Fulfilling, Shipped)
        );
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// Whether stock is still held for an order in this state.
    pub fn holds_stock(self) -> bool {
        matches!(self, Self::PendingPayment | Self::Paid | Self::Fulfilling)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Shipped | Self::Cancelled | Self::Rejected)
    }

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
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == raw)
            .ok_or_else(|| FieldError::new("", format!("unknown order status \"{raw}\"")))
    }

    /// The partner event type announcing this status, e.g. `order.shipped`.
    pub fn event_type(self) -> String {
        format!("order.{}", self.as_str())
    }

    /// The status an event type announces: the inverse of [`Self::event_type`].
    pub fn from_event_type(event_type: &str) -> Option<Self> {
        let status = event_type.strip_prefix("order.")?;
        Self::ALL.into_iter().find(|s| s.as_str() == status)
    }

    /// What entering this status does to the stock an inventory node holds
    /// for the order. Entering `accepted` again after a failed checkout
    /// keeps the hold: the client's retry asks for the same hold (keyed by
    /// the order id), which a released hold could not give again; an order
    /// no retry resumes is cancelled when its reservation expires, and that
    /// releases the hold.
    pub fn stock_effect(self) -> Option<StockEffect> {
        match self {
            Self::Paid => Some(StockEffect::Commit),
            Self::Shipped => Some(StockEffect::Consume),
            Self::PaymentFailed | Self::Cancelled | Self::Rejected => Some(StockEffect::Release),
            Self::Accepted | Self::PendingPayment | Self::Fulfilling => None,
        }
    }
}

/// What an order's status change does to its reserved stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockEffect {
    /// Paid: the reservation is kept until shipment, no longer expiring.
    Commit,
    /// Shipped: the units leave the warehouse.
    Consume,
    /// Failed, cancelled or rejected: the units are available again.
    Release,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a cart after merging: a SKU and its total quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    pub sku: Sku,
    pub qty: Quantity,
}

/// The items of a checkout, with lines of the same SKU summed and sorted by
/// SKU. The order matters: reserving stock in SKU order everywhere means two
/// checkouts never wait on each other's locks in opposite orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    lines: Vec<CartLine>,
}

impl Cart {
    pub const MAX_LINES: usize = 100;

    /// Builds a cart from raw `(sku, qty)` pairs, reporting errors by index
    /// (`items[2].qty`).
    pub fn parse<'a>(items: impl IntoIterator<Item = (&'a str, i64)>) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut merged: BTreeMap<Sku, u64> = BTreeMap::new();
        let mut count = 0;
        for (index, (sku, qty)) in items.into_iter().enumerate() {
            count += 1;
            let path = format!("items[{index}]");
            let sku = errors.collect(&format!("{path}.sku"), Sku::parse(sku));
            let qty = errors.collect(&format!("{path}.qty"), Quantity::parse(qty));
            if let (Some(sku), Some(qty)) = (sku, qty) {
                *merged.entry(sku).or_default() += u64::from(qty.get());
            }
        }
        if count == 0 {
            errors.push(FieldError::new("items", "must contain at least one item"));
        } else if count > Self::MAX_LINES {
            errors.push(FieldError::new(
                "items",
                format!("must contain at most {} items", Self::MAX_LINES),
            ));
        }
        let mut lines = Vec::with_capacity(merged.len());
        for (sku, total) in merged {
            let qty = i64::try_from(total).unwrap_or(i64::MAX);
            match Quantity::parse(qty) {
                Ok(qty) => lines.push(CartLine { sku, qty }),
                Err(error) => errors.push(error.under(&format!("items[sku={sku}].qty"))),
            }
        }
        errors.into_result(|| Cart { lines })
    }

    pub fn lines(&self) -> &[CartLine] {
        &self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        use OrderStatus::*;
        let allowed: Vec<(OrderStatus, OrderStatus)> = OrderStatus::ALL
            .into_iter()
            .flat_map(|from| OrderStatus::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.transition(*to).is_ok())
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Accepted, PendingPayment),
                (Accepted, Cancelled),
                (Accepted, Rejected),
                (PendingPayment, Accepted),
                (PendingPayment, Paid),
                (PendingPayment, PaymentFailed),
                (PendingPayment, Cancelled),
                (Paid, Fulfilling),
                (Fulfilling, Shipped),
                (PaymentFailed, Cancelled),
            ]
        );
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Ok(status));
            if status.is_terminal() {
                assert!(OrderStatus::ALL.iter().all(|to| status.transition(*to).is_err()));
            }
        }
    }

    #[test]
    fn cart_merges_lines_of_one_sku_and_sorts_them() {
        let cart = Cart::parse([("B", 2), ("A", 1), ("B", 3)]).unwrap();
        let lines: Vec<_> = cart.lines().iter().map(|l| (l.sku.as_str(), l.qty.get())).collect();
        assert_eq!(lines, [("A", 1), ("B", 5)]);
    }

    #[test]
    fn cart_errors_name_the_item() {
        let errors = Cart::parse([("A", 1), ("", 0)]).unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["items[1].sku", "items[1].qty"]);
        assert!(Cart::parse([]).is_err());
        let merged_too_big = Cart::parse([("A", 10_000), ("A", 1)]).unwrap_err();
        assert_eq!(merged_too_big.0[0].field, "items[sku=A].qty");
    }
}
