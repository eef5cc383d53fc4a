//! Finance's check (`holdfast subscriptions audit`): recomputes, from each
//! subscription's stored anchor and interval, the periods that should
//! exist on its clock, and compares them with the periods and charges
//! recorded. An under-charge is a period owed and never charged (missing,
//! marked paid without a succeeded charge, charged less than it owed, or
//! due for over a day without an attempt); a double charge is money taken
//! twice for one period (two succeeded charges, or a charge the provider
//! completed after the period was paid, marked `duplicate` for a refund).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use holdfast_domain::SubscriptionId;
use holdfast_store::{
    Charge, ChargeStatus, PeriodStatus, SharedStore, StoreError, Subscription, SubscriptionFilter, SubscriptionPeriod,
};
use serde::Serialize;

/// Subscriptions read per page.
const PAGE: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    UnderCharge,
    DoubleCharge,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub subscription_id: SubscriptionId,
    pub period_index: u32,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub subscriptions: u64,
    pub periods: u64,
    pub succeeded_charges: u64,
    pub findings: Vec<Finding>,
}

impl AuditReport {
    pub fn under_charges(&self) -> usize {
        self.count(FindingKind::UnderCharge)
    }

    pub fn double_charges(&self) -> usize {
        self.count(FindingKind::DoubleCharge)
    }

    fn count(&self, kind: FindingKind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }
}

/// Audits every subscription's periods that start at or after `since`
/// (all of them without it), `now` being the wall clock.
pub async fn run(
    store: &SharedStore,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<AuditReport, StoreError> {
    let subscriptions = store.subscriptions();
    let mut report = AuditReport::default();
    let mut clocks = BTreeMap::new();
    let mut after = None;
    loop {
        let page = subscriptions
            .list_subscriptions(&SubscriptionFilter {
                creator_id: None,
                status: None,
                after: after.clone(),
                limit: PAGE,
            })
            .await?;
        for subscription in &page {
            let clock_now = match &subscription.test_clock {
                None => now,
                Some(clock) => match clocks.get(clock) {
                    Some(time) => *time,
                    None => {
                        let time = subscriptions.test_clock(clock).await?.map_or(now, |c| c.frozen_time);
                        clocks.insert(clock.clone(), time);
                        time
                    }
                },
            };
            let periods = subscriptions.periods(&subscription.id).await?;
            let charges = subscriptions.charges(&subscription.id).await?;
            report.subscriptions += 1;
            report.periods += periods.len() as u64;
            report.succeeded_charges += charges.iter().filter(|c| c.status == ChargeStatus::Succeeded).count() as u64;
            report
                .findings
                .extend(audit_subscription(subscription, &periods, &charges, clock_now, since));
        }
        if page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            break;
        }
        after = page.last().map(|subscription| subscription.id.clone());
    }
    Ok(report)
}

/// The findings for one subscription, its clock reading `clock_now`.
pub fn audit_subscription(
    subscription: &Subscription,
    periods: &[SubscriptionPeriod],
    charges: &[Charge],
    clock_now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> Vec<Finding> {
    let in_scope = |start: DateTime<Utc>| since.is_none_or(|since| start >= since);
    let finding = |kind, period_index, detail: String| Finding {
        kind,
        subscription_id: subscription.id.clone(),
        period_index,
        detail,
    };
    let mut findings = Vec::new();
    for period in periods.iter().filter(|p| in_scope(p.start)) {
        let of_period: Vec<&Charge> = charges.iter().filter(|c| c.period_index == period.index).collect();
        let succeeded: Vec<&&Charge> = of_period
            .iter()
            .filter(|c| c.status == ChargeStatus::Succeeded)
            .collect();
        let duplicates = of_period.iter().filter(|c| c.status == ChargeStatus::Duplicate).count();
        let owed = period.amount.amount() > 0;
        if period.status == PeriodStatus::Paid && owed && succeeded.is_empty() {
            findings.push(finding(
                FindingKind::UnderCharge,
                period.index,
                format!("marked paid, but no succeeded charge of {} exists", period.amount),
            ));
        }
        if succeeded.len() > 1 {
            findings.push(finding(
                FindingKind::DoubleCharge,
                period.index,
                format!("{} succeeded charges", succeeded.len()),
            ));
        }
        if duplicates > 0 {
            findings.push(finding(
                FindingKind::DoubleCharge,
                period.index,
                format!("{duplicates} charge(s) taken after the period was paid, to be refunded"),
            ));
        }
        if let [charge] = succeeded.as_slice()
            && charge.amount.amount() < period.amount.amount()
        {
            findings.push(finding(
                FindingKind::UnderCharge,
                period.index,
                format!("charged {}, owed {}", charge.amount, period.amount),
            ));
        }
        let overdue = period.start + TimeDelta::days(1) <= clock_now;
        if period.status == PeriodStatus::Open
            && owed
            && overdue
            && of_period.is_empty()
            && subscription.status.renews()
        {
            findings.push(finding(
                FindingKind::UnderCharge,
                period.index,
                format!("due since {} with no charge attempt", period.start),
            ));
        }
    }
    findings.extend(missing_periods(subscription, periods, clock_now, since));
    findings
}

/// Periods a subscription in good standing should have opened by
/// `clock_now` that have no row: those after its last period up to the one
/// `clock_now` falls in, unless the last is still open (the next period
/// opens only once it is paid). Gaps before the last row are periods a
/// pause skipped.
fn missing_periods(
    subscription: &Subscription,
    periods: &[SubscriptionPeriod],
    clock_now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> Vec<Finding> {
    if !subscription.status.renews() {
        return Vec::new();
    }
    let schedule = subscription.schedule();
    let (Some(current), Some(last)) = (schedule.period_at(clock_now), periods.iter().max_by_key(|p| p.index)) else {
        return Vec::new();
    };
    if last.status == PeriodStatus::Open {
        return Vec::new();
    }
    (last.index.saturating_add(1)..=current.index)
        .filter_map(|index| schedule.period(index))
        .filter(|period| since.is_none_or(|since| period.start >= since))
        .map(|period| Finding {
            kind: FindingKind::UnderCharge,
            subscription_id: subscription.id.clone(),
            period_index: period.index,
            detail: format!("due at {} and never opened", period.start),
        })
        .collect()
}
