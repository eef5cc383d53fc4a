//! Creators, plans, periods, trials, catch-up and status changes.

use super::*;

both_backends!(
    a_price_change_is_a_new_version_and_existing_subscribers_keep_theirs,
    |backend| async move {
        let db = open(backend).await;
        let subs = db.store.subscriptions();
        let creator = creator(subs, 1_000).await;
        let plan = plan(subs, &creator, 500, ("month", 1), 0).await;
        assert_eq!((plan.price_version, plan.price), (1, usd(500)));
        let early = subscribe(subs, &plan.id, None, t0()).await;

        let changed = subs.change_price(&plan.id, usd(700), t0()).await.expect("change price");
        assert_eq!((changed.price_version, changed.price), (2, usd(700)));
        assert_eq!(subs.plan(&plan.id).await.expect("read").expect("plan"), changed);
        let late = subscribe(subs, &plan.id, None, t0()).await;
        assert_eq!((late.price_version, late.price), (2, usd(700)));
        let early = subs.subscription(&early.id).await.expect("read").expect("subscription");
        assert_eq!(
            (early.price_version, early.price),
            (1, usd(500)),
            "the early subscriber keeps its price"
        );
        let versions: Vec<_> = subs
            .plan_prices(&plan.id)
            .await
            .expect("prices")
            .into_iter()
            .map(|p| (p.version, p.price))
            .collect();
        assert_eq!(versions, [(1, usd(500)), (2, usd(700))]);
        let charge = attempt(subs, &early.id, 0, t0()).await.0;
        assert_eq!(
            charge.amount,
            usd(500),
            "a period owes the price of its subscription's version"
        );

        let unknown = NewPlan {
            creator_id: CreatorId::generate(),
            ..plan_input(&creator)
        };
        assert!(matches!(subs.create_plan(&unknown).await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            subs.change_price(&PlanId::generate(), usd(1), t0()).await,
            Err(StoreError::NotFound(_))
        ));
        let duplicate = subs.creator(&creator).await.expect("read").expect("creator");
        let again = NewCreator {
            id: duplicate.id.clone(),
            name: duplicate.name.clone(),
            fee_bps: duplicate.fee_bps,
            settlement: duplicate.settlement,
            created_at: duplicate.created_at,
        };
        assert!(matches!(
            subs.create_creator(&again).await,
            Err(StoreError::Conflict(_))
        ));
        db.drop_database().await;
    }
);

both_backends!(
    a_paid_first_period_activates_and_each_renewal_opens_the_next,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        let subs = store.subscriptions();
        let creator = creator(subs, 1_250).await;
        let plan = plan(subs, &creator, 999, ("month", 1), 0).await;
        let start = t0();
        let sub = subscribe(subs, &plan.id, None, start).await;
        assert_eq!(sub.status, SubscriptionStatus::Incomplete);
        assert_eq!((sub.current_period.index, sub.current_period.start), (0, start));
        assert_eq!(sub.sequence, 1);
        let due = subs.due_charges(start, 100).await.expect("due");
        assert_eq!(due.len(), 1, "the first period is due at once");
        assert_eq!(
            (&due[0].subscription_id, &due[0].creator_id, due[0].period_index),
            (&sub.id, &creator, 0)
        );

        let (charge, resumed) = attempt(subs, &sub.id, 0, start).await;
        assert!(!resumed);
        assert_eq!(
            (charge.attempt, charge.status, charge.amount),
            (1, ChargeStatus::Pending, usd(999))
        );
        assert_eq!(charge.idempotency_key, format!("{}-period-0-attempt-1", sub.id));
        let active = match subs
            .record_charge_succeeded(&charge.id, "pi_first", start)
            .await
            .expect("record")
        {
            ChargeRecorded::Recorded(sub) => *sub,
            other => panic!("{other:?}"),
        };
        assert_eq!(active.status, SubscriptionStatus::Active);
        assert_eq!(
            subs.record_charge_succeeded(&charge.id, "pi_first", start)
                .await
                .expect("replay"),
            ChargeRecorded::Replayed,
            "a replayed provider event changes nothing"
        );
        assert!(
            subs.due_charges(start, 100).await.expect("due").is_empty(),
            "period 1 is not due yet"
        );
        let renewal_at = sub.current_period.end;
        let due = subs.due_charges(renewal_at, 100).await.expect("due");
        assert_eq!(due.iter().map(|d| d.period_index).collect::<Vec<_>>(), [1]);
        assert_eq!(due[0].due_at, renewal_at);
        let renewed = pay(subs, &sub.id, 1, renewal_at).await;
        assert_eq!(renewed.current_period.index, 1);
        assert_eq!(renewed.current_period.start, renewal_at);
        assert_eq!(renewed.status, SubscriptionStatus::Active);

        let timeline = subs.subscription_events(&sub.id).await.expect("events");
        assert_eq!(
            events(&timeline),
            [
                (1, "subscription.created"),
                (2, "charge.succeeded"),
                (3, "subscription.activated"),
                (4, "charge.succeeded"),
                (5, "subscription.renewed"),
            ]
        );
        assert_eq!(timeline[2].from_status, Some(SubscriptionStatus::Incomplete));
        assert_eq!(timeline[1].charge_id, Some(charge.id.clone()));
        for record in &timeline {
            let event = store
                .outbox()
                .event(&record.event_id)
                .await
                .expect("outbox")
                .expect("event");
            assert_eq!(event.event_type, record.event.as_str());
            assert_eq!(event.aggregate_id, sub.id.as_str());
            assert_eq!(
                event.payload["sequence"], record.sequence,
                "each event carries its sequence"
            );
            assert_eq!(event.payload["subscription"]["id"], sub.id.as_str());
        }
        let first_paid = store
            .outbox()
            .event(&timeline[1].event_id)
            .await
            .expect("outbox")
            .expect("event");
        assert_eq!(first_paid.payload["charge"]["intent_id"], "pi_first");

        let charges = subs.charges(&sub.id).await.expect("charges");
        assert_eq!(
            charges
                .iter()
                .map(|c| (c.period_index, c.attempt, c.status))
                .collect::<Vec<_>>(),
            [(0, 1, ChargeStatus::Succeeded), (1, 1, ChargeStatus::Succeeded)]
        );
        assert_eq!(charges[0].intent_id.as_deref(), Some("pi_first"));
        let periods = subs.periods(&sub.id).await.expect("periods");
        assert_eq!(
            statuses(&periods),
            [
                (0, PeriodStatus::Paid),
                (1, PeriodStatus::Paid),
                (2, PeriodStatus::Open)
            ]
        );
        let ledger = subs.ledger_entries(&creator).await.expect("ledger");
        assert_eq!(ledger.len(), 2);
        // 12.5 % of 9.99 is 1.24875: the fee is 1.25 and the creator nets 8.74.
        assert_eq!((ledger[0].split.fee, ledger[0].split.net), (usd(125), usd(874)));
        assert_eq!(ledger[0].charge_id, charge.id);
        db.drop_database().await;
    }
);

both_backends!(a_trial_is_free_and_its_end_is_the_anchor, |backend| async move {
    let db = open(backend).await;
    let subs = db.store.subscriptions();
    let creator = creator(subs, 0).await;
    let plan = plan(subs, &creator, 300, ("month", 1), 14).await;
    let clock = clock(subs, "2024-01-17T09:00:00Z").await;
    let sub = subscribe(subs, &plan.id, Some(&clock), t0()).await;
    assert_eq!(sub.status, SubscriptionStatus::Trialing);
    assert_eq!(
        sub.started_at,
        at("2024-01-17T09:00:00Z"),
        "a clocked subscription starts at the clock's time"
    );
    assert_eq!(sub.anchor, at("2024-01-31T09:00:00Z"));
    assert!(sub.current_period.trial);
    let periods = subs.periods(&sub.id).await.expect("periods");
    assert_eq!(statuses(&periods), [(0, PeriodStatus::Paid), (1, PeriodStatus::Open)]);
    assert_eq!(periods[0].amount, usd(0));
    assert_eq!(
        (periods[1].start, periods[1].end),
        (at("2024-01-31T09:00:00Z"), at("2024-02-29T09:00:00Z"))
    );
    assert!(
        subs.due_charges(t0(), 100).await.expect("due").is_empty(),
        "not due on the clock's time"
    );
    assert!(
        matches!(subs.begin_charge(&sub.id, 1, t0()).await.expect("begin"), ChargeStart::NotDue(t) if t == sub.anchor)
    );

    subs.advance_test_clock(&clock, at("2024-01-31T09:00:00Z"), t0())
        .await
        .expect("advance");
    let due = subs.due_charges(t0(), 100).await.expect("due");
    assert_eq!(due.iter().map(|d| d.period_index).collect::<Vec<_>>(), [1]);
    let active = pay(subs, &sub.id, 1, t0()).await;
    assert_eq!(active.status, SubscriptionStatus::Active);
    let timeline = subs.subscription_events(&sub.id).await.expect("events");
    assert_eq!(
        events(&timeline),
        [
            (1, "subscription.created"),
            (2, "charge.succeeded"),
            (3, "subscription.activated")
        ]
    );
    assert_eq!(timeline[2].from_status, Some(SubscriptionStatus::Trialing));
    assert_eq!(
        timeline[2].at,
        at("2024-01-31T09:00:00Z"),
        "events are on the subscription's clock"
    );
    db.drop_database().await;
});

both_backends!(renewals_missed_while_nothing_ran_are_caught_up, |backend| async move {
    let db = open(backend).await;
    let subs = db.store.subscriptions();
    let creator = creator(subs, 500).await;
    let plan = plan(subs, &creator, 1_000, ("month", 1), 0).await;
    let clock = clock(subs, "2024-01-31T12:00:00Z").await;
    let sub = subscribe(subs, &plan.id, Some(&clock), t0()).await;
    let unclocked = subscribe(subs, &plan.id, None, t0()).await;
    pay(subs, &sub.id, 0, t0()).await;
    pay(subs, &unclocked.id, 0, t0()).await;

    // Four months pass with no scheduler running.
    let later = subs
        .advance_test_clock(&clock, at("2024-05-31T12:00:00Z"), t0())
        .await
        .expect("advance");
    assert_eq!(later.due_periods, 1, "the next unpaid period");
    let mut charged = Vec::new();
    loop {
        let due = subs.due_charges(t0(), 100).await.expect("due");
        assert!(
            due.iter().all(|d| d.subscription_id == sub.id),
            "the unclocked one is not due"
        );
        let Some(next) = due.first() else { break };
        pay(subs, &sub.id, next.period_index, t0()).await;
        charged.push(next.period_index);
    }
    assert_eq!(charged, [1, 2, 3, 4]);
    let periods = subs.periods(&sub.id).await.expect("periods");
    let starts: Vec<_> = periods.iter().map(|p| p.start.format("%Y-%m-%d").to_string()).collect();
    assert_eq!(
        starts,
        [
            "2024-01-31",
            "2024-02-29",
            "2024-03-31",
            "2024-04-30",
            "2024-05-31",
            "2024-06-30"
        ],
        "the month-end anchor clamps and returns"
    );
    assert_eq!(periods[5].status, PeriodStatus::Open);
    let current = subs.subscription(&sub.id).await.expect("read").expect("subscription");
    assert_eq!(current.current_period.index, 4);
    assert_eq!(
        subs.test_clock(&clock)
            .await
            .expect("clock")
            .expect("known")
            .due_periods,
        0
    );

    let back = subs.advance_test_clock(&clock, at("2024-05-01T00:00:00Z"), t0()).await;
    assert!(
        matches!(back, Err(StoreError::Conflict(_))),
        "a clock never goes back: {back:?}"
    );
    assert!(matches!(
        subs.advance_test_clock(&TestClockId::generate(), at("2024-05-01T00:00:00Z"), t0())
            .await,
        Err(StoreError::NotFound(_))
    ));
    db.drop_database().await;
});

both_backends!(
    a_crashed_attempt_is_resumed_with_the_same_key_and_a_decline_makes_a_new_one,
    |backend| async move {
        let db = open(backend).await;
        let subs = db.store.subscriptions();
        let creator = creator(subs, 0).await;
        let plan = plan(subs, &creator, 400, ("week", 1), 0).await;
        let sub = subscribe(subs, &plan.id, None, t0()).await;

        let (first, resumed) = attempt(subs, &sub.id, 0, t0()).await;
        assert!(!resumed);
        // The worker died before it learnt the outcome; the job comes back.
        let (again, resumed) = attempt(subs, &sub.id, 0, t0()).await;
        assert!(resumed);
        assert_eq!(
            (again.id.clone(), again.idempotency_key.clone()),
            (first.id.clone(), first.idempotency_key.clone())
        );

        let recorded = subs
            .record_charge_failed(&first.id, &declined(), t0())
            .await
            .expect("failed");
        assert!(matches!(recorded, ChargeRecorded::Recorded(ref s) if s.status == SubscriptionStatus::Incomplete));
        assert_eq!(
            subs.record_charge_failed(&first.id, &declined(), t0())
                .await
                .expect("replay"),
            ChargeRecorded::Replayed
        );
        let updated = subs
            .update_payment_method(&sub.id, "pm_card_mastercard", t0())
            .await
            .expect("payment method");
        assert_eq!(updated.payment_method, "pm_card_mastercard");
        let (second, resumed) = attempt(subs, &sub.id, 0, t0()).await;
        assert!(!resumed);
        assert_eq!(second.attempt, 2);
        assert_ne!(
            second.idempotency_key, first.idempotency_key,
            "a new attempt is a new intent"
        );
        assert_eq!(second.payment_method, "pm_card_mastercard");
        pay(subs, &sub.id, 0, t0()).await;

        let charges = subs.charges(&sub.id).await.expect("charges");
        assert_eq!(
            charges.iter().map(|c| (c.attempt, c.status)).collect::<Vec<_>>(),
            [(1, ChargeStatus::Failed), (2, ChargeStatus::Succeeded)]
        );
        assert_eq!(charges[0].decline_code.as_deref(), Some("insufficient_funds"));
        let timeline = subs.subscription_events(&sub.id).await.expect("events");
        assert_eq!(
            events(&timeline),
            [
                (1, "subscription.created"),
                (2, "charge.failed"),
                (3, "charge.succeeded"),
                (4, "subscription.activated"),
            ]
        );
        assert!(matches!(
            subs.begin_charge(&sub.id, 0, t0()).await.expect("begin"),
            ChargeStart::Settled(PeriodStatus::Paid)
        ));
        db.drop_database().await;
    }
);

both_backends!(
    nothing_is_charged_after_a_cancel_or_while_paused,
    |backend| async move {
        let db = open(backend).await;
        let subs = db.store.subscriptions();
        let creator = creator(subs, 0).await;
        let plan = plan(subs, &creator, 250, ("day", 1), 0).await;
        let clock = clock(subs, "2024-03-01T00:00:00Z").await;
        let on_clock = |day: &str| {
            let clock = clock.clone();
            let frozen = at(&format!("2024-03-{day}T00:00:00Z"));
            async move { subs.advance_test_clock(&clock, frozen, t0()).await.expect("advance") }
        };

        // A retry is pending when the customer cancels.
        let canceled = subscribe(subs, &plan.id, Some(&clock), t0()).await;
        let (pending, _) = attempt(subs, &canceled.id, 0, t0()).await;
        subs.record_charge_failed(&pending.id, &declined(), t0())
            .await
            .expect("failed");
        let gone = subs
            .transition_subscription(&change(&canceled.id, SubscriptionStatus::Canceled, t0()))
            .await
            .expect("cancel");
        assert_eq!(gone.status, SubscriptionStatus::Canceled);
        assert_eq!(gone.canceled_at, Some(at("2024-03-01T00:00:00Z")));
        assert_eq!(
            subs.begin_charge(&canceled.id, 0, t0()).await.expect("begin"),
            ChargeStart::Refused(SubscriptionStatus::Canceled)
        );
        assert_eq!(
            statuses(&subs.periods(&canceled.id).await.expect("periods")),
            [(0, PeriodStatus::Void)]
        );
        assert!(matches!(
            subs.transition_subscription(&change(&canceled.id, SubscriptionStatus::Paused, t0()))
                .await,
            Err(StoreError::InvalidSubscriptionTransition(_))
        ));
        assert!(matches!(
            subs.update_payment_method(&canceled.id, "pm_card_visa", t0()).await,
            Err(StoreError::Conflict(_))
        ));

        // Paused on day 2, resumed on day 5: days 3 and 4 are not charged.
        let paused = subscribe(subs, &plan.id, Some(&clock), t0()).await;
        pay(subs, &paused.id, 0, t0()).await;
        on_clock("02").await;
        pay(subs, &paused.id, 1, t0()).await;
        let mut pause = change(&paused.id, SubscriptionStatus::Paused, t0());
        pause.resumes_at = Some(at("2024-03-05T00:00:00Z"));
        let held = subs.transition_subscription(&pause).await.expect("pause");
        assert_eq!(held.resumes_at, Some(at("2024-03-05T00:00:00Z")));
        on_clock("04").await;
        assert!(
            subs.due_charges(t0(), 100).await.expect("due").is_empty(),
            "nothing is due while paused"
        );
        assert_eq!(
            subs.begin_charge(&paused.id, 2, t0()).await.expect("begin"),
            ChargeStart::Refused(SubscriptionStatus::Paused)
        );
        on_clock("05").await;
        assert!(matches!(
            subs.transition_subscription(&change(&paused.id, SubscriptionStatus::PastDue, t0()))
                .await,
            Err(StoreError::InvalidSubscriptionTransition(_))
        ));
        let resumed = subs
            .transition_subscription(&change(&paused.id, SubscriptionStatus::Active, t0()))
            .await
            .expect("resume");
        assert_eq!(
            (resumed.status, resumed.current_period.index),
            (SubscriptionStatus::Active, 4)
        );
        assert_eq!(resumed.paused_at, None);
        assert_eq!(
            statuses(&subs.periods(&paused.id).await.expect("periods")),
            [
                (0, PeriodStatus::Paid),
                (1, PeriodStatus::Paid),
                (2, PeriodStatus::Void),
                (4, PeriodStatus::Void),
                (5, PeriodStatus::Open),
            ],
            "the period voided by the pause and the one it was resumed in are free"
        );
        on_clock("06").await;
        let due = subs.due_charges(t0(), 100).await.expect("due");
        assert_eq!(due.iter().map(|d| d.period_index).collect::<Vec<_>>(), [5]);
        let timeline = subs.subscription_events(&paused.id).await.expect("events");
        let kinds: Vec<_> = timeline.iter().map(|r| r.event).collect();
        assert_eq!(
            &kinds[kinds.len() - 2..],
            [SubscriptionEvent::Paused, SubscriptionEvent::Resumed]
        );

        // Cancel at the end of the period: the next one is not charged.
        let leaving = subscribe(subs, &plan.id, Some(&clock), t0()).await;
        pay(subs, &leaving.id, 0, t0()).await;
        let marked = subs
            .set_cancel_at_period_end(&leaving.id, true, t0())
            .await
            .expect("mark");
        assert!(marked.cancel_at_period_end);
        on_clock("07").await;
        assert!(
            subs.due_charges(t0(), 100)
                .await
                .expect("due")
                .iter()
                .any(|d| d.subscription_id == leaving.id)
        );
        assert_eq!(
            subs.begin_charge(&leaving.id, 1, t0()).await.expect("begin"),
            ChargeStart::Refused(SubscriptionStatus::Canceled)
        );
        let left = subs
            .subscription(&leaving.id)
            .await
            .expect("read")
            .expect("subscription");
        assert_eq!(
            (left.status, left.cancel_at_period_end),
            (SubscriptionStatus::Canceled, false)
        );
        assert!(
            subs.charges(&leaving.id).await.expect("charges").len() == 1,
            "no attempt for period 1"
        );
        let last = subs
            .subscription_events(&leaving.id)
            .await
            .expect("events")
            .pop()
            .expect("event");
        assert_eq!(
            (last.event, last.cause.as_str()),
            (SubscriptionEvent::Canceled, "canceled at the end of its period")
        );
        db.drop_database().await;
    }
);

both_backends!(
    dunning_moves_to_past_due_and_a_late_payment_activates_again,
    |backend| async move {
        let db = open(backend).await;
        let subs = db.store.subscriptions();
        let creator = creator(subs, 0).await;
        let plan = plan(subs, &creator, 100, ("month", 1), 0).await;
        let sub = subscribe(subs, &plan.id, None, t0()).await;
        pay(subs, &sub.id, 0, t0()).await;
        let renewal = sub.current_period.end;
        let (charge, _) = attempt(subs, &sub.id, 1, renewal).await;
        subs.record_charge_failed(&charge.id, &declined(), renewal)
            .await
            .expect("failed");
        let overdue = subs
            .transition_subscription(&change(&sub.id, SubscriptionStatus::PastDue, renewal))
            .await
            .expect("past due");
        assert_eq!(overdue.past_due_since, Some(renewal));
        assert!(
            subs.due_charges(renewal, 100).await.expect("due").is_empty(),
            "in dunning, not rescheduled"
        );
        let recovered = pay(subs, &sub.id, 1, renewal).await;
        assert_eq!(
            (recovered.status, recovered.past_due_since),
            (SubscriptionStatus::Active, None)
        );
        let last = subs
            .subscription_events(&sub.id)
            .await
            .expect("events")
            .pop()
            .expect("event");
        assert_eq!(
            (last.event, last.from_status),
            (SubscriptionEvent::Activated, Some(SubscriptionStatus::PastDue))
        );
        db.drop_database().await;
    }
);

// Many workers charge the same period at once (two scheduler nodes, a job
// whose lease ran out, a webhook): one attempt, one succeeded charge, one
// ledger entry, one renewal.
