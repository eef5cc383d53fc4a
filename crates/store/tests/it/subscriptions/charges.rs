//! Charges: one success per period, under races and in the database itself.

use super::*;

both_backends!(racing_workers_charge_a_period_once, |backend| async move {
    let db = open(backend).await;
    let store = db.store.clone();
    let subs = store.subscriptions();
    let creator = creator(subs, 0).await;
    let plan = plan(subs, &creator, 2_000, ("month", 1), 0).await;
    let sub = subscribe(subs, &plan.id, None, t0()).await;
    let now = t0();
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let store: SharedStore = Arc::clone(&store);
            let id = sub.id.clone();
            tokio::spawn(async move {
                let subs = store.subscriptions();
                match subs.begin_charge(&id, 0, now).await.expect("begin") {
                    ChargeStart::Charge { charge, .. } => {
                        let outcome = subs
                            .record_charge_succeeded(&charge.id, &format!("pi_racer_{n}"), now)
                            .await
                            .expect("record");
                        Some((charge.id, outcome))
                    }
                    // Came after the winner: the period is paid.
                    ChargeStart::Settled(PeriodStatus::Paid) => None,
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.extend(racer.await.expect("racer"));
    }
    let winners = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, ChargeRecorded::Recorded(_)))
        .count();
    assert_eq!(winners, 1, "exactly one records the charge: {outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|(id, o)| *id == outcomes[0].0 && matches!(o, ChargeRecorded::Recorded(_) | ChargeRecorded::Replayed)),
        "every racer made the same attempt: {outcomes:?}"
    );
    assert_one_charge(subs, &sub.id, &creator).await;
    db.drop_database().await;
});

// Several attempts of one period all come back paid (late provider events
// for attempts that had been declined): the unique index lets one count and
// the rest are marked for refund.
both_backends!(only_one_attempt_of_a_period_can_succeed, |backend| async move {
    let db = open(backend).await;
    let store = db.store.clone();
    let subs = store.subscriptions();
    let creator = creator(subs, 0).await;
    let plan = plan(subs, &creator, 2_000, ("month", 1), 0).await;
    let sub = subscribe(subs, &plan.id, None, t0()).await;
    let mut attempts: Vec<ChargeId> = Vec::new();
    for _ in 0..8 {
        let (charge, _) = attempt(subs, &sub.id, 0, t0()).await;
        subs.record_charge_failed(&charge.id, &declined(), t0())
            .await
            .expect("failed");
        attempts.push(charge.id);
    }
    let racers: Vec<_> = attempts
        .iter()
        .map(|id| {
            let store: SharedStore = Arc::clone(&store);
            let id = id.clone();
            tokio::spawn(async move {
                store
                    .subscriptions()
                    .record_charge_succeeded(&id, &format!("pi_late_{id}"), t0())
                    .await
                    .expect("record")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.expect("racer"));
    }
    let recorded = outcomes
        .iter()
        .filter(|o| matches!(o, ChargeRecorded::Recorded(_)))
        .count();
    let duplicates = outcomes.iter().filter(|o| **o == ChargeRecorded::Duplicate).count();
    assert_eq!((recorded, duplicates), (1, 7), "{outcomes:?}");
    let charges = subs.charges(&sub.id).await.expect("charges");
    assert_eq!(
        charges.iter().filter(|c| c.status == ChargeStatus::Duplicate).count(),
        7
    );
    assert_one_charge(subs, &sub.id, &creator).await;
    db.drop_database().await;
});

async fn assert_one_charge(subs: &dyn Subscriptions, id: &SubscriptionId, creator: &CreatorId) {
    let charges = subs.charges(id).await.expect("charges");
    assert_eq!(
        charges.iter().filter(|c| c.status == ChargeStatus::Succeeded).count(),
        1
    );
    assert_eq!(subs.ledger_entries(creator).await.expect("ledger").len(), 1);
    let timeline = subs.subscription_events(id).await.expect("events");
    let paid = timeline
        .iter()
        .filter(|r| r.event == SubscriptionEvent::ChargeSucceeded)
        .count();
    assert_eq!(paid, 1, "one charge.succeeded event");
    let sequences: Vec<_> = timeline.iter().map(|r| r.sequence).collect();
    assert_eq!(
        sequences,
        (1..=u32::try_from(timeline.len()).unwrap()).collect::<Vec<_>>(),
        "no gaps"
    );
    assert_eq!(
        statuses(&subs.periods(id).await.expect("periods")),
        [(0, PeriodStatus::Paid), (1, PeriodStatus::Open)]
    );
}

// The database itself refuses a second succeeded charge for a period,
// whatever code writes it.
both_backends!(the_database_refuses_a_second_succeeded_charge, |backend| async move {
    let db = open(backend).await;
    let subs = db.store.subscriptions();
    let creator = creator(subs, 0).await;
    let plan = plan(subs, &creator, 700, ("year", 1), 0).await;
    let sub = subscribe(subs, &plan.id, None, t0()).await;
    pay(subs, &sub.id, 0, t0()).await;
    let insert = format!(
        "INSERT INTO subscription_charges (id, subscription_id, period_index, attempt, amount, currency, \
         payment_method, idempotency_key, status, attempted_at) \
         VALUES ('ch_forged', '{}', 0, 2, 700, 'USD', 'pm_card_visa', 'forged', 'succeeded', '2024-01-01T00:00:00Z')",
        sub.id
    );
    let refused = raw_execute(&db, backend, &insert).await;
    let message = refused.expect_err("a second succeeded charge for period 0").to_string();
    assert!(message.to_lowercase().contains("unique"), "{message}");
    db.drop_database().await;
});

async fn raw_execute(db: &TestStore, backend: Backend, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&db.database_url).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut connection)
                .await
                .map(drop)
        }
        Backend::Postgres | Backend::PgBouncer => {
            let mut connection = sqlx::PgConnection::connect(&db.database_url).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut connection)
                .await
                .map(drop)
        }
    }
}

both_backends!(
    due_windows_settle_into_one_batch_per_window_and_currency,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        let subs = store.subscriptions();
        let creator = creator(subs, 1_000).await;
        let plan = plan(subs, &creator, 1_999, ("day", 1), 0).await;
        let clock = clock(subs, "2024-02-28T10:00:00Z").await;
        let first = subscribe(subs, &plan.id, Some(&clock), t0()).await;
        let second = subscribe(subs, &plan.id, Some(&clock), t0()).await;
        pay(subs, &first.id, 0, t0()).await;
        pay(subs, &second.id, 0, t0()).await;
        subs.advance_test_clock(&clock, at("2024-02-29T10:00:00Z"), t0())
            .await
            .expect("advance");
        pay(subs, &first.id, 1, t0()).await;

        // Daily with a 2-day delay: Feb 28's window closes at Feb 29 00:00 and
        // settles on Mar 2; Feb 29's on Mar 3.
        assert!(
            subs.settle_due(&creator, at("2024-03-01T23:59:00Z"))
                .await
                .expect("settle")
                .is_empty()
        );
        let batches = subs
            .settle_due(&creator, at("2024-03-02T00:00:00Z"))
            .await
            .expect("settle");
        assert_eq!(batches.len(), 1);
        let feb28 = &batches[0];
        assert_eq!(
            (feb28.window.start, feb28.window.end),
            (at("2024-02-28T00:00:00Z"), at("2024-02-29T00:00:00Z"))
        );
        assert_eq!(feb28.charges, 2);
        // 10 % of 19.99 is 2.00 (1.999 rounded); the creator nets 17.99 twice.
        assert_eq!(
            (feb28.totals.gross, feb28.totals.fee, feb28.totals.net),
            (usd(3_998), usd(400), usd(3_598))
        );
        assert!(
            subs.settle_due(&creator, at("2024-03-02T12:00:00Z"))
                .await
                .expect("again")
                .is_empty()
        );
        let later = subs
            .settle_due(&creator, at("2024-03-09T00:00:00Z"))
            .await
            .expect("settle");
        assert_eq!(later.iter().map(|b| b.charges).collect::<Vec<_>>(), [1]);
        let listed = subs.settlements(&creator).await.expect("list");
        assert_eq!(
            listed.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
            [later[0].id.clone(), feb28.id.clone()]
        );
        let ledger = subs.ledger_entries(&creator).await.expect("ledger");
        assert!(ledger.iter().all(|e| e.settlement_id.is_some()));
        assert_eq!(
            ledger
                .iter()
                .filter(|e| e.settlement_id.as_ref() == Some(&feb28.id))
                .count(),
            2
        );
        let timelines = subs.subscription_events(&first.id).await.expect("events").len()
            + subs.subscription_events(&second.id).await.expect("events").len();
        let announced = store.outbox().lag(t0()).await.expect("lag").unpublished;
        assert_eq!(
            announced,
            i64::try_from(timelines + 2).unwrap(),
            "two settlement.created and the timelines"
        );
        db.drop_database().await;
    }
);

both_backends!(
    subscriptions_are_listed_by_creator_and_status_a_page_at_a_time,
    |backend| async move {
        let db = open(backend).await;
        let subs = db.store.subscriptions();
        let ada = creator(subs, 0).await;
        let bob = creator(subs, 0).await;
        let ada_plan = plan(subs, &ada, 100, ("month", 1), 0).await;
        let bob_plan = plan(subs, &bob, 100, ("month", 1), 7).await;
        let mut ada_subs = Vec::new();
        for _ in 0..5 {
            ada_subs.push(subscribe(subs, &ada_plan.id, None, t0()).await.id);
        }
        let bobs = subscribe(subs, &bob_plan.id, None, t0()).await;
        pay(subs, &ada_subs[1], 0, t0()).await;

        let list = |creator: Option<&CreatorId>, status, after: Option<&SubscriptionId>, limit| SubscriptionFilter {
            creator_id: creator.cloned(),
            status,
            after: after.cloned(),
            limit,
        };
        let ids = |subs: Vec<Subscription>| subs.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let first = ids(subs
            .list_subscriptions(&list(Some(&ada), None, None, 3))
            .await
            .expect("page"));
        assert_eq!(first, ada_subs[..3]);
        let second = ids(subs
            .list_subscriptions(&list(Some(&ada), None, first.last(), 3))
            .await
            .expect("page"));
        assert_eq!(second, ada_subs[3..]);
        let active = ids(subs
            .list_subscriptions(&list(None, Some(SubscriptionStatus::Active), None, 10))
            .await
            .expect("active"));
        assert_eq!(active, ada_subs[1..2]);
        let trialing = ids(subs
            .list_subscriptions(&list(None, Some(SubscriptionStatus::Trialing), None, 10))
            .await
            .expect("trialing"));
        assert_eq!(trialing, [bobs.id]);
        let everyone = subs
            .list_subscriptions(&list(None, None, None, 100))
            .await
            .expect("all");
        assert_eq!(everyone.len(), 6);
        db.drop_database().await;
    }
);
