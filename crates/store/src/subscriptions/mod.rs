//! Creator subscriptions: creators and their plans (with versioned prices),
//! subscriptions and their billing periods, one row per charge attempt, the
//! timeline, the ledger and settlement batches, and test clocks.
//!
//! What keeps renewals right, all in the database:
//!
//! - **One succeeded charge per period**, by a unique index over
//!   `(subscription, period_index) WHERE status = 'succeeded'`; the
//!   provider's idempotency key is only the first line of defence, since
//!   payment work can outlive the provider's key retention.
//! - **Every write that decides something locks the subscription first**
//!   (PostgreSQL: `FOR UPDATE`; SQLite: its one writer), so a cancel, a
//!   charge attempt and its outcome happen one after another and each sees
//!   what the one before did. Recording an attempt re-checks the status in
//!   that transaction: nothing is charged after a cancel or while paused.
//! - **A crash mid-charge resumes the same attempt**: an attempt is written
//!   (`pending`) before the provider is called, and the next try finds it
//!   and sends the same idempotency key, so the provider makes one intent.
//! - **Catch-up renewals without a leader**: [`Subscriptions::due_charges`]
//!   lists open periods whose start has passed, however long ago, on
//!   whatever node asks. Paying a period opens the next one.
//! - **Every status change writes its timeline row and its outbox event in
//!   its transaction**, numbered per subscription (`sequence`).
//!
//! Times of a subscription's life are on its clock: a test clock's frozen
//! time when it has one, else the `now` the caller passes. Row timestamps
//! (`created_at`, `updated_at`) and outbox events are always wall-clock.
//!
//! The SQL is the same on both backends ([`impl_subscriptions!`], in
//! `sql.rs`); what differs is passed in: the row lock (`FOR UPDATE` on
//! PostgreSQL, nothing under SQLite's one writer) and the type of a
//! transaction's connection.

#[macro_use]
pub(crate) mod rows;
#[macro_use]
mod sql;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use holdfast_domain::{
    BillingSchedule, ChargeId, CreatorId, CustomerName, DunningExhausted, Email, FeeBps, FeeSplit, Money, Period,
    PlanId, PlanInterval, SettlementId, SettlementSchedule, SettlementWindow, SubscriptionEvent, SubscriptionId,
    SubscriptionStatus, TestClockId,
};
use serde::Serialize;

use crate::Result;
use crate::queue::{FailOutcome, JobId, JobTemplate, LeaseToken};

#[derive(Debug, Clone, PartialEq)]
pub struct NewCreator {
    pub id: CreatorId,
    pub name: String,
    pub fee_bps: FeeBps,
    pub settlement: SettlementSchedule,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Creator {
    pub id: CreatorId,
    pub name: String,
    pub fee_bps: FeeBps,
    pub settlement: SettlementSchedule,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewPlan {
    pub id: PlanId,
    pub creator_id: CreatorId,
    pub name: String,
    /// The first price version.
    pub price: Money,
    pub interval: PlanInterval,
    pub trial_days: u32,
    pub on_dunning_exhausted: DunningExhausted,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: PlanId,
    pub creator_id: CreatorId,
    pub name: String,
    /// The current price: what new subscriptions pay.
    pub price: Money,
    pub price_version: u32,
    pub interval: PlanInterval,
    pub trial_days: u32,
    pub on_dunning_exhausted: DunningExhausted,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One version of a plan's price.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanPrice {
    pub version: u32,
    pub price: Money,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestClock {
    pub id: TestClockId,
    pub frozen_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Periods of the clock's subscriptions that are due at its time and
    /// not settled yet (unpaid, or with an attempt in flight): the clock is
    /// still `advancing` while there are any.
    pub due_periods: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewSubscription {
    pub id: SubscriptionId,
    pub plan_id: PlanId,
    pub email: Email,
    pub name: Option<CustomerName>,
    /// The provider's payment method (`pm_…`), charged off-session.
    pub payment_method: String,
    /// The clock the subscription lives on; it starts at the clock's time.
    pub test_clock: Option<TestClockId>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub creator_id: CreatorId,
    pub plan_id: PlanId,
    /// The plan's price version this subscription pays; later price
    /// changes do not touch it.
    pub price_version: u32,
    pub price: Money,
    pub interval: PlanInterval,
    pub email: Email,
    pub name: Option<CustomerName>,
    pub status: SubscriptionStatus,
    pub payment_method: String,
    pub test_clock: Option<TestClockId>,
    pub started_at: DateTime<Utc>,
    /// Where paid periods are counted from: the end of the trial, or the
    /// start.
    pub anchor: DateTime<Utc>,
    pub current_period: Period,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub past_due_since: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub resumes_at: Option<DateTime<Utc>>,
    /// The sequence of the last event in its timeline.
    pub sequence: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    pub fn schedule(&self) -> BillingSchedule {
        BillingSchedule::from_stored(self.started_at, self.anchor, self.interval)
    }
}

/// Which subscriptions to list: oldest first, after the cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    pub creator_id: Option<CreatorId>,
    pub status: Option<SubscriptionStatus>,
    /// The last id of the previous page.
    pub after: Option<SubscriptionId>,
    pub limit: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodStatus {
    /// Owed and not paid; charged from its start on.
    Open,
    /// Its charge succeeded, or nothing was owed (a trial).
    Paid,
    /// Given up unpaid: the subscription was canceled or paused.
    Void,
}

/// One billing period as stored: what it owes and whether it was paid.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionPeriod {
    pub subscription_id: SubscriptionId,
    pub index: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub amount: Money,
    pub status: PeriodStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Sent (or about to be sent) to the provider; outcome not known yet.
    Pending,
    Succeeded,
    Failed,
    /// The provider took the money for a period another charge had already
    /// paid: to be refunded, never counted.
    Duplicate,
}

/// One attempt to charge one period.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub id: ChargeId,
    pub subscription_id: SubscriptionId,
    pub period_index: u32,
    /// 1 for the period's first attempt, then 2, 3, …
    pub attempt: u32,
    pub amount: Money,
    pub payment_method: String,
    /// Sent to the provider: derived from the subscription, the period and
    /// the attempt, so a resumed attempt sends the same key.
    pub idempotency_key: String,
    pub status: ChargeStatus,
    pub intent_id: Option<String>,
    pub failure_code: Option<String>,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub attempted_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A period the renewal scheduler should charge now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCharge {
    pub subscription_id: SubscriptionId,
    /// The payment queue's group: one creator's charges run in order.
    pub creator_id: CreatorId,
    pub period_index: u32,
    pub due_at: DateTime<Utc>,
}

/// What [`Subscriptions::begin_charge`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeStart {
    /// Charge this attempt at the provider, with its idempotency key.
    /// `resumed`: the attempt was already pending (a worker died mid-charge,
    /// or its lease ran out), so this is the same intent again.
    Charge { charge: Box<Charge>, resumed: bool },
    /// Nothing is charged in this status (canceled, paused). A subscription
    /// that was to cancel at its period's end is canceled by this call.
    Refused(SubscriptionStatus),
    /// The period is paid or void already.
    Settled(PeriodStatus),
    /// The period has not started yet on the subscription's clock.
    NotDue(DateTime<Utc>),
}

/// A charge's failure, as the provider reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeFailure {
    pub intent_id: Option<String>,
    /// `card_declined`, …
    pub code: String,
    /// The issuer's reason, e.g. `insufficient_funds` or
    /// `do_not_honor`.
    pub decline_code: Option<String>,
    pub message: String,
}

/// What recording a charge's outcome did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeRecorded {
    /// Recorded; the subscription as it is now.
    Recorded(Box<Subscription>),
    /// This outcome was recorded before (a replayed webhook, a retried job):
    /// nothing changed.
    Replayed,
    /// The money was taken, but another charge had already paid the period:
    /// this charge is marked `duplicate`, to be refunded.
    Duplicate,
}

/// A status change asked for by the API or the dunning worker. Moving into
/// `active` is only a resume (from `paused`) here; otherwise only a paid
/// charge activates a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionChange {
    pub id: SubscriptionId,
    pub to: SubscriptionStatus,
    pub cause: String,
    /// When a pause ends by itself (`paused` only).
    pub resumes_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// One entry of a subscription's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionEventRecord {
    pub subscription_id: SubscriptionId,
    /// 1, 2, 3, … with no gaps: a consumer that sees a gap missed an event.
    pub sequence: u32,
    /// The outbox event's id (`evt_…`), the `webhook-id` of its deliveries.
    pub event_id: String,
    pub event: SubscriptionEvent,
    pub from_status: Option<SubscriptionStatus>,
    pub to_status: SubscriptionStatus,
    pub period_index: Option<u32>,
    pub charge_id: Option<ChargeId>,
    pub cause: String,
    pub at: DateTime<Utc>,
}

/// A succeeded charge in the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub charge_id: ChargeId,
    pub creator_id: CreatorId,
    pub subscription_id: SubscriptionId,
    pub period_index: u32,
    pub split: FeeSplit,
    pub charged_at: DateTime<Utc>,
    pub settlement_id: Option<SettlementId>,
}

/// A creator's payout: the ledger entries of one window, in one currency.
#[derive(Debug, Clone, PartialEq)]
pub struct SettlementBatch {
    pub id: SettlementId,
    pub creator_id: CreatorId,
    pub window: SettlementWindow,
    pub charges: u32,
    pub totals: FeeSplit,
    pub created_at: DateTime<Utc>,
}

/// The dedup key of a period's payment job: one job per period while it
/// lives in the queue (dead letters included), however many schedulers
/// find the period due.
pub fn payment_job_key(subscription: &SubscriptionId, period_index: u32) -> String {
    format!("{subscription}:{period_index}")
}

/// A charge attempt that failed, with the job whose receive it was.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    pub charge: ChargeId,
    pub failure: ChargeFailure,
    pub job: JobId,
    pub lease: LeaseToken,
    /// When the job is to be received again; `None` for a failure no retry
    /// can mend (a hard decline): the job is dead-lettered at once.
    pub retry_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// What recording a failed attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFailed {
    /// The job's fate: retrying, dead-lettered, or no longer ours.
    pub job: FailOutcome,
    /// The subscription as it is now (`past_due`, or `canceled` for a first
    /// charge, when the job was dead-lettered).
    pub subscription: Box<Subscription>,
}

/// A period of a test clock's subscription whose attempts all failed:
/// waiting for its next dunning retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedPeriod {
    pub subscription_id: SubscriptionId,
    pub period_index: u32,
    /// The last attempt's number: how many have failed.
    pub attempts: u32,
    /// When the last attempt failed, on the clock.
    pub failed_at: DateTime<Utc>,
}

#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// `Conflict` if the id exists.
    async fn create_creator(&self, creator: &NewCreator) -> Result<Creator>;
    async fn creator(&self, id: &CreatorId) -> Result<Option<Creator>>;

    /// `NotFound` if the creator is unknown.
    async fn create_plan(&self, plan: &NewPlan) -> Result<Plan>;
    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>>;
    /// Adds a price version that new subscriptions get; existing ones keep
    /// theirs.
    async fn change_price(&self, id: &PlanId, price: Money, now: DateTime<Utc>) -> Result<Plan>;
    /// Every version of the plan's price, oldest first.
    async fn plan_prices(&self, id: &PlanId) -> Result<Vec<PlanPrice>>;

    async fn create_test_clock(
        &self,
        id: &TestClockId,
        frozen_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<TestClock>;
    async fn test_clock(&self, id: &TestClockId) -> Result<Option<TestClock>>;
    /// Moves the clock to `frozen_time`; `Conflict` if that is before its
    /// time (a clock never goes back), `NotFound` if unknown.
    async fn advance_test_clock(
        &self,
        id: &TestClockId,
        frozen_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<TestClock>;

    /// Starts a subscription on the plan's current price: `trialing` with a
    /// paid trial period and the first paid period open at the trial's end,
    /// or `incomplete` with its first period open and due at once. Writes
    /// `subscription.created`. `NotFound` if the plan or clock is unknown.
    async fn create_subscription(&self, subscription: &NewSubscription) -> Result<Subscription>;
    async fn subscription(&self, id: &SubscriptionId) -> Result<Option<Subscription>>;
    async fn list_subscriptions(&self, filter: &SubscriptionFilter) -> Result<Vec<Subscription>>;
    /// The timeline, in sequence order.
    async fn subscription_events(&self, id: &SubscriptionId) -> Result<Vec<SubscriptionEventRecord>>;
    /// Every period opened so far, in order.
    async fn periods(&self, id: &SubscriptionId) -> Result<Vec<SubscriptionPeriod>>;
    /// Every charge attempt, by period and attempt.
    async fn charges(&self, id: &SubscriptionId) -> Result<Vec<Charge>>;

    /// Changes the status through `SubscriptionStatus::transition`, with
    /// what the new status implies: canceling or pausing voids the open
    /// periods, resuming opens the next one. `InvalidSubscriptionTransition`
    /// if the change is not allowed.
    async fn transition_subscription(&self, change: &SubscriptionChange) -> Result<Subscription>;
    /// Sets or clears "cancel when the current period ends": the next
    /// period is then not charged, and the subscription is canceled when it
    /// comes due.
    async fn set_cancel_at_period_end(
        &self,
        id: &SubscriptionId,
        cancel: bool,
        now: DateTime<Utc>,
    ) -> Result<Subscription>;
    /// The payment method later attempts charge. `Conflict` once canceled.
    async fn update_payment_method(
        &self,
        id: &SubscriptionId,
        payment_method: &str,
        now: DateTime<Utc>,
    ) -> Result<Subscription>;

    /// Open periods that are due on their subscription's clock (`now`, or
    /// the test clock's time) of subscriptions the scheduler charges
    /// (`incomplete`, `trialing`, `active`), oldest first. However long ago
    /// a period came due, it is listed until it is paid or void.
    async fn due_charges(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueCharge>>;
    /// Decides, with the subscription locked, whether to charge the period
    /// now, and records the attempt before any money moves (see
    /// [`ChargeStart`]).
    async fn begin_charge(&self, id: &SubscriptionId, period_index: u32, now: DateTime<Utc>) -> Result<ChargeStart>;
    /// The provider took the money: the charge succeeds, its period is
    /// paid, the ledger gets its entry, the subscription becomes `active`
    /// (or stays so: `subscription.renewed`), its current period moves on
    /// and the next period opens, with the timeline and outbox rows, in
    /// one transaction.
    async fn record_charge_succeeded(
        &self,
        charge: &ChargeId,
        intent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ChargeRecorded>;
    /// The provider declined or failed the charge: recorded with
    /// `charge.failed`. The status is the dunning worker's to change.
    async fn record_charge_failed(
        &self,
        charge: &ChargeId,
        failure: &ChargeFailure,
        now: DateTime<Utc>,
    ) -> Result<ChargeRecorded>;

    /// The renewal scheduler's step: enqueues a payment job (queue and
    /// settings from `template`, grouped by creator, deduplicated by
    /// [`payment_job_key`]) for every period [`Self::due_charges`] would
    /// list that has no job yet, up to `limit`, and returns those it
    /// enqueued. Two schedulers racing enqueue each period once.
    async fn schedule_due_charges(
        &self,
        template: &JobTemplate,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueCharge>>;
    /// Records a failed attempt (`charge.failed`, unless the provider's
    /// event recorded it first) and the job's fate in one transaction: it
    /// is retried at `retry_at`, or dead-lettered, and a dead-lettered job
    /// moves the subscription to `past_due` (a first charge that never
    /// paid: `canceled`).
    async fn record_failed_attempt(&self, attempt: &FailedAttempt) -> Result<AttemptFailed>;
    /// Open periods of the clock's subscriptions in good standing (the
    /// statuses the scheduler charges) whose attempts so far all failed.
    async fn failed_periods(&self, clock: &TestClockId) -> Result<Vec<FailedPeriod>>;
    /// Creators with unsettled ledger entries, each with the test clocks
    /// their entries' subscriptions live on (`None`: the wall clock).
    async fn unsettled_creators(&self, limit: i64) -> Result<Vec<(CreatorId, Vec<Option<TestClockId>>)>>;

    /// A creator's ledger, in charge order.
    async fn ledger_entries(&self, creator: &CreatorId) -> Result<Vec<LedgerEntry>>;
    /// Puts every unsettled entry whose window has waited out the creator's
    /// delay at `now` into batches, one per window and currency, each with
    /// its `settlement.created` event. Settling again settles nothing twice.
    async fn settle_due(&self, creator: &CreatorId, now: DateTime<Utc>) -> Result<Vec<SettlementBatch>>;
    /// A creator's batches, newest window first.
    async fn settlements(&self, creator: &CreatorId) -> Result<Vec<SettlementBatch>>;
}
