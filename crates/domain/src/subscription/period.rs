//! Billing periods: a plan's interval, and the periods of one subscription
//! computed from its stored anchor.
//!
//! Every boundary is computed from the anchor itself, never from the
//! previous boundary, so a month-end anchor clamps to a shorter month's last
//! day and comes back the month after: Jan 31 → Feb 29 → Mar 31 → Apr 30.
//! (Stepping from the previous boundary is how a Jan 31 anchor drifts to the
//! 28th for good, or stops renewing.) All instants are UTC, so a day is
//! always 24 hours.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Utc};

use crate::error::{FieldError, ValidationErrors};

/// The longest trial a plan may offer (Stripe's limit).
pub const MAX_TRIAL_DAYS: u32 = 730;

/// The longest interval a plan may have: three years, in any unit
/// (Stripe's limit).
const MAX_INTERVAL_DAYS: u32 = 3 * 365;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalUnit {
    Day,
    Week,
    Month,
    Year,
}

impl IntervalUnit {
    pub const ALL: [IntervalUnit; 4] = [Self::Day, Self::Week, Self::Month, Self::Year];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|unit| unit.as_str() == raw)
            .ok_or_else(|| FieldError::new("", "must be \"day\", \"week\", \"month\" or \"year\""))
    }

    /// The most of this unit that fits in the longest interval.
    fn max_count(self) -> u32 {
        match self {
            Self::Day => MAX_INTERVAL_DAYS,
            Self::Week => MAX_INTERVAL_DAYS / 7,
            Self::Month => 36,
            Self::Year => 3,
        }
    }
}

/// How often a plan renews: every `count` days, weeks, months or years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PlanInterval {
    unit: IntervalUnit,
    count: u32,
}

impl PlanInterval {
    /// Parses a plan's `interval` and `interval_count`, reporting each
    /// field by name.
    pub fn parse(unit: &str, count: i64) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let unit = errors.collect("interval", IntervalUnit::parse(unit));
        if let Some(unit) = unit {
            let max = unit.max_count();
            match u32::try_from(count) {
                Ok(count) if (1..=max).contains(&count) => return Ok(Self { unit, count }),
                _ => errors.push(FieldError::new(
                    "interval_count",
                    format!("must be an integer from 1 to {max} for interval \"{}\"", unit.as_str()),
                )),
            }
        }
        Err(errors)
    }

    /// Wraps an interval read back from storage, which only ever holds
    /// intervals [`Self::parse`] accepted.
    pub fn from_trusted(unit: IntervalUnit, count: u32) -> Self {
        Self { unit, count }
    }

    pub fn unit(self) -> IntervalUnit {
        self.unit
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// The anchor moved `n` intervals on; `None` past the representable
    /// range.
    fn after(self, anchor: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        let steps = n.checked_mul(self.count)?;
        match self.unit {
            IntervalUnit::Day => anchor.checked_add_signed(TimeDelta::try_days(i64::from(steps))?),
            IntervalUnit::Week => anchor.checked_add_signed(TimeDelta::try_weeks(i64::from(steps))?),
            IntervalUnit::Month => add_months_clamped(anchor, steps),
            IntervalUnit::Year => add_months_clamped(anchor, steps.checked_mul(12)?),
        }
    }

    /// A lower bound on how many whole intervals fit between two instants,
    /// close enough that a few steps find the exact number.
    fn estimate(self, from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
        let months = |a: DateTime<Utc>| i64::from(a.year()) * 12 + i64::from(a.month0());
        let units = match self.unit {
            IntervalUnit::Day => (to - from).num_days(),
            IntervalUnit::Week => (to - from).num_weeks(),
            IntervalUnit::Month => months(to) - months(from) - 1,
            IntervalUnit::Year => (months(to) - months(from) - 1) / 12,
        };
        u32::try_from(units.max(0) / i64::from(self.count)).unwrap_or(u32::MAX)
    }
}

/// `at` moved `months` calendar months on, keeping its time of day and its
/// day of the month, or the month's last day when the month is shorter.
fn add_months_clamped(at: DateTime<Utc>, months: u32) -> Option<DateTime<Utc>> {
    let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1)?.checked_add_months(Months::new(months))?;
    let last_day = first.checked_add_months(Months::new(1))?.pred_opt()?.day();
    let date = first.with_day(at.day().min(last_day))?;
    Some(date.and_time(at.time()).and_utc())
}

/// One billing period of a subscription: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Period {
    /// 0 for the first period (the trial, when there is one), then 1, 2, …
    pub index: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// A free trial period: nothing is charged for it.
    pub trial: bool,
}

/// The periods of one subscription, from what is stored for it: when it
/// started, its anchor (the end of its trial, or its start when it has
/// none) and its plan's interval. Period `n` is charged at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingSchedule {
    start: DateTime<Utc>,
    anchor: DateTime<Utc>,
    interval: PlanInterval,
}

impl BillingSchedule {
    /// A new subscription's schedule: a trial of `trial_days` (zero for
    /// none) from `start`, then paid periods anchored where the trial ends.
    pub fn new(start: DateTime<Utc>, interval: PlanInterval, trial_days: u32) -> Self {
        let trial = TimeDelta::try_days(i64::from(trial_days.min(MAX_TRIAL_DAYS))).unwrap_or_default();
        Self {
            start,
            anchor: start.checked_add_signed(trial).unwrap_or(start),
            interval,
        }
    }

    /// The schedule of a stored subscription. An anchor before the start is
    /// taken as the start.
    pub fn from_stored(start: DateTime<Utc>, anchor: DateTime<Utc>, interval: PlanInterval) -> Self {
        Self {
            start,
            anchor: anchor.max(start),
            interval,
        }
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn anchor(&self) -> DateTime<Utc> {
        self.anchor
    }

    pub fn interval(&self) -> PlanInterval {
        self.interval
    }

    pub fn has_trial(&self) -> bool {
        self.anchor > self.start
    }

    /// Period `index`; `None` past the representable range.
    pub fn period(&self, index: u32) -> Option<Period> {
        if self.has_trial() {
            if index == 0 {
                return Some(Period {
                    index,
                    start: self.start,
                    end: self.anchor,
                    trial: true,
                });
            }
            self.paid_period(index, index - 1)
        } else {
            self.paid_period(index, index)
        }
    }

    fn paid_period(&self, index: u32, from_anchor: u32) -> Option<Period> {
        Some(Period {
            index,
            start: self.interval.after(self.anchor, from_anchor)?,
            end: self.interval.after(self.anchor, from_anchor.checked_add(1)?)?,
            trial: false,
        })
    }

    /// The period that contains `at`; `None` before the start.
    pub fn period_at(&self, at: DateTime<Utc>) -> Option<Period> {
        if at < self.start {
            return None;
        }
        if at < self.anchor {
            return self.period(0);
        }
        let offset = u32::from(self.has_trial());
        let mut n = self.interval.estimate(self.anchor, at);
        // The estimate is at most a step or two short; walk to the period
        // whose end is after `at`.
        loop {
            let period = self.paid_period(n.checked_add(offset)?, n)?;
            if period.end > at {
                return Some(period);
            }
            n = n.checked_add(1)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str) -> DateTime<Utc> {
        let with_time = if date.contains('T') {
            date.to_owned()
        } else {
            format!("{date}T00:00:00Z")
        };
        DateTime::parse_from_rfc3339(&with_time).unwrap().with_timezone(&Utc)
    }

    fn interval(unit: &str, count: i64) -> PlanInterval {
        PlanInterval::parse(unit, count).unwrap()
    }

    /// The starts of the first periods, as dates (times of day checked
    /// separately).
    fn starts(schedule: &BillingSchedule, n: u32) -> Vec<String> {
        (0..n)
            .map(|i| schedule.period(i).unwrap().start.format("%Y-%m-%d").to_string())
            .collect()
    }

    /// Period starts for every shape of plan the issue names, with and
    /// without a trial.
    #[test]
    fn period_table() {
        struct Case {
            name: &'static str,
            start: &'static str,
            interval: (&'static str, i64),
            trial_days: u32,
            starts: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "monthly on Jan 31 clamps to Feb 29 in a leap year and returns to the 31st",
                start: "2024-01-31",
                interval: ("month", 1),
                trial_days: 0,
                starts: &[
                    "2024-01-31",
                    "2024-02-29",
                    "2024-03-31",
                    "2024-04-30",
                    "2024-05-31",
                    "2024-06-30",
                ],
            },
            Case {
                name: "monthly on Jan 31 in a common year clamps to Feb 28",
                start: "2023-01-31",
                interval: ("month", 1),
                trial_days: 0,
                starts: &["2023-01-31", "2023-02-28", "2023-03-31"],
            },
            Case {
                name: "monthly on Feb 29 stays on the 29th, and clamps in the next February",
                start: "2024-02-29",
                interval: ("month", 1),
                trial_days: 0,
                starts: &[
                    "2024-02-29",
                    "2024-03-29",
                    "2024-04-29",
                    "2024-05-29",
                    "2024-06-29",
                    "2024-07-29",
                    "2024-08-29",
                    "2024-09-29",
                    "2024-10-29",
                    "2024-11-29",
                    "2024-12-29",
                    "2025-01-29",
                    "2025-02-28",
                    "2025-03-29",
                ],
            },
            Case {
                name: "monthly on Mar 30 clamps only in February",
                start: "2023-03-30",
                interval: ("month", 1),
                trial_days: 0,
                starts: &[
                    "2023-03-30",
                    "2023-04-30",
                    "2023-05-30",
                    "2023-06-30",
                    "2023-07-30",
                    "2023-08-30",
                    "2023-09-30",
                    "2023-10-30",
                    "2023-11-30",
                    "2023-12-30",
                    "2024-01-30",
                    "2024-02-29",
                    "2024-03-30",
                ],
            },
            Case {
                name: "quarterly from Nov 30 clamps in February and returns",
                start: "2023-11-30",
                interval: ("month", 3),
                trial_days: 0,
                starts: &["2023-11-30", "2024-02-29", "2024-05-30", "2024-08-30", "2024-11-30"],
            },
            Case {
                name: "yearly on Feb 29 is Feb 28 in common years and Feb 29 again in the next leap year",
                start: "2024-02-29",
                interval: ("year", 1),
                trial_days: 0,
                starts: &["2024-02-29", "2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"],
            },
            Case {
                name: "weekly",
                start: "2024-02-26",
                interval: ("week", 1),
                trial_days: 0,
                starts: &["2024-02-26", "2024-03-04", "2024-03-11"],
            },
            Case {
                name: "every two weeks",
                start: "2024-12-25",
                interval: ("week", 2),
                trial_days: 0,
                starts: &["2024-12-25", "2025-01-08", "2025-01-22"],
            },
            Case {
                name: "daily across a leap day and a year end",
                start: "2024-02-28",
                interval: ("day", 1),
                trial_days: 0,
                starts: &["2024-02-28", "2024-02-29", "2024-03-01"],
            },
            Case {
                name: "daily across a year end",
                start: "2024-12-31",
                interval: ("day", 1),
                trial_days: 0,
                starts: &["2024-12-31", "2025-01-01"],
            },
            Case {
                name: "a trial ending on Jan 31 anchors the month end",
                start: "2024-01-17",
                interval: ("month", 1),
                trial_days: 14,
                starts: &["2024-01-17", "2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"],
            },
            Case {
                name: "a trial on a yearly plan starting Feb 15 anchors Feb 29",
                start: "2024-02-15",
                interval: ("year", 1),
                trial_days: 14,
                starts: &[
                    "2024-02-15",
                    "2024-02-29",
                    "2025-02-28",
                    "2026-02-28",
                    "2027-02-28",
                    "2028-02-29",
                ],
            },
            Case {
                name: "a weekly plan with a 3-day trial",
                start: "2024-03-01",
                interval: ("week", 1),
                trial_days: 3,
                starts: &["2024-03-01", "2024-03-04", "2024-03-11"],
            },
            Case {
                name: "a daily plan with a 1-day trial",
                start: "2024-03-01",
                interval: ("day", 1),
                trial_days: 1,
                starts: &["2024-03-01", "2024-03-02", "2024-03-03"],
            },
        ];
        for case in cases {
            let (unit, count) = case.interval;
            let schedule = BillingSchedule::new(at(case.start), interval(unit, count), case.trial_days);
            let n = u32::try_from(case.starts.len()).unwrap();
            assert_eq!(starts(&schedule, n), case.starts, "{}", case.name);
            assert_eq!(schedule.has_trial(), case.trial_days > 0, "{}", case.name);
            for i in 0..n {
                let period = schedule.period(i).unwrap();
                let next = schedule.period(i + 1).unwrap();
                assert_eq!(period.end, next.start, "{}: periods tile without gaps", case.name);
                assert_eq!(period.trial, case.trial_days > 0 && i == 0, "{}", case.name);
                assert_eq!(period.index, i);
                assert_eq!(schedule.period_at(period.start), Some(period), "{}", case.name);
                assert_eq!(
                    schedule.period_at(period.end - TimeDelta::milliseconds(1)),
                    Some(period),
                    "{}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn the_time_of_day_of_the_anchor_is_kept() {
        let schedule = BillingSchedule::new(at("2024-01-31T23:59:59.250Z"), interval("month", 1), 0);
        let feb = schedule.period(1).unwrap();
        assert_eq!(feb.start, at("2024-02-29T23:59:59.250Z"));
        assert_eq!(feb.end, at("2024-03-31T23:59:59.250Z"));
    }

    #[test]
    fn a_stored_schedule_gives_the_same_periods() {
        let new = BillingSchedule::new(at("2024-01-17T08:30:00Z"), interval("month", 1), 14);
        let stored = BillingSchedule::from_stored(new.start(), new.anchor(), new.interval());
        assert_eq!(stored, new);
        assert_eq!(stored.anchor(), at("2024-01-31T08:30:00Z"));
        assert_eq!(stored.period(25), new.period(25));
    }

    #[test]
    fn period_at_finds_the_period_far_from_the_anchor() {
        for (unit, count) in [
            ("day", 1),
            ("day", 10),
            ("week", 3),
            ("month", 1),
            ("month", 5),
            ("year", 2),
        ] {
            let schedule = BillingSchedule::new(at("2024-01-31T12:00:00Z"), interval(unit, count), 9);
            assert_eq!(schedule.period_at(at("2024-01-30")), None, "before the start");
            assert!(schedule.period_at(at("2024-02-01")).unwrap().trial);
            for index in [1, 2, 7, 30, 119] {
                let period = schedule.period(index).unwrap();
                let middle = period.start + (period.end - period.start) / 2;
                assert_eq!(schedule.period_at(middle), Some(period), "{unit} x{count} #{index}");
            }
        }
    }

    #[test]
    fn intervals_are_validated_by_field() {
        assert_eq!(interval("month", 12).count(), 12);
        let fields = |unit, count| {
            PlanInterval::parse(unit, count)
                .unwrap_err()
                .0
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields("fortnight", 1), ["interval"]);
        assert_eq!(fields("month", 0), ["interval_count"]);
        assert_eq!(fields("month", 37), ["interval_count"]);
        assert_eq!(fields("year", 4), ["interval_count"]);
        assert_eq!(fields("week", 157), ["interval_count"]);
        assert_eq!(fields("day", -1), ["interval_count"]);
        assert!(PlanInterval::parse("day", 1095).is_ok());
    }

    #[test]
    fn the_far_future_ends_the_schedule_instead_of_panicking() {
        let schedule = BillingSchedule::new(at("2024-01-31"), interval("year", 3), MAX_TRIAL_DAYS);
        assert_eq!(schedule.period(u32::MAX), None);
        assert_eq!(schedule.period_at(DateTime::<Utc>::MAX_UTC), None);
    }
}
