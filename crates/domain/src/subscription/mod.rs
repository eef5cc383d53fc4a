//! Creator subscriptions: their statuses (Stripe's names) and the one
//! transition function, the billing periods a subscription is charged for
//! (`period.rs`), and how each charge is split and settled
//! (`settlement.rs`).

mod period;
mod settlement;

use std::fmt;

pub use period::{BillingSchedule, IntervalUnit, MAX_TRIAL_DAYS, Period, PlanInterval};
pub use settlement::{FeeBps, FeeSplit, SettlementInterval, SettlementSchedule, SettlementWindow};

use crate::error::FieldError;

/// Where a subscription is in its life, with Stripe Billing's names. The
/// happy path is `incomplete → active` (or `trialing → active`), then
/// `active` for as long as every renewal is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Created; its first period is not paid yet.
    Incomplete,
    /// In its free trial; the first charge is due when the trial ends.
    Trialing,
    /// Paid up.
    Active,
    /// A renewal failed and its retries are used up (or it was declined
    /// for good); waiting out the grace period or a new payment method.
    PastDue,
    /// The grace period ended and the plan keeps unpaid subscriptions open:
    /// nothing is charged until the customer gives a new payment method.
    Unpaid,
    /// Ended, by the customer, the creator, or dunning. Terminal.
    Canceled,
    /// Neither renewed nor charged until resumed.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a subscription cannot go from {from} to {to}")]
pub struct SubscriptionTransitionError {
    pub from: SubscriptionStatus,
    pub to: SubscriptionStatus,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 7] = [
        Self::Incomplete,
        Self::Trialing,
        Self::Active,
        Self::PastDue,
        Self::Unpaid,
        Self::Canceled,
        Self::Paused,
    ];

    /// The one place that decides which status changes are legal. Storage
    /// calls it inside the transaction that changes the row, so no code path
    /// can write a status this function did not allow.
    pub fn transition(self, to: SubscriptionStatus) -> Result<SubscriptionStatus, SubscriptionTransitionError> {
        use SubscriptionStatus::*;
        let allowed = matches!(
            (self, to),
            // The first charge was paid, or it never will be.
            (Incomplete, Active | Canceled)
                // The trial ended: paid, failed, or left.
                | (Trialing, Active | PastDue | Canceled | Paused)
                | (Active, PastDue | Canceled | Paused)
                // Dunning: paid after all, given up on, or left.
                | (PastDue, Active | Unpaid | Canceled)
                | (Unpaid, Active | Canceled)
                | (Paused, Active | Canceled)
        );
        if allowed {
            Ok(to)
        } else {
            Err(SubscriptionTransitionError { from: self, to })
        }
    }

    /// Whether the renewal scheduler opens and charges new periods: only
    /// for subscriptions in good standing. A `past_due` one is already in
    /// dunning, an `unpaid` one waits for a new payment method.
    pub fn renews(self) -> bool {
        matches!(self, Self::Trialing | Self::Active)
    }

    /// Whether a charge attempt may be made now. Never after a cancel and
    /// never while paused: the attempt is refused in the transaction that
    /// would record it.
    pub fn accepts_charges(self) -> bool {
        !matches!(self, Self::Canceled | Self::Paused)
    }

    pub fn is_terminal(self) -> bool {
        self == Self::Canceled
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Canceled => "canceled",
            Self::Paused => "paused",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == raw)
            .ok_or_else(|| FieldError::new("", format!("unknown subscription status \"{raw}\"")))
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The events of a subscription's timeline, which are also what its
/// partners and NATS consumers receive (`subscription.renewed`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SubscriptionEvent {
    #[serde(rename = "subscription.created")]
    Created,
    #[serde(rename = "subscription.activated")]
    Activated,
    #[serde(rename = "subscription.renewed")]
    Renewed,
    #[serde(rename = "subscription.past_due")]
    PastDue,
    #[serde(rename = "subscription.unpaid")]
    Unpaid,
    #[serde(rename = "subscription.canceled")]
    Canceled,
    #[serde(rename = "subscription.paused")]
    Paused,
    #[serde(rename = "subscription.resumed")]
    Resumed,
    #[serde(rename = "charge.succeeded")]
    ChargeSucceeded,
    #[serde(rename = "charge.failed")]
    ChargeFailed,
}

impl SubscriptionEvent {
    pub const ALL: [SubscriptionEvent; 10] = [
        Self::Created,
        Self::Activated,
        Self::Renewed,
        Self::PastDue,
        Self::Unpaid,
        Self::Canceled,
        Self::Paused,
        Self::Resumed,
        Self::ChargeSucceeded,
        Self::ChargeFailed,
    ];

    /// The event a status change announces. Leaving `paused` is a resume;
    /// every other way into `active` is an activation.
    pub fn of_change(from: SubscriptionStatus, to: SubscriptionStatus) -> Self {
        use SubscriptionStatus as S;
        match to {
            S::Active if from == S::Paused => Self::Resumed,
            S::Active => Self::Activated,
            S::PastDue => Self::PastDue,
            S::Unpaid => Self::Unpaid,
            S::Canceled => Self::Canceled,
            S::Paused => Self::Paused,
            // Nothing moves into these; a new subscription starts in them.
            S::Incomplete | S::Trialing => Self::Created,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "subscription.created",
            Self::Activated => "subscription.activated",
            Self::Renewed => "subscription.renewed",
            Self::PastDue => "subscription.past_due",
            Self::Unpaid => "subscription.unpaid",
            Self::Canceled => "subscription.canceled",
            Self::Paused => "subscription.paused",
            Self::Resumed => "subscription.resumed",
            Self::ChargeSucceeded => "charge.succeeded",
            Self::ChargeFailed => "charge.failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == raw)
    }
}

impl fmt::Display for SubscriptionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plan does with a subscription whose dunning and grace period
/// ran out without payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DunningExhausted {
    Canceled,
    Unpaid,
}

impl DunningExhausted {
    pub fn status(self) -> SubscriptionStatus {
        match self {
            Self::Canceled => SubscriptionStatus::Canceled,
            Self::Unpaid => SubscriptionStatus::Unpaid,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "canceled" => Ok(Self::Canceled),
            "unpaid" => Ok(Self::Unpaid),
            _ => Err(FieldError::new("", "must be \"canceled\" or \"unpaid\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        use SubscriptionStatus::*;
        let allowed: Vec<(SubscriptionStatus, SubscriptionStatus)> = SubscriptionStatus::ALL
            .into_iter()
            .flat_map(|from| SubscriptionStatus::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.transition(*to).is_ok())
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Incomplete, Active),
                (Incomplete, Canceled),
                (Trialing, Active),
                (Trialing, PastDue),
                (Trialing, Canceled),
                (Trialing, Paused),
                (Active, PastDue),
                (Active, Canceled),
                (Active, Paused),
                (PastDue, Active),
                (PastDue, Unpaid),
                (PastDue, Canceled),
                (Unpaid, Active),
                (Unpaid, Canceled),
                (Paused, Active),
                (Paused, Canceled),
            ]
        );
        for status in SubscriptionStatus::ALL {
            assert_eq!(SubscriptionStatus::parse(status.as_str()), Ok(status));
            assert!(status.transition(status).is_err(), "{status} to itself is not a change");
            if status.is_terminal() {
                assert!(SubscriptionStatus::ALL.iter().all(|to| status.transition(*to).is_err()));
            }
        }
        assert!(
            SubscriptionStatus::parse("cancelled").is_err(),
            "Stripe's spelling only"
        );
    }

    #[test]
    fn nothing_is_charged_after_a_cancel_or_while_paused() {
        let charging: Vec<_> = SubscriptionStatus::ALL
            .into_iter()
            .filter(|s| s.accepts_charges())
            .collect();
        use SubscriptionStatus::*;
        assert_eq!(charging, [Incomplete, Trialing, Active, PastDue, Unpaid]);
        let renewing: Vec<_> = SubscriptionStatus::ALL.into_iter().filter(|s| s.renews()).collect();
        assert_eq!(renewing, [Trialing, Active]);
    }

    #[test]
    fn each_change_announces_its_event() {
        use SubscriptionStatus::*;
        assert_eq!(
            SubscriptionEvent::of_change(Incomplete, Active),
            SubscriptionEvent::Activated
        );
        assert_eq!(
            SubscriptionEvent::of_change(PastDue, Active),
            SubscriptionEvent::Activated
        );
        assert_eq!(SubscriptionEvent::of_change(Paused, Active), SubscriptionEvent::Resumed);
        assert_eq!(
            SubscriptionEvent::of_change(Active, PastDue),
            SubscriptionEvent::PastDue
        );
        assert_eq!(SubscriptionEvent::of_change(PastDue, Unpaid), SubscriptionEvent::Unpaid);
        assert_eq!(
            SubscriptionEvent::of_change(Active, Canceled),
            SubscriptionEvent::Canceled
        );
        assert_eq!(SubscriptionEvent::of_change(Active, Paused), SubscriptionEvent::Paused);
        for event in SubscriptionEvent::ALL {
            assert_eq!(SubscriptionEvent::parse(event.as_str()), Some(event));
            let json = serde_json::to_value(event).unwrap();
            assert_eq!(json, event.as_str(), "serde and as_str agree");
        }
    }

    #[test]
    fn dunning_ends_in_one_of_two_statuses() {
        assert_eq!(
            DunningExhausted::parse("unpaid").map(DunningExhausted::status),
            Ok(SubscriptionStatus::Unpaid)
        );
        assert_eq!(DunningExhausted::Canceled.as_str(), "canceled");
        assert!(DunningExhausted::parse("past_due").is_err());
    }
}
