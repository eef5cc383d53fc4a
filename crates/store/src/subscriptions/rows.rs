//! The subscription tables' rows, the column lists queries `concat!`, their
//! conversion to the public types, and the outbox payloads.

use chrono::{DateTime, Utc};
use holdfast_domain::{
    ChargeId, CreatorId, Currency, CustomerName, DunningExhausted, Email, FeeBps, FeeSplit, IntervalUnit, Money,
    Period, PlanId, PlanInterval, SettlementId, SettlementInterval, SettlementSchedule, SettlementWindow,
    SubscriptionEvent, SubscriptionId, SubscriptionStatus, TestClockId,
};

use super::*;
use crate::StoreError;
use crate::error::corrupt;

/// The statuses whose due periods the scheduler charges, as SQL: a new
/// subscription's first period and the renewals of one in good standing
/// (`past_due` is already in dunning, `unpaid` waits for a new payment
/// method).
macro_rules! scheduled_statuses {
    () => {
        "('incomplete', 'trialing', 'active')"
    };
}

/// The columns `CreatorRow` reads.
macro_rules! creator_columns {
    () => {
        "id, name, fee_bps, settlement_interval, settlement_delay_days, created_at"
    };
}

/// A plan with its current price, read by `PlanRow`.
macro_rules! plan_select {
    () => {
        "SELECT p.id, p.creator_id, p.name, p.interval_unit, p.interval_count, p.trial_days, \
         p.on_dunning_exhausted, p.price_version, p.created_at, p.updated_at, pp.amount, pp.currency \
         FROM plans p JOIN plan_prices pp ON pp.plan_id = p.id AND pp.version = p.price_version"
    };
}

/// A subscription with its price, its plan's interval and its test
/// clock's time, read by `SubscriptionRow`.
macro_rules! subscription_select {
    () => {
        "SELECT s.id, s.creator_id, s.plan_id, s.price_version, s.email, s.name, s.status, s.payment_method, \
         s.test_clock_id, s.started_at, s.anchor, s.current_period_index, s.current_period_start, \
         s.current_period_end, s.cancel_at_period_end, s.canceled_at, s.past_due_since, s.paused_at, \
         s.resumes_at, s.last_sequence, s.created_at, s.updated_at, p.interval_unit, p.interval_count, \
         pp.amount, pp.currency, c.frozen_time \
         FROM subscriptions s JOIN plans p ON p.id = s.plan_id \
         JOIN plan_prices pp ON pp.plan_id = s.plan_id AND pp.version = s.price_version \
         LEFT JOIN test_clocks c ON c.id = s.test_clock_id"
    };
}

/// A test clock with how many due periods its subscriptions still have,
/// read by `TestClockRow`.
macro_rules! test_clock_select {
    () => {
        concat!(
            "SELECT c.id, c.frozen_time, c.created_at, c.updated_at, ",
            "(SELECT count(*) FROM subscriptions s JOIN subscription_periods p ON p.subscription_id = s.id ",
            "WHERE s.test_clock_id = c.id AND p.status = 'open' AND p.starts_at <= c.frozen_time ",
            "AND s.status IN ",
            scheduled_statuses!(),
            ") AS due_periods FROM test_clocks c"
        )
    };
}

/// The columns `PeriodRow` reads.
macro_rules! period_columns {
    () => {
        "subscription_id, period_index, starts_at, ends_at, amount, currency, status"
    };
}

/// The columns `ChargeRow` reads.
macro_rules! charge_columns {
    () => {
        "id, subscription_id, period_index, attempt, amount, currency, payment_method, idempotency_key, status, \
         intent_id, failure_code, decline_code, failure_message, attempted_at, completed_at"
    };
}

/// The columns `EventRow` reads.
macro_rules! subscription_event_columns {
    () => {
        "subscription_id, sequence, event_id, event_type, from_status, to_status, period_index, charge_id, cause, at"
    };
}

/// The columns `LedgerRow` reads.
macro_rules! ledger_columns {
    () => {
        "charge_id, creator_id, subscription_id, period_index, currency, gross, fee, net, charged_at, settlement_id"
    };
}

/// The columns `SettlementRow` reads.
macro_rules! settlement_columns {
    () => {
        "id, creator_id, currency, window_start, window_end, charges, gross, fee, net, created_at"
    };
}

fn count(what: &str, value: i32) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(what, &value.to_string()))
}

pub(crate) fn money(amount: i64, currency: &str) -> Result<Money> {
    let currency = Currency::parse(currency).map_err(|_| corrupt("currency", currency))?;
    Money::new(amount, currency).map_err(|_| corrupt("amount", &amount.to_string()))
}

fn subscription_status(raw: &str) -> Result<SubscriptionStatus> {
    SubscriptionStatus::parse(raw).map_err(|_| corrupt("subscription status", raw))
}

fn interval(unit: &str, count_value: i32) -> Result<PlanInterval> {
    let unit = IntervalUnit::parse(unit).map_err(|_| corrupt("interval unit", unit))?;
    Ok(PlanInterval::from_trusted(unit, count("interval count", count_value)?))
}

/// An `i32` column for a count or index the store writes.
pub(crate) fn column(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The key the provider deduplicates an attempt on: the subscription, the
/// period and the attempt, so a resumed attempt sends the same key and a
/// new attempt (after a decline, with a new payment method) a new one.
pub(crate) fn idempotency_key(subscription: &SubscriptionId, period_index: u32, attempt: u32) -> String {
    format!("{subscription}-period-{period_index}-attempt-{attempt}")
}

#[derive(sqlx::FromRow)]
pub(crate) struct CreatorRow {
    id: String,
    name: String,
    fee_bps: i32,
    settlement_interval: String,
    settlement_delay_days: i32,
    created_at: DateTime<Utc>,
}

impl TryFrom<CreatorRow> for Creator {
    type Error = StoreError;

    fn try_from(row: CreatorRow) -> Result<Self> {
        let interval = SettlementInterval::parse(&row.settlement_interval)
            .map_err(|_| corrupt("settlement interval", &row.settlement_interval))?;
        let delay_days = u16::try_from(row.settlement_delay_days)
            .map_err(|_| corrupt("settlement delay", &row.settlement_delay_days.to_string()))?;
        Ok(Creator {
            fee_bps: FeeBps::parse(i64::from(row.fee_bps)).map_err(|_| corrupt("fee_bps", &row.fee_bps.to_string()))?,
            settlement: SettlementSchedule { interval, delay_days },
            id: CreatorId::from_trusted(row.id),
            name: row.name,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PlanRow {
    id: String,
    creator_id: String,
    name: String,
    interval_unit: String,
    interval_count: i32,
    trial_days: i32,
    on_dunning_exhausted: String,
    price_version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    amount: i64,
    currency: String,
}

impl TryFrom<PlanRow> for Plan {
    type Error = StoreError;

    fn try_from(row: PlanRow) -> Result<Self> {
        Ok(Plan {
            price: money(row.amount, &row.currency)?,
            price_version: count("price version", row.price_version)?,
            interval: interval(&row.interval_unit, row.interval_count)?,
            trial_days: count("trial days", row.trial_days)?,
            on_dunning_exhausted: DunningExhausted::parse(&row.on_dunning_exhausted)
                .map_err(|_| corrupt("on_dunning_exhausted", &row.on_dunning_exhausted))?,
            id: PlanId::from_trusted(row.id),
            creator_id: CreatorId::from_trusted(row.creator_id),
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PlanPriceRow {
    version: i32,
    amount: i64,
    currency: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<PlanPriceRow> for PlanPrice {
    type Error = StoreError;

    fn try_from(row: PlanPriceRow) -> Result<Self> {
        Ok(PlanPrice {
            version: count("price version", row.version)?,
            price: money(row.amount, &row.currency)?,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TestClockRow {
    id: String,
    frozen_time: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    due_periods: i64,
}

impl From<TestClockRow> for TestClock {
    fn from(row: TestClockRow) -> Self {
        TestClock {
            id: TestClockId::from_trusted(row.id),
            frozen_time: row.frozen_time,
            created_at: row.created_at,
            updated_at: row.updated_at,
            due_periods: row.due_periods,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    id: String,
    creator_id: String,
    plan_id: String,
    price_version: i32,
    email: String,
    name: Option<String>,
    status: String,
    payment_method: String,
    test_clock_id: Option<String>,
    started_at: DateTime<Utc>,
    anchor: DateTime<Utc>,
    current_period_index: i32,
    current_period_start: DateTime<Utc>,
    current_period_end: DateTime<Utc>,
    cancel_at_period_end: bool,
    canceled_at: Option<DateTime<Utc>>,
    past_due_since: Option<DateTime<Utc>>,
    paused_at: Option<DateTime<Utc>>,
    resumes_at: Option<DateTime<Utc>>,
    last_sequence: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    interval_unit: String,
    interval_count: i32,
    amount: i64,
    currency: String,
    frozen_time: Option<DateTime<Utc>>,
}

/// A subscription read inside a write, with the time on its clock.
pub(crate) struct Clocked {
    pub(crate) subscription: Subscription,
    /// The test clock's time, or the caller's `now`.
    pub(crate) at: DateTime<Utc>,
}

impl SubscriptionRow {
    /// The subscription, and its test clock's time when it has one.
    pub(crate) fn into_parts(self) -> Result<(Subscription, Option<DateTime<Utc>>)> {
        let index = count("current period index", self.current_period_index)?;
        let has_trial = self.anchor > self.started_at;
        let subscription = Subscription {
            status: subscription_status(&self.status)?,
            price: money(self.amount, &self.currency)?,
            price_version: count("price version", self.price_version)?,
            interval: interval(&self.interval_unit, self.interval_count)?,
            current_period: Period {
                index,
                start: self.current_period_start,
                end: self.current_period_end,
                trial: has_trial && index == 0,
            },
            sequence: count("sequence", self.last_sequence)?,
            id: SubscriptionId::from_trusted(self.id),
            creator_id: CreatorId::from_trusted(self.creator_id),
            plan_id: PlanId::from_trusted(self.plan_id),
            email: Email::from_trusted(self.email),
            name: self.name.map(CustomerName::from_trusted),
            payment_method: self.payment_method,
            test_clock: self.test_clock_id.map(TestClockId::from_trusted),
            started_at: self.started_at,
            anchor: self.anchor,
            cancel_at_period_end: self.cancel_at_period_end,
            canceled_at: self.canceled_at,
            past_due_since: self.past_due_since,
            paused_at: self.paused_at,
            resumes_at: self.resumes_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        Ok((subscription, self.frozen_time))
    }

    pub(crate) fn clocked(self, now: DateTime<Utc>) -> Result<Clocked> {
        let (subscription, frozen_time) = self.into_parts()?;
        Ok(Clocked {
            subscription,
            at: frozen_time.unwrap_or(now),
        })
    }
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;

    fn try_from(row: SubscriptionRow) -> Result<Self> {
        Ok(row.into_parts()?.0)
    }
}

impl PeriodStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Void => "void",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        match raw {
            "open" => Ok(Self::Open),
            "paid" => Ok(Self::Paid),
            "void" => Ok(Self::Void),
            _ => Err(corrupt("period status", raw)),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PeriodRow {
    subscription_id: String,
    period_index: i32,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    amount: i64,
    currency: String,
    status: String,
}

impl TryFrom<PeriodRow> for SubscriptionPeriod {
    type Error = StoreError;

    fn try_from(row: PeriodRow) -> Result<Self> {
        Ok(SubscriptionPeriod {
            index: count("period index", row.period_index)?,
            amount: money(row.amount, &row.currency)?,
            status: PeriodStatus::parse(&row.status)?,
            subscription_id: SubscriptionId::from_trusted(row.subscription_id),
            start: row.starts_at,
            end: row.ends_at,
        })
    }
}

impl ChargeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Duplicate => "duplicate",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        match raw {
            "pending" => Ok(Self::Pending),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "duplicate" => Ok(Self::Duplicate),
            _ => Err(corrupt("charge status", raw)),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ChargeRow {
    id: String,
    subscription_id: String,
    period_index: i32,
    attempt: i32,
    amount: i64,
    currency: String,
    payment_method: String,
    idempotency_key: String,
    status: String,
    intent_id: Option<String>,
    failure_code: Option<String>,
    decline_code: Option<String>,
    failure_message: Option<String>,
    attempted_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<ChargeRow> for Charge {
    type Error = StoreError;

    fn try_from(row: ChargeRow) -> Result<Self> {
        Ok(Charge {
            period_index: count("period index", row.period_index)?,
            attempt: count("attempt", row.attempt)?,
            amount: money(row.amount, &row.currency)?,
            status: ChargeStatus::parse(&row.status)?,
            id: ChargeId::from_trusted(row.id),
            subscription_id: SubscriptionId::from_trusted(row.subscription_id),
            payment_method: row.payment_method,
            idempotency_key: row.idempotency_key,
            intent_id: row.intent_id,
            failure_code: row.failure_code,
            decline_code: row.decline_code,
            failure_message: row.failure_message,
            attempted_at: row.attempted_at,
            completed_at: row.completed_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    subscription_id: String,
    sequence: i32,
    event_id: String,
    event_type: String,
    from_status: Option<String>,
    to_status: String,
    period_index: Option<i32>,
    charge_id: Option<String>,
    cause: String,
    at: DateTime<Utc>,
}

impl TryFrom<EventRow> for SubscriptionEventRecord {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(SubscriptionEventRecord {
            sequence: count("sequence", row.sequence)?,
            event: SubscriptionEvent::parse(&row.event_type).ok_or_else(|| corrupt("event type", &row.event_type))?,
            from_status: row.from_status.as_deref().map(subscription_status).transpose()?,
            to_status: subscription_status(&row.to_status)?,
            period_index: row.period_index.map(|i| count("period index", i)).transpose()?,
            subscription_id: SubscriptionId::from_trusted(row.subscription_id),
            event_id: row.event_id,
            charge_id: row.charge_id.map(ChargeId::from_trusted),
            cause: row.cause,
            at: row.at,
        })
    }
}

fn split(gross: i64, fee: i64, net: i64, currency: &str) -> Result<FeeSplit> {
    if fee + net != gross {
        return Err(corrupt("fee split", &format!("{fee} + {net} != {gross}")));
    }
    Ok(FeeSplit {
        gross: money(gross, currency)?,
        fee: money(fee, currency)?,
        net: money(net, currency)?,
    })
}

#[derive(sqlx::FromRow)]
pub(crate) struct LedgerRow {
    charge_id: String,
    creator_id: String,
    subscription_id: String,
    period_index: i32,
    currency: String,
    gross: i64,
    fee: i64,
    net: i64,
    charged_at: DateTime<Utc>,
    settlement_id: Option<String>,
}

impl TryFrom<LedgerRow> for LedgerEntry {
    type Error = StoreError;

    fn try_from(row: LedgerRow) -> Result<Self> {
        Ok(LedgerEntry {
            split: split(row.gross, row.fee, row.net, &row.currency)?,
            period_index: count("period index", row.period_index)?,
            charge_id: ChargeId::from_trusted(row.charge_id),
            creator_id: CreatorId::from_trusted(row.creator_id),
            subscription_id: SubscriptionId::from_trusted(row.subscription_id),
            charged_at: row.charged_at,
            settlement_id: row.settlement_id.map(SettlementId::from_trusted),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SettlementRow {
    id: String,
    creator_id: String,
    currency: String,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    charges: i32,
    gross: i64,
    fee: i64,
    net: i64,
    created_at: DateTime<Utc>,
}

impl TryFrom<SettlementRow> for SettlementBatch {
    type Error = StoreError;

    fn try_from(row: SettlementRow) -> Result<Self> {
        Ok(SettlementBatch {
            totals: split(row.gross, row.fee, row.net, &row.currency)?,
            charges: count("settled charges", row.charges)?,
            id: SettlementId::from_trusted(row.id),
            creator_id: CreatorId::from_trusted(row.creator_id),
            window: SettlementWindow {
                start: row.window_start,
                end: row.window_end,
            },
            created_at: row.created_at,
        })
    }
}

/// What one timeline event records besides the subscription itself.
pub(crate) struct TimelineEvent<'a> {
    pub(crate) event: SubscriptionEvent,
    pub(crate) from_status: Option<SubscriptionStatus>,
    pub(crate) period_index: Option<u32>,
    pub(crate) charge: Option<&'a Charge>,
    pub(crate) cause: &'a str,
    /// On the subscription's clock.
    pub(crate) at: DateTime<Utc>,
}

fn money_json(money: Money) -> serde_json::Value {
    serde_json::json!({ "amount": money.amount(), "currency": money.currency().code() })
}

/// The outbox payload of a subscription event: the subscription as the
/// event left it, the event's `sequence`, and the charge it is about.
pub(crate) fn event_payload(subscription: &Subscription, sequence: u32, event: &TimelineEvent<'_>) -> String {
    let charge = event.charge.map(|charge| {
        serde_json::json!({
            "id": charge.id,
            "period_index": charge.period_index,
            "attempt": charge.attempt,
            "amount": money_json(charge.amount),
            "status": charge.status,
            "intent_id": charge.intent_id,
            "failure_code": charge.failure_code,
            "decline_code": charge.decline_code,
        })
    });
    serde_json::json!({
        "sequence": sequence,
        "at": event.at,
        "cause": event.cause,
        "previous_status": event.from_status,
        "period_index": event.period_index,
        "subscription": {
            "id": subscription.id,
            "status": subscription.status,
            "creator_id": subscription.creator_id,
            "plan_id": subscription.plan_id,
            "price_version": subscription.price_version,
            "price": money_json(subscription.price),
            "current_period_index": subscription.current_period.index,
            "current_period_start": subscription.current_period.start,
            "current_period_end": subscription.current_period.end,
            "cancel_at_period_end": subscription.cancel_at_period_end,
            "test_clock": subscription.test_clock,
        },
        "charge": charge,
    })
    .to_string()
}

/// The outbox payload of `settlement.created`.
pub(crate) fn settlement_payload(batch: &SettlementBatch) -> String {
    serde_json::json!({
        "id": batch.id,
        "creator_id": batch.creator_id,
        "window_start": batch.window.start,
        "window_end": batch.window.end,
        "charges": batch.charges,
        "gross": money_json(batch.totals.gross),
        "fee": money_json(batch.totals.fee),
        "net": money_json(batch.totals.net),
    })
    .to_string()
}
