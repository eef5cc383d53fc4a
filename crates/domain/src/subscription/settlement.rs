//! Where a charge's money goes: the platform's fee and the creator's net,
//! and when the creator is paid out (a settlement schedule of daily, weekly
//! or monthly windows, each paid `delay_days` after it closes).

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Utc};

use crate::error::FieldError;
use crate::money::Money;

/// The platform's fee in basis points of each charge: 0 to 10,000 (100 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct FeeBps(u16);

impl FeeBps {
    pub const MAX: u16 = 10_000;

    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        u16::try_from(raw)
            .ok()
            .filter(|bps| *bps <= Self::MAX)
            .map(Self)
            .ok_or_else(|| FieldError::new("", "must be an integer number of basis points from 0 to 10000"))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

/// One charge split between the platform and the creator, in minor units:
/// `fee + net == gross` always, so no rounding ever loses or makes a cent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSplit {
    pub gross: Money,
    pub fee: Money,
    pub net: Money,
}

impl FeeSplit {
    /// The fee is `gross × bps / 10,000` rounded to the nearest minor unit,
    /// halves up; the creator gets the rest.
    pub fn of(gross: Money, fee_bps: FeeBps) -> Self {
        // gross ≤ MAX_AMOUNT (10^13) and bps ≤ 10^4, so the product fits an
        // i64 with room to spare, and the fee is never more than the gross.
        let scaled = gross.amount() * i64::from(fee_bps.get());
        let fee_amount = (scaled + 5_000) / 10_000;
        let currency = gross.currency();
        let minor = |amount| Money::new(amount, currency).unwrap_or(Money::zero(currency));
        Self {
            gross,
            fee: minor(fee_amount),
            net: minor(gross.amount() - fee_amount),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementInterval {
    /// UTC days.
    Daily,
    /// ISO weeks, Monday to Monday, UTC.
    Weekly,
    /// Calendar months, UTC.
    Monthly,
}

impl SettlementInterval {
    pub const ALL: [SettlementInterval; 3] = [Self::Daily, Self::Weekly, Self::Monthly];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|interval| interval.as_str() == raw)
            .ok_or_else(|| FieldError::new("", "must be \"daily\", \"weekly\" or \"monthly\""))
    }
}

/// The charges a settlement batch covers: those made in `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SettlementWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// When a creator is paid: the charges of each window, `delay_days` after
/// the window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SettlementSchedule {
    pub interval: SettlementInterval,
    pub delay_days: u16,
}

impl Default for SettlementSchedule {
    /// Daily, two days after the day closes.
    fn default() -> Self {
        Self {
            interval: SettlementInterval::Daily,
            delay_days: 2,
        }
    }
}

impl SettlementSchedule {
    /// The longest delay a schedule may have.
    pub const MAX_DELAY_DAYS: u16 = 90;

    pub fn parse(interval: &str, delay_days: i64) -> Result<Self, crate::ValidationErrors> {
        let mut errors = crate::ValidationErrors::default();
        let interval = errors.collect("interval", SettlementInterval::parse(interval));
        let delay = u16::try_from(delay_days).ok().filter(|d| *d <= Self::MAX_DELAY_DAYS);
        if delay.is_none() {
            errors.push(FieldError::new(
                "delay_days",
                format!("must be an integer from 0 to {}", Self::MAX_DELAY_DAYS),
            ));
        }
        match (interval, delay) {
            (Some(interval), Some(delay_days)) => Ok(Self { interval, delay_days }),
            _ => Err(errors),
        }
    }

    fn delay(self) -> TimeDelta {
        TimeDelta::days(i64::from(self.delay_days))
    }

    /// The window a charge made at `at` belongs to.
    pub fn window_of(self, at: DateTime<Utc>) -> SettlementWindow {
        let day = at.date_naive();
        let (start, end) = match self.interval {
            SettlementInterval::Daily => (day, day.succ_opt()),
            SettlementInterval::Weekly => {
                let monday = day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday()));
                (monday, monday.checked_add_signed(TimeDelta::weeks(1)))
            }
            SettlementInterval::Monthly => {
                let first = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day);
                (first, first.checked_add_months(Months::new(1)))
            }
        };
        let midnight = |date: NaiveDate| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        SettlementWindow {
            start: midnight(start),
            end: end.map_or(DateTime::<Utc>::MAX_UTC, midnight),
        }
    }

    /// When the charges of `window` are paid out.
    pub fn settles_at(self, window: SettlementWindow) -> DateTime<Utc> {
        window
            .end
            .checked_add_signed(self.delay())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Every charge made before this instant is due for settlement at
    /// `now`: the start of the window that is still waiting out its delay.
    pub fn settleable_before(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let waiting = now.checked_sub_signed(self.delay()).unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.window_of(waiting).start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{Currency, MAX_AMOUNT};
    use proptest::prelude::*;

    fn usd(amount: i64) -> Money {
        Money::new(amount, Currency::USD).unwrap()
    }

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fees_round_to_the_nearest_cent_and_the_creator_gets_the_rest() {
        let split = |gross, bps| {
            let s = FeeSplit::of(usd(gross), FeeBps::parse(bps).unwrap());
            (s.fee.amount(), s.net.amount())
        };
        assert_eq!(split(1_000, 1_000), (100, 900));
        assert_eq!(split(999, 1_000), (100, 899), "99.9 rounds up");
        assert_eq!(split(994, 1_000), (99, 895), "99.4 rounds down");
        assert_eq!(split(995, 1_000), (100, 895), "a half rounds up");
        assert_eq!(split(1, 4_999), (0, 1));
        assert_eq!(split(1, 5_000), (1, 0));
        assert_eq!(split(1_000, 0), (0, 1_000));
        assert_eq!(split(1_000, 10_000), (1_000, 0));
        assert_eq!(split(0, 500), (0, 0));
        assert!(FeeBps::parse(10_001).is_err());
        assert!(FeeBps::parse(-1).is_err());
    }

    proptest! {
        #[test]
        fn a_split_never_loses_a_minor_unit(gross in 0..=MAX_AMOUNT, bps in 0..=10_000i64) {
            let split = FeeSplit::of(usd(gross), FeeBps::parse(bps).unwrap());
            prop_assert_eq!(split.fee.amount() + split.net.amount(), gross);
            prop_assert!(split.fee.amount() >= 0 && split.net.amount() >= 0);
            // Within half a minor unit of the exact fee.
            let exact = i128::from(gross) * i128::from(bps);
            prop_assert!((i128::from(split.fee.amount()) * 10_000 - exact).abs() <= 5_000);
            prop_assert_eq!(split.fee.currency(), Currency::USD);
        }
    }

    #[test]
    fn windows_are_utc_days_iso_weeks_and_calendar_months() {
        let schedule = |interval, delay_days| SettlementSchedule { interval, delay_days };
        let charge = at("2024-02-29T17:45:00Z");
        let daily = schedule(SettlementInterval::Daily, 2).window_of(charge);
        assert_eq!(
            (daily.start, daily.end),
            (at("2024-02-29T00:00:00Z"), at("2024-03-01T00:00:00Z"))
        );
        let weekly = schedule(SettlementInterval::Weekly, 0).window_of(charge);
        assert_eq!(
            (weekly.start, weekly.end),
            (at("2024-02-26T00:00:00Z"), at("2024-03-04T00:00:00Z"))
        );
        let monthly = schedule(SettlementInterval::Monthly, 5).window_of(charge);
        assert_eq!(
            (monthly.start, monthly.end),
            (at("2024-02-01T00:00:00Z"), at("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            schedule(SettlementInterval::Monthly, 5).settles_at(monthly),
            at("2024-03-06T00:00:00Z")
        );
        let monday = schedule(SettlementInterval::Weekly, 0).window_of(at("2024-03-04T00:00:00Z"));
        assert_eq!(monday.start, at("2024-03-04T00:00:00Z"), "a window includes its start");
    }

    #[test]
    fn charges_settle_once_their_window_has_waited_its_delay() {
        let daily = SettlementSchedule::default();
        assert_eq!(
            daily,
            SettlementSchedule {
                interval: SettlementInterval::Daily,
                delay_days: 2
            }
        );
        // Feb 27's window closes at Feb 28 00:00 and settles on Mar 1.
        assert_eq!(
            daily.settleable_before(at("2024-03-01T00:00:00Z")),
            at("2024-02-28T00:00:00Z")
        );
        assert_eq!(
            daily.settleable_before(at("2024-02-29T23:59:59Z")),
            at("2024-02-27T00:00:00Z")
        );
        let weekly = SettlementSchedule::parse("weekly", 0).unwrap();
        assert_eq!(
            weekly.settleable_before(at("2024-03-06T12:00:00Z")),
            at("2024-03-04T00:00:00Z")
        );
        let fields: Vec<_> = SettlementSchedule::parse("hourly", 91)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["interval", "delay_days"]);
    }
}
