//! The relay's place in the outbox sequence on PostgreSQL.
//!
//! Outbox rows take their `seq` when they are inserted, but commit in
//! whatever order their transactions finish: two checkouts running at once
//! can commit seq 41 after seq 42. A relay that took whatever was committed,
//! in seq order, would then publish 42 before 41, and one partner endpoint
//! would receive events in an order that is not the outbox's. (SQLite has one
//! writer, so there its rows commit in seq order.)
//!
//! So the relay keeps a high-water mark (`outbox_relay.high_water`: every
//! seq up to it is published) and publishes only the rows that continue it
//! without a hole. A hole is either a transaction still running or a seq that
//! will never appear (its transaction rolled back). The relay tells the two
//! apart with PostgreSQL's own record of running transactions, in three
//! steps, one per relay pass:
//!
//! 1. It sees the hole and notes the time.
//! 2. At least [`SETTLE`] later it notes `pg_snapshot_xmax` of the current
//!    snapshot: by then any transaction that took the missing seq has an id
//!    (an insert takes its transaction id as it writes its row), and that id
//!    is below this xmax.
//! 3. Once the oldest running transaction is at or past that xmax, every
//!    transaction that could fill the hole has ended: the hole is permanent
//!    and the relay steps over it.
//!
//! A hole that stays open for [`GIVE_UP`] (a transaction that holds its seq
//! for that long) is stepped over too, so one stuck transaction cannot stop
//! every partner's events. When such a row commits after all, it is below the
//! mark; it is published at once, out of order, and counted as late. Nothing
//! is ever left unpublished.

use chrono::{DateTime, Duration, Utc};

/// How long after seeing a hole the relay takes its snapshot's xmax.
pub const SETTLE: Duration = Duration::milliseconds(20);

/// How long a hole may hold the relay before it is stepped over.
pub const GIVE_UP: Duration = Duration::seconds(10);

/// The stored mark, as the relay read it in this transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Mark {
    pub high_water: i64,
    /// When the hole right after `high_water` was first seen.
    pub gap_since: Option<DateTime<Utc>>,
    /// Step 2 has noted its xmax.
    pub gap_xmax_taken: bool,
    /// Every transaction running at step 2 has ended.
    pub gap_settled: bool,
}

/// What to do with the stored hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// No hole holds the relay.
    Clear,
    /// A new hole, first seen now.
    Seen(DateTime<Utc>),
    /// Step 2: note the current xmax, keeping the time first seen.
    TakeXmax,
    /// Still waiting: leave the stored hole as it is.
    Keep,
}

/// The rows one relay pass publishes, and the mark it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sequence numbers to publish, in order.
    pub publish: Vec<i64>,
    pub high_water: i64,
    pub gap: Gap,
    /// Rows below the mark: committed after their hole was stepped over.
    pub late: u64,
    /// Sequence numbers stepped over as permanent holes.
    pub skipped: u64,
}

/// Plans a relay pass over the unpublished rows `seqs` (ascending).
pub fn plan(mark: &Mark, seqs: &[i64], now: DateTime<Utc>) -> Plan {
    let mut plan = Plan {
        publish: Vec::with_capacity(seqs.len()),
        high_water: mark.high_water,
        gap: Gap::Clear,
        late: 0,
        skipped: 0,
    };
    let mut next = mark.high_water + 1;
    for &seq in seqs {
        if seq < next {
            plan.publish.push(seq);
            plan.late += 1;
            continue;
        }
        if seq > next {
            // The stored hole is the one right after the stored mark; a hole
            // found further on in this pass is new.
            let stored = next == mark.high_water + 1;
            let step = match mark.gap_since {
                Some(since) if stored => {
                    let waited = now - since;
                    if waited >= GIVE_UP || (mark.gap_xmax_taken && mark.gap_settled) {
                        None
                    } else if !mark.gap_xmax_taken && waited >= SETTLE {
                        Some(Gap::TakeXmax)
                    } else {
                        Some(Gap::Keep)
                    }
                }
                _ => Some(Gap::Seen(now)),
            };
            if let Some(gap) = step {
                plan.gap = gap;
                break;
            }
            plan.skipped += u64::try_from(seq - next).unwrap_or(0);
        }
        plan.publish.push(seq);
        next = seq + 1;
    }
    plan.high_water = next - 1;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("time")
    }

    fn mark(high_water: i64) -> Mark {
        Mark {
            high_water,
            gap_since: None,
            gap_xmax_taken: false,
            gap_settled: false,
        }
    }

    #[test]
    fn rows_that_continue_the_mark_are_published() {
        let plan = plan(&mark(4), &[5, 6, 7], t(0));
        assert_eq!(plan.publish, vec![5, 6, 7]);
        assert_eq!(
            (plan.high_water, plan.gap, plan.late, plan.skipped),
            (7, Gap::Clear, 0, 0)
        );
    }

    #[test]
    fn a_hole_holds_the_rows_after_it_and_is_noted() {
        let plan = plan(&mark(4), &[5, 7, 8], t(0));
        assert_eq!(plan.publish, vec![5]);
        assert_eq!((plan.high_water, plan.gap), (5, Gap::Seen(t(0))));
    }

    #[test]
    fn a_hole_is_stepped_over_only_after_every_transaction_that_could_fill_it_ended() {
        let seen = Mark {
            gap_since: Some(t(0)),
            ..mark(5)
        };
        // Too soon for step 2.
        assert_eq!(plan(&seen, &[7], t(5)).gap, Gap::Keep);
        // Step 2: note the xmax.
        let second = plan(&seen, &[7], t(25));
        assert_eq!((second.publish.clone(), second.gap), (vec![], Gap::TakeXmax));
        // Transactions from before step 2 still run.
        let waiting = Mark {
            gap_xmax_taken: true,
            ..seen
        };
        assert_eq!(plan(&waiting, &[7], t(50)).gap, Gap::Keep);
        // They ended: the hole is permanent.
        let settled = Mark {
            gap_settled: true,
            ..waiting
        };
        let stepped = plan(&settled, &[7, 8], t(60));
        assert_eq!(stepped.publish, vec![7, 8]);
        assert_eq!((stepped.high_water, stepped.gap, stepped.skipped), (8, Gap::Clear, 1));
    }

    #[test]
    fn a_hole_that_outlasts_the_limit_is_stepped_over() {
        let stuck = Mark {
            gap_since: Some(t(0)),
            gap_xmax_taken: true,
            ..mark(5)
        };
        let plan = plan(&stuck, &[9], t(10_000));
        assert_eq!((plan.publish, plan.high_water, plan.skipped), (vec![9], 9, 3));
    }

    #[test]
    fn a_second_hole_in_the_same_pass_is_new() {
        let settled = Mark {
            gap_since: Some(t(0)),
            gap_xmax_taken: true,
            gap_settled: true,
            ..mark(5)
        };
        let plan = plan(&settled, &[7, 8, 10], t(60));
        assert_eq!(plan.publish, vec![7, 8]);
        assert_eq!((plan.high_water, plan.gap), (8, Gap::Seen(t(60))));
    }

    #[test]
    fn a_row_that_commits_after_its_hole_was_stepped_over_is_published_late() {
        let plan = plan(&mark(8), &[6, 9], t(0));
        assert_eq!(plan.publish, vec![6, 9]);
        assert_eq!((plan.high_water, plan.late), (9, 1));
    }

    #[test]
    fn a_filled_hole_clears_the_stored_one() {
        let seen = Mark {
            gap_since: Some(t(0)),
            ..mark(5)
        };
        let plan = plan(&seen, &[6, 7], t(30));
        assert_eq!((plan.publish, plan.high_water, plan.gap), (vec![6, 7], 7, Gap::Clear));
    }
}
