//! `Subscriptions` for a backend's store: the same SQL on both.
//!
//! Each backend expands [`impl_subscriptions!`] with its store type, the
//! type of a transaction's connection (`&mut *tx` derefs to it) and its row
//! lock: `" FOR UPDATE"` on PostgreSQL, `""` on SQLite, whose
//! `BEGIN IMMEDIATE` holds the one write lock from the first statement.
//! Every write that decides something takes the subscription's lock first
//! (`lock`), so it sees whatever the write before it committed.

/// Every row a query finds, each converted to its public type.
macro_rules! fetch_all_as {
    ($row:ty, $query:expr, $pool:expr) => {{
        let rows: Vec<$row> = $query.fetch_all($pool).await?;
        rows.into_iter().map(TryFrom::try_from).collect()
    }};
}

macro_rules! impl_subscriptions {
    ($store:ty, $conn:ty, $for_update:literal) => {
        /// The steps the `Subscriptions` methods share, each inside the
        /// caller's transaction.
        mod subscriptions_sql {
            use chrono::{DateTime, Utc};
            use holdfast_domain::{
                EventId, Money, Period, SubscriptionEvent, SubscriptionId, SubscriptionStatus,
            };

            use $crate::subscriptions::rows::{Clocked, SubscriptionRow, TimelineEvent, column, event_payload};
            use $crate::subscriptions::{PeriodStatus, Subscription, SubscriptionPeriod};
            use $crate::{Result, StoreError};

            pub(super) type Conn = $conn;

            /// Locks the subscription for the rest of the transaction and
            /// reads it, with the time on its clock.
            pub(super) async fn lock(conn: &mut Conn, id: &SubscriptionId, now: DateTime<Utc>) -> Result<Clocked> {
                let locked: Option<i32> =
                    sqlx::query_scalar(concat!("SELECT last_sequence FROM subscriptions WHERE id = $1", $for_update))
                        .bind(id.as_str())
                        .fetch_optional(&mut *conn)
                        .await?;
                if locked.is_none() {
                    return Err(StoreError::NotFound(format!("subscription {id}")));
                }
                read(conn, id).await?.clocked(now)
            }

            pub(super) async fn read(conn: &mut Conn, id: &SubscriptionId) -> Result<SubscriptionRow> {
                let row: Option<SubscriptionRow> = sqlx::query_as(concat!(subscription_select!(), " WHERE s.id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                row.ok_or_else(|| StoreError::NotFound(format!("subscription {id}")))
            }

            /// Writes the subscription's changeable columns as they are in
            /// `subscription`.
            pub(super) async fn persist(
                conn: &mut Conn,
                subscription: &mut Subscription,
                now: DateTime<Utc>,
            ) -> Result<()> {
                subscription.updated_at = now;
                let period = subscription.current_period;
                sqlx::query(
                    "UPDATE subscriptions SET status = $2, payment_method = $3, current_period_index = $4, \
                     current_period_start = $5, current_period_end = $6, cancel_at_period_end = $7, \
                     canceled_at = $8, past_due_since = $9, paused_at = $10, resumes_at = $11, updated_at = $12 \
                     WHERE id = $1",
                )
                .bind(subscription.id.as_str())
                .bind(subscription.status.as_str())
                .bind(&subscription.payment_method)
                .bind(column(period.index))
                .bind(period.start)
                .bind(period.end)
                .bind(subscription.cancel_at_period_end)
                .bind(subscription.canceled_at)
                .bind(subscription.past_due_since)
                .bind(subscription.paused_at)
                .bind(subscription.resumes_at)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Appends an event to the timeline with the next sequence, and
            /// its outbox row, and returns the sequence.
            pub(super) async fn record_event(
                conn: &mut Conn,
                subscription: &mut Subscription,
                event: &TimelineEvent<'_>,
                now: DateTime<Utc>,
            ) -> Result<u32> {
                let sequence: i32 = sqlx::query_scalar(
                    "UPDATE subscriptions SET last_sequence = last_sequence + 1 WHERE id = $1 RETURNING last_sequence",
                )
                .bind(subscription.id.as_str())
                .fetch_one(&mut *conn)
                .await?;
                let sequence =
                    u32::try_from(sequence).map_err(|_| StoreError::Corrupt(format!("sequence {sequence}")))?;
                subscription.sequence = sequence;
                let event_id = EventId::generate();
                sqlx::query(
                    "INSERT INTO subscription_events (subscription_id, sequence, event_id, event_type, from_status, \
                     to_status, period_index, charge_id, cause, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(subscription.id.as_str())
                .bind(column(sequence))
                .bind(event_id.as_str())
                .bind(event.event.as_str())
                .bind(event.from_status.map(SubscriptionStatus::as_str))
                .bind(subscription.status.as_str())
                .bind(event.period_index.map(column))
                .bind(event.charge.map(|charge| charge.id.as_str()))
                .bind(event.cause)
                .bind(event.at)
                .execute(&mut *conn)
                .await?;
                outbox(
                    conn,
                    &event_id,
                    subscription.id.as_str(),
                    event.event.as_str(),
                    event_payload(subscription, sequence, event),
                    now,
                )
                .await?;
                Ok(sequence)
            }

            /// An event for the relay to fan out once this transaction commits.
            pub(super) async fn outbox(
                conn: &mut Conn,
                id: &EventId,
                aggregate_id: &str,
                event_type: &str,
                payload: String,
                now: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id.as_str())
                .bind(aggregate_id)
                .bind(event_type)
                .bind(payload)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Writes a period row. A period that exists stays as it is,
            /// unless it is void and this opens it again (a resume reopens
            /// a period its pause voided).
            pub(super) async fn insert_period(
                conn: &mut Conn,
                id: &SubscriptionId,
                period: &Period,
                amount: Money,
                status: PeriodStatus,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO subscription_periods (subscription_id, period_index, starts_at, ends_at, amount, \
                     currency, status) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (subscription_id, period_index) DO UPDATE SET status = excluded.status \
                     WHERE subscription_periods.status = 'void' AND excluded.status = 'open'",
                )
                .bind(id.as_str())
                .bind(column(period.index))
                .bind(period.start)
                .bind(period.end)
                .bind(amount.amount())
                .bind(amount.currency().code())
                .bind(status.as_str())
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Opens the period after `index`, at the subscription's price.
            pub(super) async fn open_next(conn: &mut Conn, subscription: &Subscription, index: u32) -> Result<()> {
                let next = index
                    .checked_add(1)
                    .and_then(|next| subscription.schedule().period(next));
                // A schedule that runs past the representable range simply
                // ends.
                if let Some(next) = next {
                    insert_period(conn, &subscription.id, &next, subscription.price, PeriodStatus::Open).await?;
                }
                Ok(())
            }

            pub(super) async fn period(conn: &mut Conn, id: &SubscriptionId, index: u32) -> Result<SubscriptionPeriod> {
                let row: Option<$crate::subscriptions::rows::PeriodRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    period_columns!(),
                    " FROM subscription_periods WHERE subscription_id = $1 AND period_index = $2"
                ))
                .bind(id.as_str())
                .bind(column(index))
                .fetch_optional(&mut *conn)
                .await?;
                row.ok_or_else(|| StoreError::NotFound(format!("period {index} of subscription {id}")))?
                    .try_into()
            }

            /// Moves the subscription through `SubscriptionStatus::transition`
            /// and applies what the new status means for its periods, with
            /// the timeline and outbox rows.
            pub(super) async fn change_status(
                conn: &mut Conn,
                clocked: Clocked,
                to: SubscriptionStatus,
                cause: &str,
                resumes_at: Option<DateTime<Utc>>,
                now: DateTime<Utc>,
            ) -> Result<Subscription> {
                let Clocked { mut subscription, at } = clocked;
                let from = subscription.status;
                subscription.status = from.transition(to)?;
                let mut reopen = None;
                match to {
                    SubscriptionStatus::Canceled => {
                        subscription.canceled_at = Some(at);
                        subscription.cancel_at_period_end = false;
                    }
                    SubscriptionStatus::Paused => {
                        subscription.paused_at = Some(at);
                        subscription.resumes_at = resumes_at;
                    }
                    SubscriptionStatus::PastDue => subscription.past_due_since = Some(at),
                    SubscriptionStatus::Active if from == SubscriptionStatus::Paused => {
                        subscription.paused_at = None;
                        subscription.resumes_at = None;
                        reopen = Some(resume_into(&subscription, at));
                    }
                    // Only a paid charge activates (`record_charge_succeeded`).
                    SubscriptionStatus::Active | SubscriptionStatus::Incomplete | SubscriptionStatus::Trialing => {
                        return Err(holdfast_domain::SubscriptionTransitionError { from, to }.into());
                    }
                    SubscriptionStatus::Unpaid => {}
                }
                if matches!(to, SubscriptionStatus::Canceled | SubscriptionStatus::Paused) {
                    sqlx::query(
                        "UPDATE subscription_periods SET status = 'void' \
                         WHERE subscription_id = $1 AND status = 'open'",
                    )
                    .bind(subscription.id.as_str())
                    .execute(&mut *conn)
                    .await?;
                }
                if let Some(current) = reopen {
                    if current.index > subscription.current_period.index {
                        // Paused through this period's start: it is free.
                        insert_period(conn, &subscription.id, &current, subscription.price, PeriodStatus::Void).await?;
                        subscription.current_period = current;
                    }
                    open_next(conn, &subscription, subscription.current_period.index).await?;
                }
                persist(conn, &mut subscription, now).await?;
                let event = TimelineEvent {
                    event: SubscriptionEvent::of_change(from, to),
                    from_status: Some(from),
                    period_index: Some(subscription.current_period.index),
                    charge: None,
                    cause,
                    at,
                };
                record_event(conn, &mut subscription, &event, now).await?;
                Ok(subscription)
            }

            /// The period a resumed subscription is in at `at`: the periods
            /// that started while it was paused are not charged, and the
            /// next one is charged at its start, as with Stripe's
            /// "pause collection" that voids.
            fn resume_into(subscription: &Subscription, at: DateTime<Utc>) -> Period {
                subscription
                    .schedule()
                    .period_at(at)
                    .filter(|period| period.index > subscription.current_period.index)
                    .unwrap_or(subscription.current_period)
            }
        }

        #[async_trait::async_trait]
        impl $crate::Subscriptions for $store {
            async fn create_creator(&self, creator: &$crate::NewCreator) -> $crate::Result<$crate::Creator> {
                sqlx::query(
                    "INSERT INTO creators (id, name, fee_bps, settlement_interval, settlement_delay_days, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(creator.id.as_str())
                .bind(&creator.name)
                .bind(i32::from(creator.fee_bps.get()))
                .bind(creator.settlement.interval.as_str())
                .bind(i32::from(creator.settlement.delay_days))
                .bind(creator.created_at)
                .execute(&self.write)
                .await?;
                Ok($crate::Creator {
                    id: creator.id.clone(),
                    name: creator.name.clone(),
                    fee_bps: creator.fee_bps,
                    settlement: creator.settlement,
                    created_at: creator.created_at,
                })
            }

            async fn creator(&self, id: &holdfast_domain::CreatorId) -> $crate::Result<Option<$crate::Creator>> {
                let row: Option<$crate::subscriptions::rows::CreatorRow> =
                    sqlx::query_as(concat!("SELECT ", creator_columns!(), " FROM creators WHERE id = $1"))
                        .bind(id.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                row.map($crate::Creator::try_from).transpose()
            }

            async fn create_plan(&self, plan: &$crate::NewPlan) -> $crate::Result<$crate::Plan> {
                let mut tx = begin_write(&self.write).await?;
                let creator: Option<String> = sqlx::query_scalar("SELECT id FROM creators WHERE id = $1")
                    .bind(plan.creator_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if creator.is_none() {
                    return Err($crate::StoreError::NotFound(format!("creator {}", plan.creator_id)));
                }
                sqlx::query(
                    "INSERT INTO plans (id, creator_id, name, interval_unit, interval_count, trial_days, \
                     on_dunning_exhausted, price_version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
                )
                .bind(plan.id.as_str())
                .bind(plan.creator_id.as_str())
                .bind(&plan.name)
                .bind(plan.interval.unit().as_str())
                .bind($crate::subscriptions::rows::column(plan.interval.count()))
                .bind($crate::subscriptions::rows::column(plan.trial_days))
                .bind(plan.on_dunning_exhausted.as_str())
                .bind(plan.created_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO plan_prices (plan_id, version, amount, currency, created_at) \
                     VALUES ($1, 1, $2, $3, $4)",
                )
                .bind(plan.id.as_str())
                .bind(plan.price.amount())
                .bind(plan.price.currency().code())
                .bind(plan.created_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok($crate::Plan {
                    id: plan.id.clone(),
                    creator_id: plan.creator_id.clone(),
                    name: plan.name.clone(),
                    price: plan.price,
                    price_version: 1,
                    interval: plan.interval,
                    trial_days: plan.trial_days,
                    on_dunning_exhausted: plan.on_dunning_exhausted,
                    created_at: plan.created_at,
                    updated_at: plan.created_at,
                })
            }

            async fn plan(&self, id: &holdfast_domain::PlanId) -> $crate::Result<Option<$crate::Plan>> {
                let row: Option<$crate::subscriptions::rows::PlanRow> =
                    sqlx::query_as(concat!(plan_select!(), " WHERE p.id = $1"))
                        .bind(id.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                row.map($crate::Plan::try_from).transpose()
            }

            async fn change_price(
                &self,
                id: &holdfast_domain::PlanId,
                price: holdfast_domain::Money,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::Plan> {
                let mut tx = begin_write(&self.write).await?;
                let version: Option<i32> = sqlx::query_scalar(
                    "UPDATE plans SET price_version = price_version + 1, updated_at = $2 WHERE id = $1 \
                     RETURNING price_version",
                )
                .bind(id.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(version) = version else {
                    return Err($crate::StoreError::NotFound(format!("plan {id}")));
                };
                sqlx::query(
                    "INSERT INTO plan_prices (plan_id, version, amount, currency, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id.as_str())
                .bind(version)
                .bind(price.amount())
                .bind(price.currency().code())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let row: $crate::subscriptions::rows::PlanRow =
                    sqlx::query_as(concat!(plan_select!(), " WHERE p.id = $1"))
                        .bind(id.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn plan_prices(&self, id: &holdfast_domain::PlanId) -> $crate::Result<Vec<$crate::PlanPrice>> {
                fetch_all_as!(
                    $crate::subscriptions::rows::PlanPriceRow,
                    sqlx::query_as(
                        "SELECT version, amount, currency, created_at FROM plan_prices WHERE plan_id = $1 ORDER BY version",
                    )
                    .bind(id.as_str()),
                    &self.read
                )
            }

            async fn create_test_clock(
                &self,
                id: &holdfast_domain::TestClockId,
                frozen_time: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::TestClock> {
                sqlx::query("INSERT INTO test_clocks (id, frozen_time, created_at, updated_at) VALUES ($1, $2, $3, $3)")
                    .bind(id.as_str())
                    .bind(frozen_time)
                    .bind(now)
                    .execute(&self.write)
                    .await?;
                Ok($crate::TestClock {
                    id: id.clone(),
                    frozen_time,
                    created_at: now,
                    updated_at: now,
                    due_periods: 0,
                })
            }

            async fn test_clock(
                &self,
                id: &holdfast_domain::TestClockId,
            ) -> $crate::Result<Option<$crate::TestClock>> {
                let row: Option<$crate::subscriptions::rows::TestClockRow> =
                    sqlx::query_as(concat!(test_clock_select!(), " WHERE c.id = $1"))
                        .bind(id.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                Ok(row.map($crate::TestClock::from))
            }

            async fn advance_test_clock(
                &self,
                id: &holdfast_domain::TestClockId,
                frozen_time: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::TestClock> {
                let mut tx = begin_write(&self.write).await?;
                let moved = sqlx::query(
                    "UPDATE test_clocks SET frozen_time = $2, updated_at = $3 WHERE id = $1 AND frozen_time <= $2",
                )
                .bind(id.as_str())
                .bind(frozen_time)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let row: Option<$crate::subscriptions::rows::TestClockRow> =
                    sqlx::query_as(concat!(test_clock_select!(), " WHERE c.id = $1"))
                        .bind(id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                let clock = row.map($crate::TestClock::from).ok_or_else(|| {
                    $crate::StoreError::NotFound(format!("test clock {id}"))
                })?;
                if moved.rows_affected() == 0 {
                    return Err($crate::StoreError::Conflict(format!(
                        "test clock {id} is at {}; a clock cannot go back",
                        clock.frozen_time
                    )));
                }
                tx.commit().await?;
                Ok(clock)
            }

            async fn create_subscription(
                &self,
                new: &$crate::NewSubscription,
            ) -> $crate::Result<$crate::Subscription> {
                use $crate::subscriptions::rows::{PlanRow, TimelineEvent, column};
                use $crate::PeriodStatus;
                use holdfast_domain::{BillingSchedule, SubscriptionEvent, SubscriptionStatus};

                let mut tx = begin_write(&self.write).await?;
                let plan: Option<PlanRow> = sqlx::query_as(concat!(plan_select!(), " WHERE p.id = $1"))
                    .bind(new.plan_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let plan = $crate::Plan::try_from(
                    plan.ok_or_else(|| $crate::StoreError::NotFound(format!("plan {}", new.plan_id)))?,
                )?;
                let start = match &new.test_clock {
                    None => new.now,
                    Some(clock) => {
                        let frozen: Option<chrono::DateTime<chrono::Utc>> =
                            sqlx::query_scalar("SELECT frozen_time FROM test_clocks WHERE id = $1")
                                .bind(clock.as_str())
                                .fetch_optional(&mut *tx)
                                .await?;
                        frozen.ok_or_else(|| $crate::StoreError::NotFound(format!("test clock {clock}")))?
                    }
                };
                let schedule = BillingSchedule::new(start, plan.interval, plan.trial_days);
                let first = schedule
                    .period(0)
                    .ok_or_else(|| $crate::StoreError::Corrupt(format!("no first period from {start}")))?;
                let status = if schedule.has_trial() {
                    SubscriptionStatus::Trialing
                } else {
                    SubscriptionStatus::Incomplete
                };
                sqlx::query(
                    "INSERT INTO subscriptions (id, creator_id, plan_id, price_version, email, name, status, \
                     payment_method, test_clock_id, started_at, anchor, current_period_index, current_period_start, \
                     current_period_end, cancel_at_period_end, last_sequence, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14, 0, $15, $15)",
                )
                .bind(new.id.as_str())
                .bind(plan.creator_id.as_str())
                .bind(plan.id.as_str())
                .bind(column(plan.price_version))
                .bind(new.email.as_str())
                .bind(new.name.as_ref().map(|name| name.as_str()))
                .bind(status.as_str())
                .bind(&new.payment_method)
                .bind(new.test_clock.as_ref().map(|clock| clock.as_str()))
                .bind(schedule.start())
                .bind(schedule.anchor())
                .bind(first.start)
                .bind(first.end)
                .bind(false)
                .bind(new.now)
                .execute(&mut *tx)
                .await?;
                if first.trial {
                    let free = holdfast_domain::Money::zero(plan.price.currency());
                    subscriptions_sql::insert_period(&mut tx, &new.id, &first, free, PeriodStatus::Paid).await?;
                } else {
                    subscriptions_sql::insert_period(&mut tx, &new.id, &first, plan.price, PeriodStatus::Open).await?;
                }
                let mut subscription: $crate::Subscription =
                    subscriptions_sql::read(&mut tx, &new.id).await?.try_into()?;
                if first.trial {
                    subscriptions_sql::open_next(&mut tx, &subscription, 0).await?;
                }
                let event = TimelineEvent {
                    event: SubscriptionEvent::Created,
                    from_status: None,
                    period_index: Some(0),
                    charge: None,
                    cause: "created",
                    at: start,
                };
                subscriptions_sql::record_event(&mut tx, &mut subscription, &event, new.now).await?;
                tx.commit().await?;
                Ok(subscription)
            }

            async fn subscription(
                &self,
                id: &holdfast_domain::SubscriptionId,
            ) -> $crate::Result<Option<$crate::Subscription>> {
                let row: Option<$crate::subscriptions::rows::SubscriptionRow> =
                    sqlx::query_as(concat!(subscription_select!(), " WHERE s.id = $1"))
                        .bind(id.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                row.map($crate::Subscription::try_from).transpose()
            }

            async fn list_subscriptions(
                &self,
                filter: &$crate::SubscriptionFilter,
            ) -> $crate::Result<Vec<$crate::Subscription>> {
                fetch_all_as!(
                    $crate::subscriptions::rows::SubscriptionRow,
                    sqlx::query_as(concat!(
                        subscription_select!(),
                        " WHERE ($1 IS NULL OR s.creator_id = $1) AND ($2 IS NULL OR s.status = $2) ",
                        "AND ($3 IS NULL OR s.id > $3) ORDER BY s.id LIMIT $4"
                    ))
                    .bind(filter.creator_id.as_ref().map(|id| id.as_str()))
                    .bind(filter.status.map(holdfast_domain::SubscriptionStatus::as_str))
                    .bind(filter.after.as_ref().map(|id| id.as_str()))
                    .bind(filter.limit),
                    &self.read
                )
            }

            async fn subscription_events(
                &self,
                id: &holdfast_domain::SubscriptionId,
            ) -> $crate::Result<Vec<$crate::SubscriptionEventRecord>> {
                fetch_all_as!(
                    $crate::subscriptions::rows::EventRow,
                    sqlx::query_as(concat!(
                        "SELECT ",
                        subscription_event_columns!(),
                        " FROM subscription_events WHERE subscription_id = $1 ORDER BY sequence"
                    ))
                    .bind(id.as_str()),
                    &self.read
                )
            }

            async fn periods(
                &self,
                id: &holdfast_domain::SubscriptionId,
            ) -> $crate::Result<Vec<$crate::SubscriptionPeriod>> {
                fetch_all_as!(
                    $crate::subscriptions::rows::PeriodRow,
                    sqlx::query_as(concat!(
                        "SELECT ",
                        period_columns!(),
                        " FROM subscription_periods WHERE subscription_id = $1 ORDER BY period_index"
                    ))
                    .bind(id.as_str()),
                    &self.read
                )
            }

            async fn charges(&self, id: &holdfast_domain::SubscriptionId) -> $crate::Result<Vec<$crate::Charge>> {
                fetch_all_as!(
                    $crate::subscriptions::rows::ChargeRow,
                    sqlx::query_as(concat!(
                        "SELECT ",
                        charge_columns!(),
                        " FROM subscription_charges WHERE subscription_id = $1 ORDER BY period_index, attempt"
                    ))
                    .bind(id.as_str()),
                    &self.read
                )
            }

            async fn transition_subscription(
                &self,
                change: &$crate::SubscriptionChange,
            ) -> $crate::Result<$crate::Subscription> {
                let mut tx = begin_write(&self.write).await?;
                let clocked = subscriptions_sql::lock(&mut tx, &change.id, change.now).await?;
                let subscription = subscriptions_sql::change_status(
                    &mut tx,
                    clocked,
                    change.to,
                    &change.cause,
                    change.resumes_at,
                    change.now,
                )
                .await?;
                tx.commit().await?;
                Ok(subscription)
            }

            async fn set_cancel_at_period_end(
                &self,
                id: &holdfast_domain::SubscriptionId,
                cancel: bool,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::Subscription> {
                let mut tx = begin_write(&self.write).await?;
                let mut subscription = subscriptions_sql::lock(&mut tx, id, now).await?.subscription;
                if subscription.status.is_terminal() {
                    return Err($crate::StoreError::Conflict(format!("subscription {id} is canceled")));
                }
                subscription.cancel_at_period_end = cancel;
                subscriptions_sql::persist(&mut tx, &mut subscription, now).await?;
                tx.commit().await?;
                Ok(subscription)
            }

            async fn update_payment_method(
                &self,
                id: &holdfast_domain::SubscriptionId,
                payment_method: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::Subscription> {
                let mut tx = begin_write(&self.write).await?;
                let mut subscription = subscriptions_sql::lock(&mut tx, id, now).await?.subscription;
                if subscription.status.is_terminal() {
                    return Err($crate::StoreError::Conflict(format!("subscription {id} is canceled")));
                }
                payment_method.clone_into(&mut subscription.payment_method);
                subscriptions_sql::persist(&mut tx, &mut subscription, now).await?;
                tx.commit().await?;
                Ok(subscription)
            }

            async fn due_charges(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::DueCharge>> {
                let rows: Vec<(String, String, i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(concat!(
                    "SELECT p.subscription_id, s.creator_id, p.period_index, p.starts_at ",
                    "FROM subscription_periods p JOIN subscriptions s ON s.id = p.subscription_id ",
                    "LEFT JOIN test_clocks c ON c.id = s.test_clock_id ",
                    "WHERE p.status = 'open' AND s.status IN ",
                    scheduled_statuses!(),
                    " AND p.starts_at <= coalesce(c.frozen_time, $1) ",
                    "ORDER BY p.starts_at, p.subscription_id, p.period_index LIMIT $2"
                ))
                .bind(now)
                .bind(limit)
                .fetch_all(&self.worker)
                .await?;
                rows.into_iter()
                    .map(|(subscription_id, creator_id, period_index, due_at)| {
                        Ok($crate::DueCharge {
                            subscription_id: holdfast_domain::SubscriptionId::from_trusted(subscription_id),
                            creator_id: holdfast_domain::CreatorId::from_trusted(creator_id),
                            period_index: u32::try_from(period_index).map_err(|_| {
                                $crate::StoreError::Corrupt(format!("period index {period_index}"))
                            })?,
                            due_at,
                        })
                    })
                    .collect()
            }

            async fn begin_charge(
                &self,
                id: &holdfast_domain::SubscriptionId,
                period_index: u32,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::ChargeStart> {
                use $crate::subscriptions::rows::{ChargeRow, column, idempotency_key};
                use $crate::{Charge, ChargeStart, ChargeStatus, PeriodStatus};

                let mut tx = begin_write(&self.worker).await?;
                let clocked = subscriptions_sql::lock(&mut tx, id, now).await?;
                let status = clocked.subscription.status;
                // Re-checked under the lock: a cancel or pause committed
                // before this point stops the charge, and one that comes
                // later waits for this transaction.
                if !status.accepts_charges() {
                    return Ok(ChargeStart::Refused(status));
                }
                let period = subscriptions_sql::period(&mut tx, id, period_index).await?;
                if period.status != PeriodStatus::Open {
                    return Ok(ChargeStart::Settled(period.status));
                }
                if period.start > clocked.at {
                    return Ok(ChargeStart::NotDue(period.start));
                }
                let subscription = &clocked.subscription;
                if subscription.cancel_at_period_end && period.index > subscription.current_period.index {
                    let to = holdfast_domain::SubscriptionStatus::Canceled;
                    let cause = "canceled at the end of its period";
                    subscriptions_sql::change_status(&mut tx, clocked, to, cause, None, now).await?;
                    tx.commit().await?;
                    return Ok(ChargeStart::Refused(to));
                }
                let pending: Option<ChargeRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    charge_columns!(),
                    " FROM subscription_charges WHERE subscription_id = $1 AND period_index = $2 AND status = 'pending'"
                ))
                .bind(id.as_str())
                .bind(column(period_index))
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(pending) = pending {
                    return Ok(ChargeStart::Charge {
                        charge: Box::new(pending.try_into()?),
                        resumed: true,
                    });
                }
                let last: i32 = sqlx::query_scalar(
                    "SELECT coalesce(max(attempt), 0) FROM subscription_charges \
                     WHERE subscription_id = $1 AND period_index = $2",
                )
                .bind(id.as_str())
                .bind(column(period_index))
                .fetch_one(&mut *tx)
                .await?;
                let attempt = u32::try_from(last).unwrap_or(0) + 1;
                let charge = Charge {
                    id: holdfast_domain::ChargeId::generate(),
                    subscription_id: id.clone(),
                    period_index,
                    attempt,
                    amount: period.amount,
                    payment_method: subscription.payment_method.clone(),
                    idempotency_key: idempotency_key(id, period_index, attempt),
                    status: ChargeStatus::Pending,
                    intent_id: None,
                    failure_code: None,
                    decline_code: None,
                    failure_message: None,
                    attempted_at: clocked.at,
                    completed_at: None,
                };
                sqlx::query(
                    "INSERT INTO subscription_charges (id, subscription_id, period_index, attempt, amount, currency, \
                     payment_method, idempotency_key, status, attempted_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
                )
                .bind(charge.id.as_str())
                .bind(id.as_str())
                .bind(column(period_index))
                .bind(column(attempt))
                .bind(charge.amount.amount())
                .bind(charge.amount.currency().code())
                .bind(&charge.payment_method)
                .bind(&charge.idempotency_key)
                .bind(charge.attempted_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(ChargeStart::Charge {
                    charge: Box::new(charge),
                    resumed: false,
                })
            }

            async fn record_charge_succeeded(
                &self,
                charge_id: &holdfast_domain::ChargeId,
                intent_id: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::ChargeRecorded> {
                use $crate::subscriptions::rows::{TimelineEvent, column};
                use $crate::{ChargeRecorded, ChargeStatus, PeriodStatus};
                use holdfast_domain::{FeeBps, FeeSplit, SubscriptionEvent, SubscriptionStatus};

                let mut tx = begin_write(&self.worker).await?;
                let (clocked, mut charge) = subscriptions_sql_charge::lock_charge(&mut tx, charge_id, now).await?;
                if matches!(charge.status, ChargeStatus::Succeeded | ChargeStatus::Duplicate) {
                    return Ok(ChargeRecorded::Replayed);
                }
                let $crate::subscriptions::rows::Clocked { mut subscription, at } = clocked;
                let period = subscriptions_sql::period(&mut tx, &subscription.id, charge.period_index).await?;
                let settled = if period.status == PeriodStatus::Paid {
                    ChargeStatus::Duplicate
                } else {
                    ChargeStatus::Succeeded
                };
                sqlx::query(
                    "UPDATE subscription_charges SET status = $2, intent_id = $3, completed_at = $4 WHERE id = $1",
                )
                .bind(charge_id.as_str())
                .bind(settled.as_str())
                .bind(intent_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                if settled == ChargeStatus::Duplicate {
                    tx.commit().await?;
                    return Ok(ChargeRecorded::Duplicate);
                }
                charge.status = settled;
                charge.intent_id = Some(intent_id.to_owned());
                charge.completed_at = Some(at);
                sqlx::query(
                    "UPDATE subscription_periods SET status = 'paid' WHERE subscription_id = $1 AND period_index = $2",
                )
                .bind(subscription.id.as_str())
                .bind(column(period.index))
                .execute(&mut *tx)
                .await?;
                let fee_bps: i32 = sqlx::query_scalar("SELECT fee_bps FROM creators WHERE id = $1")
                    .bind(subscription.creator_id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                let fee_bps = FeeBps::parse(i64::from(fee_bps))
                    .map_err(|_| $crate::StoreError::Corrupt(format!("fee_bps {fee_bps}")))?;
                let split = FeeSplit::of(charge.amount, fee_bps);
                sqlx::query(
                    "INSERT INTO ledger_entries (charge_id, creator_id, subscription_id, period_index, currency, \
                     gross, fee, net, charged_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(charge_id.as_str())
                .bind(subscription.creator_id.as_str())
                .bind(subscription.id.as_str())
                .bind(column(period.index))
                .bind(split.gross.currency().code())
                .bind(split.gross.amount())
                .bind(split.fee.amount())
                .bind(split.net.amount())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                let from = subscription.status;
                // The subscription enters the period it paid for (catch-up
                // charges walk it forward one period at a time).
                if period.index > subscription.current_period.index {
                    subscription.current_period = holdfast_domain::Period {
                        index: period.index,
                        start: period.start,
                        end: period.end,
                        trial: false,
                    };
                }
                // Paid after all: whatever the dunning state, it is active
                // again; a canceled or paused one keeps its status (the
                // charge raced the cancel, and the money is recorded).
                let activates = from != SubscriptionStatus::Active
                    && from.accepts_charges()
                    && from.transition(SubscriptionStatus::Active).is_ok();
                if activates {
                    subscription.status = SubscriptionStatus::Active;
                    subscription.past_due_since = None;
                }
                subscriptions_sql::persist(&mut tx, &mut subscription, now).await?;
                let mut event = TimelineEvent {
                    event: SubscriptionEvent::ChargeSucceeded,
                    from_status: None,
                    period_index: Some(period.index),
                    charge: Some(&charge),
                    cause: "charge succeeded",
                    at,
                };
                subscriptions_sql::record_event(&mut tx, &mut subscription, &event, now).await?;
                event.charge = None;
                if activates {
                    event.event = SubscriptionEvent::of_change(from, SubscriptionStatus::Active);
                    event.from_status = Some(from);
                    event.cause = match from {
                        SubscriptionStatus::Incomplete | SubscriptionStatus::Trialing => "first charge paid",
                        _ => "paid after a failed renewal",
                    };
                    subscriptions_sql::record_event(&mut tx, &mut subscription, &event, now).await?;
                } else if from == SubscriptionStatus::Active {
                    event.event = SubscriptionEvent::Renewed;
                    event.cause = "renewal paid";
                    subscriptions_sql::record_event(&mut tx, &mut subscription, &event, now).await?;
                }
                if subscription.status.renews() {
                    subscriptions_sql::open_next(&mut tx, &subscription, period.index).await?;
                }
                tx.commit().await?;
                Ok(ChargeRecorded::Recorded(Box::new(subscription)))
            }

            async fn record_charge_failed(
                &self,
                charge_id: &holdfast_domain::ChargeId,
                failure: &$crate::ChargeFailure,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::ChargeRecorded> {
                use $crate::subscriptions::rows::TimelineEvent;
                use $crate::{ChargeRecorded, ChargeStatus};

                let mut tx = begin_write(&self.worker).await?;
                let (clocked, mut charge) = subscriptions_sql_charge::lock_charge(&mut tx, charge_id, now).await?;
                if charge.status != ChargeStatus::Pending {
                    return Ok(ChargeRecorded::Replayed);
                }
                let $crate::subscriptions::rows::Clocked { mut subscription, at } = clocked;
                sqlx::query(
                    "UPDATE subscription_charges SET status = 'failed', intent_id = $2, failure_code = $3, \
                     decline_code = $4, failure_message = $5, completed_at = $6 WHERE id = $1",
                )
                .bind(charge_id.as_str())
                .bind(failure.intent_id.as_deref())
                .bind(&failure.code)
                .bind(failure.decline_code.as_deref())
                .bind(&failure.message)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                charge.status = ChargeStatus::Failed;
                charge.intent_id.clone_from(&failure.intent_id);
                charge.failure_code = Some(failure.code.clone());
                charge.decline_code.clone_from(&failure.decline_code);
                charge.failure_message = Some(failure.message.clone());
                charge.completed_at = Some(at);
                let event = TimelineEvent {
                    event: holdfast_domain::SubscriptionEvent::ChargeFailed,
                    from_status: None,
                    period_index: Some(charge.period_index),
                    charge: Some(&charge),
                    cause: &failure.code,
                    at,
                };
                subscriptions_sql::record_event(&mut tx, &mut subscription, &event, now).await?;
                tx.commit().await?;
                Ok(ChargeRecorded::Recorded(Box::new(subscription)))
            }

            async fn schedule_due_charges(
                &self,
                template: &$crate::JobTemplate,
                now: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::DueCharge>> {
                let mut tx = begin_write(&self.worker).await?;
                // The job's dedup key is `payment_job_key`: the subscription,
                // ':' and the period index.
                let rows: Vec<(String, String, i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(concat!(
                    "SELECT p.subscription_id, s.creator_id, p.period_index, p.starts_at ",
                    "FROM subscription_periods p JOIN subscriptions s ON s.id = p.subscription_id ",
                    "LEFT JOIN test_clocks c ON c.id = s.test_clock_id ",
                    "WHERE p.status = 'open' AND s.status IN ",
                    scheduled_statuses!(),
                    " AND p.starts_at <= coalesce(c.frozen_time, $1) ",
                    "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.queue = $3 ",
                    "AND j.dedup_key = p.subscription_id || ':' || CAST(p.period_index AS TEXT)) ",
                    "ORDER BY p.starts_at, p.subscription_id, p.period_index LIMIT $2"
                ))
                .bind(now)
                .bind(limit)
                .bind(&template.queue)
                .fetch_all(&mut *tx)
                .await?;
                // Each job locks its group's head (the creator): in the
                // order completions lock them (byte order, `COLLATE "C"`),
                // so two schedulers and the workers never deadlock.
                let mut rows = rows;
                rows.sort_by(|a, b| (&a.1, &a.0, a.2).cmp(&(&b.1, &b.0, b.2)));
                let mut enqueued = Vec::with_capacity(rows.len());
                for (subscription_id, creator_id, period_index, due_at) in rows {
                    let period_index = u32::try_from(period_index)
                        .map_err(|_| $crate::StoreError::Corrupt(format!("period index {period_index}")))?;
                    let subscription_id = holdfast_domain::SubscriptionId::from_trusted(subscription_id);
                    let payload = serde_json::json!({
                        "subscription_id": subscription_id,
                        "period_index": period_index,
                    });
                    let job = template
                        .job(creator_id.as_str(), payload, now)
                        .dedup_key($crate::payment_job_key(&subscription_id, period_index));
                    let id = queue::enqueue_in_tx(&mut tx, &job).await?;
                    // Another scheduler's job for the period, committed meanwhile.
                    if id != job.id {
                        continue;
                    }
                    enqueued.push($crate::DueCharge {
                        subscription_id,
                        creator_id: holdfast_domain::CreatorId::from_trusted(creator_id),
                        period_index,
                        due_at,
                    });
                }
                tx.commit().await?;
                Ok(enqueued)
            }

            async fn record_failed_attempt(
                &self,
                attempt: &$crate::FailedAttempt,
            ) -> $crate::Result<$crate::AttemptFailed> {
                use $crate::subscriptions::rows::{Clocked, TimelineEvent};
                use $crate::{ChargeStatus, FailOutcome};
                use holdfast_domain::SubscriptionStatus;

                let mut tx = begin_write(&self.worker).await?;
                // The subscription's lock first, then the job's group: the
                // order every subscription write that touches the queue keeps.
                let (clocked, mut charge) =
                    subscriptions_sql_charge::lock_charge(&mut tx, &attempt.charge, attempt.now).await?;
                let Clocked { mut subscription, at } = clocked;
                let failure = &attempt.failure;
                if charge.status == ChargeStatus::Pending {
                    sqlx::query(
                        "UPDATE subscription_charges SET status = 'failed', intent_id = $2, failure_code = $3, \
                         decline_code = $4, failure_message = $5, completed_at = $6 WHERE id = $1",
                    )
                    .bind(charge.id.as_str())
                    .bind(failure.intent_id.as_deref())
                    .bind(&failure.code)
                    .bind(failure.decline_code.as_deref())
                    .bind(&failure.message)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    charge.status = ChargeStatus::Failed;
                    charge.intent_id.clone_from(&failure.intent_id);
                    charge.failure_code = Some(failure.code.clone());
                    charge.decline_code.clone_from(&failure.decline_code);
                    charge.failure_message = Some(failure.message.clone());
                    charge.completed_at = Some(at);
                    let event = TimelineEvent {
                        event: holdfast_domain::SubscriptionEvent::ChargeFailed,
                        from_status: None,
                        period_index: Some(charge.period_index),
                        charge: Some(&charge),
                        cause: &failure.code,
                        at,
                    };
                    subscriptions_sql::record_event(&mut tx, &mut subscription, &event, attempt.now).await?;
                }
                let error = format!("attempt {} declined: {} {}", charge.attempt, failure.code, failure.message);
                let job = queue::fail_in_tx(&mut tx, &attempt.job, &attempt.lease, &error, attempt.retry_at).await?;
                let exhausted = match subscription.status {
                    SubscriptionStatus::Active | SubscriptionStatus::Trialing => {
                        Some((SubscriptionStatus::PastDue, "renewal charge failed and its retries are used up"))
                    }
                    SubscriptionStatus::Incomplete => Some((SubscriptionStatus::Canceled, "first charge never paid")),
                    _ => None,
                };
                if job == FailOutcome::DeadLettered
                    && let Some((to, cause)) = exhausted
                {
                    let clocked = Clocked { subscription, at };
                    subscription = subscriptions_sql::change_status(&mut tx, clocked, to, cause, None, attempt.now).await?;
                }
                tx.commit().await?;
                Ok($crate::AttemptFailed {
                    job,
                    subscription: Box::new(subscription),
                })
            }

            async fn failed_periods(
                &self,
                clock: &holdfast_domain::TestClockId,
            ) -> $crate::Result<Vec<$crate::FailedPeriod>> {
                let rows: Vec<(String, i32, i32, String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(concat!(
                    "SELECT ch.subscription_id, ch.period_index, ch.attempt, ch.status, ch.completed_at ",
                    "FROM subscription_charges ch ",
                    "JOIN subscription_periods p ON p.subscription_id = ch.subscription_id ",
                    "AND p.period_index = ch.period_index ",
                    "JOIN subscriptions s ON s.id = ch.subscription_id ",
                    "WHERE s.test_clock_id = $1 AND p.status = 'open' AND s.status IN ",
                    scheduled_statuses!(),
                    " ORDER BY ch.subscription_id, ch.period_index, ch.attempt"
                ))
                .bind(clock.as_str())
                .fetch_all(&self.worker)
                .await?;
                let mut periods: Vec<$crate::FailedPeriod> = Vec::new();
                let mut pending = std::collections::HashSet::new();
                for (subscription_id, period_index, attempt, status, completed_at) in rows {
                    let period_index = u32::try_from(period_index)
                        .map_err(|_| $crate::StoreError::Corrupt(format!("period index {period_index}")))?;
                    let attempt = u32::try_from(attempt)
                        .map_err(|_| $crate::StoreError::Corrupt(format!("attempt {attempt}")))?;
                    if status != "failed" {
                        pending.insert((subscription_id, period_index));
                        continue;
                    }
                    let failed_at = completed_at.ok_or_else(|| {
                        $crate::StoreError::Corrupt(format!("failed charge of {subscription_id} without a time"))
                    })?;
                    let subscription_id = holdfast_domain::SubscriptionId::from_trusted(subscription_id);
                    match periods.last_mut() {
                        Some(last) if last.subscription_id == subscription_id && last.period_index == period_index => {
                            last.attempts = attempt;
                            last.failed_at = failed_at;
                        }
                        _ => periods.push($crate::FailedPeriod {
                            subscription_id,
                            period_index,
                            attempts: attempt,
                            failed_at,
                        }),
                    }
                }
                periods.retain(|p| !pending.contains(&(p.subscription_id.as_str().to_owned(), p.period_index)));
                Ok(periods)
            }

            async fn unsettled_creators(
                &self,
                limit: i64,
            ) -> $crate::Result<Vec<(holdfast_domain::CreatorId, Vec<Option<holdfast_domain::TestClockId>>)>> {
                let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT DISTINCT l.creator_id, s.test_clock_id FROM ledger_entries l \
                     JOIN subscriptions s ON s.id = l.subscription_id \
                     WHERE l.settlement_id IS NULL AND l.creator_id IN \
                       (SELECT DISTINCT creator_id FROM ledger_entries WHERE settlement_id IS NULL \
                        ORDER BY creator_id LIMIT $1) \
                     ORDER BY l.creator_id",
                )
                .bind(limit)
                .fetch_all(&self.worker)
                .await?;
                let mut creators: Vec<(holdfast_domain::CreatorId, Vec<Option<holdfast_domain::TestClockId>>)> =
                    Vec::new();
                for (creator, clock) in rows {
                    let clock = clock.map(holdfast_domain::TestClockId::from_trusted);
                    match creators.last_mut() {
                        Some((last, clocks)) if last.as_str() == creator => clocks.push(clock),
                        _ => creators.push((holdfast_domain::CreatorId::from_trusted(creator), vec![clock])),
                    }
                }
                Ok(creators)
            }

            async fn ledger_entries(
                &self,
                creator: &holdfast_domain::CreatorId,
            ) -> $crate::Result<Vec<$crate::LedgerEntry>> {
                fetch_all_as!(
                    $crate::subscriptions::rows::LedgerRow,
                    sqlx::query_as(concat!(
                        "SELECT ",
                        ledger_columns!(),
                        " FROM ledger_entries WHERE creator_id = $1 ORDER BY charged_at, charge_id"
                    ))
                    .bind(creator.as_str()),
                    &self.read
                )
            }

            async fn settle_due(
                &self,
                creator: &holdfast_domain::CreatorId,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<$crate::SettlementBatch>> {
                let mut tx = begin_write(&self.worker).await?;
                // The creator's row is the settlement lock: two nodes
                // settling one creator take turns.
                let row: Option<$crate::subscriptions::rows::CreatorRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    creator_columns!(),
                    " FROM creators WHERE id = $1",
                    $for_update
                ))
                .bind(creator.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let creator = $crate::Creator::try_from(
                    row.ok_or_else(|| $crate::StoreError::NotFound(format!("creator {creator}")))?,
                )?;
                let schedule = creator.settlement;
                let cutoff = schedule.settleable_before(now);
                let unsettled: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "SELECT currency, charged_at FROM ledger_entries \
                     WHERE creator_id = $1 AND settlement_id IS NULL AND charged_at < $2",
                )
                .bind(creator.id.as_str())
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await?;
                let windows: std::collections::BTreeSet<_> = unsettled
                    .into_iter()
                    .map(|(currency, at)| {
                        let window = schedule.window_of(at);
                        (window.start, window.end, currency)
                    })
                    .collect();
                let mut batches = Vec::with_capacity(windows.len());
                for (start, end, currency) in windows {
                    let window = holdfast_domain::SettlementWindow { start, end };
                    let batch = subscriptions_sql_settle::settle_window(&mut tx, &creator, window, &currency, now);
                    batches.extend(batch.await?);
                }
                tx.commit().await?;
                Ok(batches)
            }

            async fn settlements(
                &self,
                creator: &holdfast_domain::CreatorId,
            ) -> $crate::Result<Vec<$crate::SettlementBatch>> {
                fetch_all_as!(
                    $crate::subscriptions::rows::SettlementRow,
                    sqlx::query_as(concat!(
                        "SELECT ",
                        settlement_columns!(),
                        " FROM settlement_batches WHERE creator_id = $1 ORDER BY window_start DESC, id DESC"
                    ))
                    .bind(creator.as_str()),
                    &self.read
                )
            }
        }

        /// Reading a charge with its subscription locked.
        mod subscriptions_sql_charge {
            use super::subscriptions_sql::{Conn, lock};
            use $crate::subscriptions::rows::{ChargeRow, Clocked};
            use $crate::{Charge, Result, StoreError};

            /// Locks the charge's subscription, then reads the charge as the
            /// lock leaves it (an outcome recorded by a transaction that
            /// held the lock before is visible).
            pub(super) async fn lock_charge(
                conn: &mut Conn,
                id: &holdfast_domain::ChargeId,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(Clocked, Charge)> {
                let subscription: Option<String> =
                    sqlx::query_scalar("SELECT subscription_id FROM subscription_charges WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&mut *conn)
                        .await?;
                let subscription = subscription.ok_or_else(|| StoreError::NotFound(format!("charge {id}")))?;
                let clocked = lock(conn, &holdfast_domain::SubscriptionId::from_trusted(subscription), now).await?;
                let row: ChargeRow =
                    sqlx::query_as(concat!("SELECT ", charge_columns!(), " FROM subscription_charges WHERE id = $1"))
                        .bind(id.as_str())
                        .fetch_one(&mut *conn)
                        .await?;
                Ok((clocked, row.try_into()?))
            }
        }

        /// Settling one window of one creator in one currency.
        mod subscriptions_sql_settle {
            use super::subscriptions_sql::{Conn, outbox};
            use $crate::subscriptions::rows::{money, settlement_payload};
            use $crate::{Creator, Result, SettlementBatch};

            /// Moves the window's unsettled entries into a new batch and
            /// announces it; `None` if none were left.
            pub(super) async fn settle_window(
                conn: &mut Conn,
                creator: &Creator,
                window: holdfast_domain::SettlementWindow,
                currency: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<SettlementBatch>> {
                let id = holdfast_domain::SettlementId::generate();
                // The batch exists first so the entries can point at it; its
                // sums come from the entries the update actually moved.
                sqlx::query(
                    "INSERT INTO settlement_batches (id, creator_id, currency, window_start, window_end, charges, \
                     gross, fee, net, created_at) VALUES ($1, $2, $3, $4, $5, 0, 0, 0, 0, $6)",
                )
                .bind(id.as_str())
                .bind(creator.id.as_str())
                .bind(currency)
                .bind(window.start)
                .bind(window.end)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                let moved: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "UPDATE ledger_entries SET settlement_id = $1 WHERE creator_id = $2 AND currency = $3 \
                     AND settlement_id IS NULL AND charged_at >= $4 AND charged_at < $5 RETURNING gross, fee, net",
                )
                .bind(id.as_str())
                .bind(creator.id.as_str())
                .bind(currency)
                .bind(window.start)
                .bind(window.end)
                .fetch_all(&mut *conn)
                .await?;
                if moved.is_empty() {
                    sqlx::query("DELETE FROM settlement_batches WHERE id = $1")
                        .bind(id.as_str())
                        .execute(&mut *conn)
                        .await?;
                    return Ok(None);
                }
                let (gross, fee, net) = moved
                    .iter()
                    .fold((0i64, 0i64, 0i64), |(g, f, n), (gross, fee, net)| (g + gross, f + fee, n + net));
                let charges = i32::try_from(moved.len()).unwrap_or(i32::MAX);
                sqlx::query("UPDATE settlement_batches SET charges = $2, gross = $3, fee = $4, net = $5 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(charges)
                    .bind(gross)
                    .bind(fee)
                    .bind(net)
                    .execute(&mut *conn)
                    .await?;
                let batch = SettlementBatch {
                    id,
                    creator_id: creator.id.clone(),
                    window,
                    charges: u32::try_from(charges).unwrap_or(0),
                    totals: holdfast_domain::FeeSplit {
                        gross: money(gross, currency)?,
                        fee: money(fee, currency)?,
                        net: money(net, currency)?,
                    },
                    created_at: now,
                };
                let event_id = holdfast_domain::EventId::generate();
                outbox(
                    conn,
                    &event_id,
                    creator.id.as_str(),
                    "settlement.created",
                    settlement_payload(&batch),
                    now,
                )
                .await?;
                Ok(Some(batch))
            }
        }
    };
}
